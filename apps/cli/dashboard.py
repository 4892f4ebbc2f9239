"""`workbench app`: start the Streamlit dashboard (`apps/dashboard/app.py`), bound to localhost
unless told otherwise."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

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
    proc = subprocess.Popen(streamlit_command(host, port, runs))
    # a stop asked of this command stops the server too (Ctrl+C reaches both by itself)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    raise typer.Exit(0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code)
