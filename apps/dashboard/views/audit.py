"""Audit: did an edit remove the forget facts or only suppress them? Pick an original / edited
(/ oracle) pair, or a model and an operator (unlearn, then audit); run the battery in the
background; read the verdict card and every finding's figure. A past run directory redraws from
its files alone, without loading a model."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps.dashboard import common, jobs, listing

JOB = "audit"
PAIR, OPERATOR = "an original / edited pair", "a model and an operator (unlearn, then audit)"


def audit(mode: str, specs: dict, operator: str | None, config, out: Path, tier: str,
          modules: list[str] | None, seed: int):
    """Load the models through the cache, then audit (runs as a job)."""
    from apps.audit import audit_subjects, unlearn_then_audit
    from workbench.facts import load_facts

    facts = load_facts(specs["facts"])
    m0 = common.load_model(specs["M0"])
    oracle = common.load_model(specs["Mr"]) if specs.get("Mr") else None
    if mode == OPERATOR:
        return unlearn_then_audit(m0, operator, config, facts, out, oracle, specs, tier,
                                  modules, seed)
    m1 = common.load_model(specs["M1"])
    return audit_subjects(m0, m1, facts, out, oracle, specs, tier, modules, seed)


def show_run(run, key: str) -> None:
    """Everything a run directory says: the verdict card, behaviour, evidence, and each
    finding's figure with its reading (drawn from the saved arrays: no model)."""
    from apps.figures import FIGURES, draw

    r = run.report
    common.verdict_card(r)
    st.caption(f"Run directory: {run.out} (report.html beside it)")
    roles = list(r["behaviour"])
    splits = sorted({s for acc in r["behaviour"].values() for s in acc})
    st.subheader("Behaviour per split (greedy accuracy)")
    st.dataframe([{"split": s, **{m: r["behaviour"][m].get(s) for m in roles}} for s in splits],
                 hide_index=True, key=f"{key}.behaviour")
    st.subheader("Evidence")
    st.dataframe([{"finding": e["finding"], "reading": e["reading"], "figure": e["figure"],
                   "value": e["value"], "push on the score": round(e["push"], 3)}
                  for e in r["evidence"]], hide_index=True, key=f"{key}.evidence")
    st.subheader("Findings")
    st.caption("Open a finding for its reason and its figure (drawn when opened).")
    for name, f in run.findings.items():
        box = st.expander(f"{name}: {f.reading}", key=f"{key}.exp.{name}", on_change="rerun")
        with box:
            st.write(f.reason)
            fig = draw(f) if box.open and name in FIGURES else None
            if fig is not None:
                st.plotly_chart(fig, key=f"{key}.fig.{name}")
            elif box.open:
                st.caption("nothing to draw")
    if r.get("reproduce"):
        st.code(r["reproduce"], language="bash")


def new_audit(ctx: common.Context) -> None:
    mode = st.radio("Audit", (PAIR, OPERATOR), key="au.mode", horizontal=True)
    specs: dict = {"M0": common.model_picker("au.m0", ctx, "Original (M0)", "original")}
    operator, raw = None, None
    if mode == PAIR:
        specs["M1"] = common.model_picker("au.m1", ctx, "Edited (M1)", "edit")
    else:
        with st.expander("Operator", expanded=True):
            operator = common.operator_picker("au.op")
            raw = common.config_form(operator, "au.op")
    specs["Mr"] = common.model_picker("au.mr", ctx, "Oracle (optional)", "oracle",
                                      optional=True)
    picked = common.facts_picker("au", ctx)
    specs["facts"] = picked[0] if picked else None
    from probes.audit import QUICK, TIERS

    tier = st.radio("Tier", TIERS, key="au.tier", horizontal=True,
                    help=f"quick: {', '.join(QUICK)}; full: every analysis module")
    modules = st.multiselect("Only these modules (optional)", _modules(), key="au.modules")
    seed = int(st.number_input("Seed", 0, 2**31 - 1, 0, key="au.seed"))
    folder = common.run_name("au", "audit")
    needed = [specs["M0"], specs["facts"], folder] + ([specs["M1"]] if mode == PAIR else [])
    if st.button("Run the audit", type="primary", disabled=any(x is None for x in needed),
                 key="au.run"):
        config = None
        try:
            if mode == OPERATOR:
                from workbench.operators import make_config

                config = make_config(operator, raw)
            from probes.audit import tier_modules

            tier_modules(tier, modules)
        except Exception as e:
            st.error(jobs.error_text(e))
        else:
            out = ctx.runs / "audits" / folder
            jobs.start(JOB, "auditing", lambda: audit(mode, specs, operator, config, out, tier,
                                                      modules or None, seed))
    job = jobs.follow(JOB)
    if job is not None and job.result is not None:
        st.success(f"Audit done in {job.seconds:.1f} s")
        show_run(job.result, "au.result")


def _modules() -> list[str]:
    from probes import available

    return available()


def past_run(ctx: common.Context) -> None:
    from probes.audit import AuditRun

    found = listing.dirs_with(ctx.runs, "report.json")
    options = [*map(str, found), "another directory"]
    pick = st.selectbox("Run directory", options, key="au.past",
                        format_func=lambda p: p if p == "another directory"
                        else str(Path(p).relative_to(ctx.runs)))
    path = st.text_input("Directory", key="au.past_path") if pick == "another directory" else pick
    if st.button("Open", key="au.open", disabled=not path):
        st.session_state["au.opened"] = path
    opened = st.session_state.get("au.opened")
    if opened:
        try:
            run = AuditRun.open(opened)
        except Exception as e:
            st.error(jobs.error_text(e))
        else:
            show_run(run, "au.past_run")


def render() -> None:
    ctx = common.context()
    st.title("Audit")
    st.caption("Runs the analysis battery on the pair and reads a verdict from it (removed, "
               "suppressed, not unlearned, damaged) with the evidence behind it.")
    new, past = st.tabs(["New audit", "Open a past run"])
    with new:
        new_audit(ctx)
    with past:
        past_run(ctx)


render()
