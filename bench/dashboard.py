"""The dashboard's timings in a real browser, in one run: `workbench app` launch to its health
check, launch to the first page drawn, a quick toy-world audit started from the Audit page
against the same audit by `workbench audit` in a fresh process, and a saved run redrawn in a
fresh session (no model).

    python bench/dashboard.py [--threads 1] [--port 0]

Issue 17's targets: first page within 5 s of the launch, a redraw within 2 s, the page's audit
within 1.5x of the CLI's. `redraw_s` runs from the click on "Open" to the verdict card shown,
`redraw_idle_s` to the whole run drawn (findings' figures are drawn when opened); the page's
audit runs from the click on "Run the audit" to the card. Both audits run on `--threads` torch threads (the CLI's process and the
server's) from cold: the page's time includes loading the models into the server's cache, the
CLI's includes its Python start and imports. Debian's Chromium through Playwright, as the
browser test drives it. Prints the figures; writes them to `bench/results/dashboard.json`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_io import ROOT, write_results  # bench/results_io.py, next to this script

from apps.cli.dashboard import free_port, wait_healthy

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TARGETS = {"launch_to_first_page_s": 5.0, "redraw_s": 2.0, "audit_page_over_cli": 1.5}


def idle(page, timeout: float = 600_000) -> None:
    """Until Streamlit has finished the script run the last action started."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                           timeout=timeout)


def cli_audit(world, out: Path, env: dict) -> float:
    """`workbench audit` of the oracle as an edit, quick tier, in a fresh process: seconds."""
    cmd = [sys.executable, "-m", "apps.cli", "audit", "--original", str(world.original_dir),
           "--edited", str(world.oracle_dir), "--oracle", str(world.oracle_dir), "--facts",
           str(world.facts_path), "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both audits")
    ap.add_argument("--port", type=int, default=0, help="0: a free one")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from workbench.toyworld import build_toyworld

    world = build_toyworld(seed=0, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS":
           str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        runs = Path(tmp) / "runs"
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        log = (Path(tmp) / "app.log").open("w")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "apps.cli", "app", "--port", str(port),
                                 "--runs", str(runs)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            out["launch_to_health_s"] = wait_healthy(url, proc)
            page.goto(url)
            page.get_by_role("heading", name="Model & facts").wait_for(timeout=60_000)
            out["launch_to_first_page_s"] = time.perf_counter() - t0
            idle(page)
            out["launch_to_first_page_idle_s"] = time.perf_counter() - t0
            print(f"[dashboard] health {out['launch_to_health_s']:.2f} s, first page "
                  f"{out['launch_to_first_page_s']:.2f} s", flush=True)

            out["audit_cli_s"] = cli_audit(world, runs / "audits" / "by-cli", env)
            sidebar = page.get_by_test_id("stSidebar")
            sidebar.get_by_text("toy world", exact=True).click()
            idle(page)
            sidebar.get_by_role("link", name="Audit").click()
            page.get_by_role("heading", name="Audit").wait_for()
            idle(page)
            edited = page.get_by_test_id("stRadio").filter(has_text="Edited (M1)")
            edited.get_by_text("world oracle", exact=True).click()
            idle(page)
            t1 = time.perf_counter()
            page.get_by_role("button", name="Run the audit").click()
            page.locator("#verdict").wait_for(timeout=600_000)
            out["audit_page_s"] = time.perf_counter() - t1
            out["audit_page_over_cli"] = out["audit_page_s"] / out["audit_cli_s"]
            idle(page)
            verdict = page.locator("#verdict").inner_text().split("\n")[0]
            print(f"[dashboard] audit: page {out['audit_page_s']:.1f} s, CLI "
                  f"{out['audit_cli_s']:.1f} s ({verdict})", flush=True)

            fresh = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            fresh.goto(f"{url}/audit")
            fresh.get_by_role("heading", name="Audit").wait_for(timeout=60_000)
            idle(fresh)
            fresh.get_by_role("tab", name="Open a past run").click()
            t2 = time.perf_counter()
            fresh.get_by_role("button", name="Open", exact=True).and_(
                fresh.get_by_test_id("stBaseButton-secondary")).click()
            fresh.locator("#verdict").wait_for(timeout=60_000)
            out["redraw_s"] = time.perf_counter() - t2
            fresh.wait_for_function("() => document.querySelectorAll("
                                    "'[data-testid=\"stExpander\"]').length >= 6")
            idle(fresh)
            out["redraw_idle_s"] = time.perf_counter() - t2
            print(f"[dashboard] redraw {out['redraw_s']:.2f} s (all drawn "
                  f"{out['redraw_idle_s']:.2f} s)", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
            browser.close()
    out = {k: round(v, 3) for k, v in out.items()}
    out["targets"] = TARGETS
    out["met"] = {k: out[k] <= v for k, v in TARGETS.items()}
    out["verdict"] = verdict
    print(f"[dashboard] targets met: {out['met']}")
    write_results("dashboard", vars(args), out)


if __name__ == "__main__":
    main()
