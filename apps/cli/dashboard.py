"""`workbench app`: start the Streamlit dashboard (`apps/dashboard/app.py`), bound to localhost
unless told otherwise."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from apps.cli.common import err, handles_errors
from workbench.errors import WorkbenchError

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
LOCAL = ("127.0.0.1", "localhost", "::1")


def streamlit_command(host: str, port: int, runs: Path) -> list[str]:
    """The argument list that starts the dashboard (never a shell string)."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
            "--server.address", host, "--server.port", str(port),
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
            # pages give back the values Streamlit drops on a page change (common.py)
            "--global.disableWidgetStateDuplicationWarning", "true",
            "--", "--runs", str(runs)]


def serve(host: str, port: int, runs: Path, **popen: Any) -> subprocess.Popen:
    """Start the dashboard's server in the background (`popen`: `subprocess.Popen` options)."""
    return subprocess.Popen(streamlit_command(host, port, runs), **popen)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for tests and benchmarks)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 90) -> float:
    """Seconds until Streamlit's health endpoint at `url` answers `ok`; raises if `proc` (the
    server, or what started it) exits first or `timeout` passes."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise WorkbenchError(f"the dashboard exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise WorkbenchError(f"{url} did not answer its health check within {timeout} s")


@handles_errors(quiet=False)
def app_command(
    host: Annotated[str, typer.Option(help="address to listen on (default: this machine only)")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8501,
    runs: Annotated[Path, typer.Option(help="folder the app writes edits, audits and uploads "
                                            "to, and lists on its Runs page")] = Path("runs"),
) -> None:
    """Start the dashboard: Model & facts, Unlearn, Audit, Internals, SAE features, Runs."""
    if not 0 < port < 65536:
        raise WorkbenchError(f"--port must be in 1..65535, got {port}")
    if host not in LOCAL:
        err.print(f"[yellow]warning:[/] listening on {host}: anyone who reaches this address "
                  f"can run models and write under {runs}")
    err.print(f"dashboard: http://{host}:{port}  (runs folder {runs.resolve()}; Ctrl+C stops)")
    proc = serve(host, port, runs)
    # a stop asked of this command stops the server too (Ctrl+C reaches both by itself)
    before = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, before)
    raise typer.Exit(0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code)
