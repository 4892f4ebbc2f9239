"""Unlearn: one operator or a chain of them (sequential unlearning) on a model's forget facts, run
in the background with live forget / retain curves, the edit saved under `<runs>/edits/`."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps.dashboard import charts, common, jobs

JOB = "unlearn"


def unlearn(spec: str, facts_spec: str, names: list[str], configs: list, out: Path) -> dict:
    """`workbench.unlearn.run_unlearn` on the cached model (runs as a job)."""
    from workbench.unlearn import run_unlearn

    return run_unlearn(spec, facts_spec, names, out, configs=configs,
                       subject=common.load_model(spec))


def curves(job: jobs.Job) -> None:
    """Loss and forget / retain accuracy per training step, one line per operator of the chain
    (operators that do not train report no steps)."""
    steps = job.of("train")
    if not steps:
        return
    acc: dict[str, tuple[list[int], list[float]]] = {}
    loss: dict[str, tuple[list[int], list[float]]] = {}
    for e in steps:
        op = e.metrics.get("operator", "train")
        for split in ("forget", "retain"):
            if split in e.metrics:
                xs, ys = acc.setdefault(f"{op}: {split}", ([], []))
                xs.append(e.done)
                ys.append(e.metrics[split])
        if "loss" in e.metrics:
            xs, ys = loss.setdefault(op, ([], []))
            xs.append(e.done)
            ys.append(e.metrics["loss"])
    left, right = st.columns(2)
    if acc:
        left.plotly_chart(charts.lines(acc, "Teacher-forced accuracy while training", "step",
                                       "accuracy", (0, 1.05)))
    if loss:
        right.plotly_chart(charts.lines(loss, "Training loss", "step", "loss"))


def show(job: jobs.Job) -> None:
    doc = job.result
    chain = " -> ".join(c["operator"] for c in doc["chain"])
    st.success(f"{chain}: saved to {job.result['saved_to']} in {job.seconds:.1f} s")
    rows = [{"split": split, "n": b["n"], "accuracy before": round(b["accuracy"], 3),
             "accuracy after": round(doc["after"][split]["accuracy"], 3),
             "log-prob before": round(b["logprob"], 3),
             "log-prob after": round(doc["after"][split]["logprob"], 3)}
            for split, b in doc["before"].items()]
    st.dataframe(rows, hide_index=True, key="ul.result")
    curves(job)


def render() -> None:
    ctx = common.context()
    st.title("Unlearn")
    st.caption("Operators are grouped by intent. Each config field comes from the operator's "
               "typed config: hover a field for its doc. A chain applies its operators in "
               "order, each to the previous one's edit.")
    spec, picked = common.model_and_facts("ul", ctx)
    n = int(st.number_input("Operators in the chain", 1, 4, 1, key="ul.n"))
    names, raw = [], []
    for i in range(n):
        with st.expander(f"Operator {i + 1}", expanded=True):
            name = common.operator_picker(f"ul.{i}")
            names.append(name)
            raw.append(common.config_form(name, f"ul.{i}"))
    folder = common.run_name("ul", "-".join(names))
    ready = spec is not None and picked is not None and folder is not None
    if st.button("Unlearn", type="primary", disabled=not ready, key="ul.run"):
        from workbench.operators import make_config

        try:  # every value is checked before any model loads
            configs = [make_config(name, values) for name, values in zip(names, raw, strict=True)]
        except Exception as e:
            st.error(jobs.error_text(e))
        else:
            out = ctx.runs / "edits" / folder

            def work() -> dict:
                return unlearn(spec, picked[0], names, configs, out) | {"saved_to": str(out)}

            jobs.start(JOB, f"unlearning with {' -> '.join(names)}", work)
    job = jobs.follow(JOB, live=curves)
    if job is not None and job.result is not None:
        show(job)


render()
