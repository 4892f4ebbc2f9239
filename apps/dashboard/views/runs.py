"""Runs: every edit and audit under the runs folder, filterable, and audits side by side
(verdicts, scores, accuracy per split, each module's reading). Reads JSON only."""

from __future__ import annotations

import streamlit as st

from apps.dashboard import common, listing


def render() -> None:
    ctx = common.context()
    st.title("Runs")
    st.caption(f"Edits and audits under {ctx.runs}. Open an audit's figures on the Audit page "
               "(Open a past run).")
    rows, problems = listing.scan(ctx.runs)
    for p in problems:
        st.warning(p)
    if not rows:
        st.info("Nothing here yet: the Unlearn and Audit pages write their runs here.")
        return
    c1, c2, c3 = st.columns(3)
    kinds = c1.multiselect("Kind", ["edit", "audit"], default=["edit", "audit"], key="rn.kind")
    verdicts = c2.multiselect("Verdict", sorted({r["verdict"] for r in rows if r["verdict"]}),
                              key="rn.verdict")
    text = c3.text_input("Contains", key="rn.text")
    shown = listing.keep(rows, kinds, verdicts, text)
    st.dataframe(shown, hide_index=True, key="rn.table")
    st.caption(f"{len(shown)} of {len(rows)} runs")
    audits = [r["run"] for r in shown if r["kind"] == "audit"]
    st.subheader("Audits side by side")
    chosen = st.multiselect("Audits", audits, default=audits[:2], key="rn.compare")
    if chosen:
        st.dataframe(listing.side_by_side(ctx.runs, chosen), hide_index=True, key="rn.side")


render()
