"""The notebooks: stored stripped and generated from their sources; executed top to bottom
(slow), each failing on any error and on its own `assert` cells, and printing its verdicts.

The executed copies go to `runs/notebooks/<name>.ipynb` with their wall time in the metadata
(`workbench_seconds`). tests/conftest.py runs these tests last in a session, so the worlds the
other tests build are built once and shared."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from probes.verdict import VERDICTS
from workbench.atomic import write_text

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("01_quickstart", "02_is_gradient_ascent_suppression",
             "03_sae_features_and_clamping", "04_audit_your_own_checkpoints")
ALLOWED = {"workbench", "probes", "saes", "apps", "numpy", "plotly", "torch", "transformers"}
# What every notebook prints at its end, one line per audited edit: "verdict <what>: <verdict>"
VERDICT_LINE = re.compile(rf"^verdict [^:\n]+: ({'|'.join(VERDICTS)})$", re.MULTILINE)
CELL_TIMEOUT_S = 900


def _read(name: str):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_four_notebooks_exist_and_nothing_else():
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_stripped_and_runs_on_python3(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    code = "\n".join(_code(nb))
    assert "assert " in code  # key outputs are checked in the notebook itself


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_imports_only_the_public_library_and_its_stack(name):
    roots = set()
    for source in _code(_read(name)):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}: relative import"
                roots.add(node.module.split(".")[0])
    assert roots, name
    assert roots <= ALLOWED | set(sys.stdlib_module_names), roots - ALLOWED


def test_committed_notebooks_equal_the_generator_output():
    done = subprocess.run([sys.executable, "scripts/make_notebooks.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_python3_kernel_is_this_interpreter():
    """nbclient starts kernel `python3`, whose spec says `python`: jupyter_client must resolve
    it to the interpreter running the tests (the venv's), not another Python on PATH."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    assert km.format_kernel_cmd()[0] == sys.executable


def test_verdict_line_pattern():
    out = "x\nverdict A: suppressed\nverdict B without oracle: removed\nverdict C: maybe\n"
    assert VERDICT_LINE.findall(out) == ["suppressed", "removed"]


def _stream_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_top_to_bottom(name):
    from nbclient import NotebookClient

    nb = _read(name)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    t0 = time.perf_counter()
    try:
        client.execute()  # raises on the first cell that errors (an assert cell included)
    finally:
        nb.metadata["workbench_seconds"] = round(time.perf_counter() - t0, 1)
        write_text(ROOT / "runs" / "notebooks" / f"{name}.ipynb", nbformat.writes(nb))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    assert VERDICT_LINE.findall(_stream_text(nb)), f"{name} printed no verdict"
