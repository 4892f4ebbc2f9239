"""The verdict card of report.html (and of the dashboard) says what speaks against the verdict
but was not counted, and says nothing of it when there is none."""

from __future__ import annotations

from apps.report import card_html


def _report(**kw) -> dict:
    doc = {"verdict": "removed", "removal_score": 0.88, "confidence": 0.5,
           "summary": "removed: removal score 0.88", "would_change": "", "unavailable": [],
           "calibration": "test", "tier": "full",
           "specs": {"M0": {"spec": "m0"}, "M1": {"spec": "m1"}},
           "facts": {"name": "facts", "splits": {"forget": 40}}}
    return doc | kw


def test_card_lists_unweighed_readings_against_the_verdict():
    line = ("quantization reads suppression signature (recovery 0.79), but this calibration "
            "gives it no weight: its pools held no edit that it alone told apart")
    html = card_html(_report(unweighed=[line]))
    assert "Against it, not counted." in html and line in html
    assert "Against it" not in card_html(_report(unweighed=[]))
    assert "Against it" not in card_html(_report())  # a report written before the field
