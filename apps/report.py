"""`report.html` of an audit run directory: self-contained (plotly inlined once), drawn from the
run's saved JSON and arrays only, so any run redraws without a model."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from apps.figures import FIGURES, draw
from probes.audit import AuditRun
from workbench.atomic import write_text

# the verdict card's own rules (the dashboard shows the card inside its page: nothing global)
CARD_STYLE = """
.card{border-radius:10px;padding:1.2em 1.5em;margin-bottom:1.5em;border:2px solid #ccc}
.removed{border-color:#2e7d32;background:#f1f8f1}.suppressed{border-color:#c62828;background:#fdf1f1}
.not_unlearned{border-color:#6d6d6d;background:#f5f5f5}.damaged{border-color:#ef6c00;background:#fff5eb}
.verdict{font-size:2em;font-weight:700;letter-spacing:.02em}
"""
STYLE = CARD_STYLE + """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.3em .6em;
text-align:left}th{background:#fafafa}.muted{color:#666}.S{color:#c62828}.r{color:#2e7d32}
code,pre{background:#f6f6f6;padding:.2em .4em;border-radius:4px;white-space:pre-wrap}
"""
_LABEL = {"removed": "REMOVED", "suppressed": "SUPPRESSED", "not_unlearned": "NOT UNLEARNED",
          "damaged": "DAMAGED"}
_READ = {"suppression-signature": "S", "removal-consistent": "r", "inconclusive": ""}


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else _e(v)


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def card_html(r: dict[str, Any]) -> str:
    """The verdict card of a run's `report.json` document (styled by `CARD_STYLE`; the dashboard
    shows the same card)."""
    spec = r["specs"]
    asked = (f"Did the edit <code>{_e(spec['M1']['spec'])}</code> remove the "
             f"{r['facts']['splits'].get('forget', 0)} forget facts of <code>"
             f"{_e(r['facts']['name'])}</code> from <code>{_e(spec['M0']['spec'])}</code>, "
             f"or only suppress them?" + (f" Oracle: <code>{_e(spec['Mr']['spec'])}</code>."
                                          if "Mr" in spec else " No oracle was given."))
    lines = [f"<div class='verdict'>{_LABEL[r['verdict']]}</div>",
             f"<p><b>What was asked.</b> {asked}</p>",
             f"<p><b>What was found.</b> {_e(r['summary'])}</p>",
             f"<p><b>How sure.</b> removal score {r['removal_score']:.2f} (0 = suppressed, "
             f"1 = removed), confidence {r['confidence']:.2f}; calibration "
             f"<code>{_e(r['calibration'])}</code>, tier {_e(r['tier'])}.</p>"]
    if r.get("would_change"):
        lines.append(f"<p><b>What would change it.</b> {_e(r['would_change'])}.</p>")
    if r["unavailable"]:
        lines.append("<p><b>Unavailable.</b></p><ul>" + "".join(
            f"<li>{_e(u)}</li>" for u in r["unavailable"]) + "</ul>")
    if r.get("unweighed"):
        lines.append("<p><b>Against it, not counted.</b></p><ul>" + "".join(
            f"<li>{_e(u)}</li>" for u in r["unweighed"]) + "</ul>")
    return f"<div class='card {r['verdict']}' id='verdict'>{''.join(lines)}</div>"


def render(run_dir: str | Path) -> Path:
    """Write `report.html` into the run directory (atomically) and return its path."""
    import plotly.offline

    run = AuditRun.open(run_dir)
    r = run.report
    roles = list(r["behaviour"])
    splits = sorted({s for acc in r["behaviour"].values() for s in acc})
    behaviour = _table(["split", *roles], [[_e(s), *(f"{r['behaviour'][m].get(s, float('nan')):.0%}"
                                                     for m in roles)] for s in splits])
    evidence = _table(["finding", "reading", "figure", "value", "push on the score"],
                      [[_e(e["finding"]), f"<span class='{_READ[e['reading']]}'>"
                        f"{_e(e['reading'])}</span>", _e(e["figure"]), _num(e["value"]),
                        f"{e['push']:+.2f}"] for e in r["evidence"]])
    parts = []
    for f in run.findings.values():
        fig = draw(f) if f.name in FIGURES else None
        body = (fig.to_html(full_html=False, include_plotlyjs=False, default_height="380px")
                if fig is not None else "<p class='muted'>nothing to draw</p>")
        parts.append(f"<h3 id='{_e(f.name)}'>{_e(f.name)}: <span class='"
                     f"{_READ[f.reading]}'>{_e(f.reading)}</span> <span class='muted'>"
                     f"({f.seconds:.1f} s)</span></h3><p>{_e(f.reason)}</p>{body}")
    doc = f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<title>Audit: {_e(r['verdict'])}</title><style>{STYLE}</style>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head><body>
<h1>Unlearning audit</h1>{card_html(r)}
<h2>Behaviour per split</h2><p class='muted'>greedy accuracy</p>{behaviour}
<h2>Evidence</h2>{evidence}
<h2>Findings</h2>{''.join(parts)}
<h2>Reproduce</h2><pre>{_e(r.get('reproduce') or 'run from Python (no command recorded)')}</pre>
<p class='muted'>versions: {_e(', '.join(f'{k} {v}' for k, v in r['versions'].items()))};
timings: {r['timings'].get('total_s', '?')} s in all.</p>
</body></html>"""
    return write_text(Path(run_dir) / "report.html", doc)
