"""Where the benchmarks keep what they measured: `bench/results/<script>.json`.

Measured figures belong there (and in closing notes), not in code comments, docstrings or test
reasons, where they rot: a comment says what a benchmark shows and cites the file.

A file holds one entry per set of options its script ran with (`runs`, keyed by those options),
each with the options, the machine, the commit and the date, so a run with other options keeps
the others' figures and a rerun with the same options replaces its own. Written only at the end
of a run, atomically (a temporary file, then `os.replace`), under a lock on the directory.

    from results_io import write_results   # in a script run as `python bench/<script>.py`
    write_results("recall_site", vars(args), {...})
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    """What the figures were measured on: timings mean little without it."""
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        # dirty: tracked files other than the results differ from the commit
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".",
                                  ":!bench/results"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def _jsonable(x: Any) -> Any:
    """numpy / torch scalars and arrays, dataclasses, sets, paths: what `json` does not know."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, set | frozenset):
        return sorted(x)
    return str(x)


def run_key(options: Mapping[str, Any]) -> str:
    """`key=value` pairs in sorted order: the same options name the same entry."""
    return " ".join(f"{k}={json.dumps(v, default=_jsonable)}" for k, v in sorted(options.items()))


def write_results(name: str, options: Mapping[str, Any], results: Any,
                  directory: Path | None = None) -> Path:
    """Record one complete run of `bench/<name>.py` with `options` (its parsed arguments) in
    `bench/results/<name>.json`; returns the file's path."""
    out_dir = Path(directory) if directory is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    entry = {"script": f"bench/{name}.py", "command": " ".join([Path(sys.argv[0]).name,
                                                                *sys.argv[1:]]),
             "options": dict(options),
             "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
             **_git(), "machine": machine(), "results": results}
    lock = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs of one script must not drop each other's
        doc: dict[str, Any] = {"script": f"bench/{name}.py", "runs": {}}
        if path.exists():
            try:
                old = json.loads(path.read_text())
                if isinstance(old.get("runs"), dict):
                    doc["runs"] = old["runs"]
            except (json.JSONDecodeError, AttributeError):
                pass  # a damaged file is replaced, not merged
        doc["runs"][run_key(options)] = entry
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".json.tmp", dir=out_dir)
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1, default=_jsonable)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        os.close(lock)  # releases the lock
    return path


def relative(path: Path) -> str:
    """`path` as printed after a run: relative to the repository when inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)
