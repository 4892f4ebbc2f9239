"""Write notebooks/*.ipynb from their sources in scripts/notebooks/*.py (outputs stripped).

Each source is a plain Python file in the percent format: `# %%` starts a code cell and
`# %% [markdown]` a markdown cell whose lines are comments (`# ` removed). A source runs top to
bottom as a script too (`python scripts/notebooks/04_audit_your_own_checkpoints.py`), which is
the quick way to debug a notebook before executing it.

    python scripts/make_notebooks.py           # (re)write notebooks/
    python scripts/make_notebooks.py --check   # exit 1 if notebooks/ differs from the sources
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "scripts" / "notebooks"
TARGET = ROOT / "notebooks"
METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                   "name": "python3"},
    "language_info": {"name": "python", "version": "3.11"},
}


def cells_of(source: str) -> list[tuple[str, str]]:
    """(kind, text) per cell of a percent-format source; text before the first marker is
    dropped (the file's module docstring, which says how to build the notebook)."""
    cells: list[tuple[str, list[str]]] = []
    for line in source.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            kind, lines = cells[-1]
            if kind == "markdown":
                if line.strip() and not line.startswith("#"):
                    raise ValueError(f"markdown cell line is not a comment: {line!r}")
                line = line[2:] if line.startswith("# ") else line.lstrip("#")
            lines.append(line)
    out = []
    for kind, lines in cells:
        text = "\n".join(lines).strip("\n")
        if text:
            out.append((kind, text))
    return out


def notebook(source: Path) -> dict:
    """The nbformat 4.5 document of one source, with stable cell ids and no outputs."""
    cells = []
    for i, (kind, text) in enumerate(cells_of(source.read_text("utf-8")), 1):
        lines = text.splitlines(keepends=True)
        cell = {"cell_type": kind, "id": f"{source.stem[:2]}-{i:02d}", "metadata": {},
                "source": lines}
        if kind == "code":
            cell |= {"execution_count": None, "outputs": []}
        cells.append(cell)
    return {"cells": cells, "metadata": METADATA, "nbformat": 4, "nbformat_minor": 5}


def render(source: Path) -> str:
    return json.dumps(notebook(source), indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; write nothing")
    args = ap.parse_args()
    stale = []
    for source in sorted(SOURCES.glob("[0-9][0-9]_*.py")):
        target = TARGET / f"{source.stem}.ipynb"
        text = render(source)
        if target.exists() and target.read_text("utf-8") == text:
            continue
        stale.append(target.relative_to(ROOT))
        if not args.check:
            target.parent.mkdir(exist_ok=True)
            target.write_text(text, "utf-8")
    verb = "differs from its source" if args.check else "written"
    for path in stale:
        print(f"{path}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
