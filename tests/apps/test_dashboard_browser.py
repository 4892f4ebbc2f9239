"""The dashboard end to end in a real browser: `workbench app` on a free local port, Debian's
Chromium driven by Playwright (never a downloaded browser), an audit of the toy world run from
the Audit page, its verdict card read, and a screenshot of every page kept as a test artefact
under `runs/test-artifacts/dashboard/`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.cli.dashboard import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "runs" / "test-artifacts" / "dashboard"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGES = [("Model & facts", "model_facts"), ("Unlearn", "unlearn"), ("Audit", "audit"),
         ("Internals", "internals"), ("SAE features", "sae"), ("Runs", "runs")]


@pytest.fixture
def app_url(toyworld, tmp_path) -> Iterator[str]:
    """`workbench app` on a free port with a fresh runs folder; stopped afterwards."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = tmp_path / "app.log"  # a file, not a pipe: a full pipe would stall the server
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "apps.cli", "app", "--port", str(port),
                                 "--runs", str(tmp_path / "runs")], cwd=ROOT, env=env,
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this fixture started, by its id
            proc.wait()
        out = log.read_text(errors="replace")
        assert "Traceback" not in out, out[-3000:]


def idle(page, timeout: float = 120_000) -> None:
    """Wait until Streamlit has finished the script run a click started."""
    page.wait_for_timeout(400)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                           timeout=timeout)


def shoot(page, path: Path) -> None:
    """A screenshot of the whole page (Streamlit scrolls its main block, not the document: the
    viewport is stretched to its height first)."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')"
                           ".scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(max(int(height), 1000), 12_000)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_audit_from_the_browser_and_a_screenshot_of_every_page(app_url):
    assert Path(CHROMIUM).exists(), ("the browser test needs Debian's chromium: `make setup` "
                                     "installs it as root, else `apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(app_url)
            page.get_by_role("heading", name="Model & facts").wait_for(timeout=60_000)
            sidebar = page.get_by_test_id("stSidebar")
            sidebar.get_by_text("toy world", exact=True).click()
            idle(page)
            # a loaded machine may start the rerun after `idle` looked: wait for it (a timeout
            # fails the test)
            sidebar.get_by_text("World seed").wait_for(state="visible", timeout=60_000)

            sidebar.get_by_role("link", name="Audit").click()
            page.get_by_role("heading", name="Audit").wait_for()
            idle(page)
            edited = page.get_by_test_id("stRadio").filter(has_text="Edited (M1)")
            edited.get_by_text("world oracle", exact=True).click()
            idle(page)
            page.get_by_role("button", name="Run the audit").click()
            card = page.locator("#verdict")
            card.wait_for(timeout=300_000)
            idle(page)
            print(f"[browser] verdict card after {time.perf_counter() - t0:.1f} s", flush=True)
            assert "REMOVED" in card.inner_text()
            assert "removal score" in card.inner_text()
            # one expander per finding of the quick tier (the page may still be drawing them)
            page.wait_for_function("() => document.querySelectorAll("
                                   "'[data-testid=\"stExpander\"]').length >= 6")
            page.get_by_text("activation_patching: removal-consistent").click()  # open it ...
            page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=60_000)  # ... its figure
            idle(page)
            for title, name in PAGES:
                sidebar.get_by_role("link", name=title).click()
                page.get_by_role("heading", name=title).wait_for()
                idle(page)
                assert page.get_by_test_id("stException").count() == 0, title
                if title == "Audit":  # back on the page: the form as it was left, the card
                    checked = edited.locator("label:has(input:checked)").inner_text()
                    assert checked == "world oracle" and "REMOVED" in card.inner_text()
                shoot(page, ARTEFACTS / f"{name}.png")
                print(f"[browser] {title} after {time.perf_counter() - t0:.1f} s", flush=True)
            # the last page, Runs, lists the one audit the browser ran
            page.get_by_text("1 of 1 runs").wait_for(state="visible", timeout=60_000)
        finally:
            browser.close()
    assert all((ARTEFACTS / f"{n}.png").stat().st_size > 10_000 for _, n in PAGES)
