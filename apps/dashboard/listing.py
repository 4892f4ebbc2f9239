"""The runs folder as tables: every saved edit (`edit.json`) and audit (`report.json`) under it,
and audits side by side. Reads JSON only: no model loads here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.inputs import read_json


def _fmt(v: Any) -> Any:
    return round(v, 3) if isinstance(v, float) else v


def _edit_row(path: Path, runs: Path) -> dict[str, Any]:
    doc = read_json(path / "edit.json")
    after, before = doc.get("after", {}), doc.get("before", {})
    chain = " -> ".join(str(c.get("operator")) for c in doc.get("chain", [])) or doc.get(
        "operator", "?")
    return {"kind": "edit", "run": str(path.relative_to(runs)), "what": chain,
            "verdict": "", "removal score": None, "confidence": None,
            "forget before": _fmt(before.get("forget", {}).get("accuracy")),
            "forget after": _fmt(after.get("forget", {}).get("accuracy")),
            "retain after": _fmt(after.get("retain", {}).get("accuracy")),
            "base": str(doc.get("base", "")), "when": str(doc.get("created", ""))}


def _audit_row(path: Path, runs: Path) -> dict[str, Any]:
    r = read_json(path / "report.json")
    m1 = r.get("behaviour", {}).get("M1", {})
    m0 = r.get("behaviour", {}).get("M0", {})
    return {"kind": "audit", "run": str(path.relative_to(runs)),
            "what": str(r.get("specs", {}).get("M1", {}).get("spec", "")),
            "verdict": r.get("verdict", ""), "removal score": _fmt(r.get("removal_score")),
            "confidence": _fmt(r.get("confidence")),
            "forget before": _fmt(m0.get("forget")), "forget after": _fmt(m1.get("forget")),
            "retain after": _fmt(m1.get("retain")),
            "base": str(r.get("specs", {}).get("M0", {}).get("spec", "")),
            "when": str(r.get("timings", {}).get("finished", ""))}


def dirs_with(runs: Path, filename: str) -> list[Path]:
    """Every folder under `runs` that holds `filename` (`edit.json`: a saved edit;
    `report.json`: an audit run), newest first."""
    if not runs.is_dir():
        return []
    return sorted((p.parent for p in runs.rglob(filename)), key=lambda d: d.stat().st_mtime,
                  reverse=True)


def scan(runs: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, problems): one row per edit and audit under `runs`, newest first; a file that
    does not read gives a one-line problem instead of a row."""
    rows, problems = [], []
    if not runs.is_dir():
        return rows, [f"{runs} is not a directory"]
    found = [(d, _edit_row) for d in dirs_with(runs, "edit.json")]
    found += [(d, _audit_row) for d in dirs_with(runs, "report.json")]
    found.sort(key=lambda x: x[0].stat().st_mtime, reverse=True)
    for path, make in found:
        try:
            rows.append(make(path, runs))
        except (WorkbenchError, AttributeError, TypeError) as e:
            problems.append(f"{path}: {e}")
    return rows, problems


def keep(rows: list[dict[str, Any]], kinds: list[str], verdicts: list[str],
         text: str) -> list[dict[str, Any]]:
    """The rows of the chosen kinds and verdicts (edits have none) whose fields mention
    `text` (case-insensitive)."""
    t = text.strip().lower()
    return [r for r in rows if r["kind"] in kinds
            and (not verdicts or r["kind"] != "audit" or r["verdict"] in verdicts)
            and (not t or any(t in str(v).lower() for v in r.values()))]


def side_by_side(runs: Path, names: list[str]) -> list[dict[str, Any]]:
    """Audits as columns: verdict, scores, accuracy per model and split, each module's
    reading and headline figure (a row per quantity, values as text)."""
    reports = {n: read_json(runs / n / "report.json") for n in names}
    rows: dict[str, dict[str, Any]] = {}

    def put(what: str, name: str, value: Any) -> None:
        # as text: a column mixes verdicts, numbers and specs (a table column has one type)
        text = f"{value:.3f}" if isinstance(value, float) else "" if value is None else str(value)
        rows.setdefault(what, {"": what})[name] = text

    for n, r in reports.items():
        for key in ("verdict", "removal_score", "confidence", "tier", "calibration"):
            put(key.replace("_", " "), n, r.get(key))
        for role, spec in r.get("specs", {}).items():
            put(f"{role} spec", n, spec.get("spec"))
        for role, acc in r.get("behaviour", {}).items():
            for split, v in acc.items():
                put(f"{role} {split} accuracy", n, v)
        for f in r.get("findings", []):
            put(f"{f['name']} reading", n, f["reading"])
            put(f"{f['name']} {f['figure']}", n, f["value"])
    return list(rows.values())
