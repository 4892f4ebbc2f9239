"""Model & facts: pick a model and a fact set; see each fact's greedy answer and, by logit lens,
the layer where each answer forms (rank or probability of its first token at every layer)."""

from __future__ import annotations

import streamlit as st

from apps.dashboard import charts, common, jobs

JOB = "model_facts"


def answers(spec: str, facts_spec: str, split: str, limit: int) -> dict:
    """The model's answers on the chosen facts and the logit lens of each (runs as a job)."""
    from probes.logit_lens import answer_lens_by_layer
    from workbench.behavior import evaluate, summarize
    from workbench.facts import FactSet, load_facts

    fs = load_facts(facts_spec)
    splits = fs.splits() if split == "all" else [split]
    fs = FactSet(tuple(f for s in splits for f in fs.split(s).facts[:limit]),
                 fs.name).require_nonempty(f"the {split} split of")
    subject = common.load_model(spec)
    results = evaluate(subject, fs)
    rank, prob = answer_lens_by_layer(subject, fs)
    return {"model": subject.name, "results": results, "summary": summarize(results),
            "rank": rank, "prob": prob, "facts": fs.name}


def show(out: dict) -> None:
    st.subheader(f"{out['model']} on {out['facts']}")
    cols = st.columns(max(len(out["summary"]), 1))
    for col, (split, s) in zip(cols, out["summary"].items(), strict=False):
        col.metric(f"{split} accuracy", f"{s['accuracy']:.0%}", help=f"{s['n']} facts, greedy")
    rows = [{"split": r.split, "id": r.id, "prompt": r.prompt, "answer": r.answer,
             "model says": r.generated, "correct": r.correct,
             "answer log-prob": round(r.logprob, 3)} for r in out["results"]]
    st.dataframe(rows, key="mf.table", hide_index=True)
    kind = st.radio("Logit-lens heatmap shows", ("rank", "probability"), horizontal=True,
                    key="mf.lens_kind")
    labels = [f"{r.split}:{r.id}" for r in out["results"]]
    n = out["rank"].shape[0]
    if kind == "rank":
        from probes.demo import rank_figure

        fig = rank_figure(out["rank"], labels, "Where each answer forms (rank of its first "
                                               "token, logit lens on resid_post)")
    else:
        fig = charts.heatmap(out["prob"].T, list(range(n)), labels, "Where each answer forms "
                             "(probability of its first token, logit lens on resid_post)",
                             "probability", zmin=0, zmax=1, x_title="layer")
    st.plotly_chart(fig, key="mf.lens")


def render() -> None:
    ctx = common.context()
    st.title("Model & facts")
    st.caption("A model's greedy answer to each fact, and where in its layers each answer "
               "forms. The model loads when you press the button, once per process.")
    spec, picked = common.model_and_facts("mf", ctx)
    split = st.selectbox("Split", ("all", "forget", "retain", "holdout", "unseen"), key="mf.split")
    limit = int(st.number_input("At most this many facts per split", 1, 2000, 40, key="mf.limit"))
    if st.button("Show answers", type="primary", disabled=spec is None or picked is None,
                 key="mf.run"):
        jobs.start(JOB, "answers and logit lens", lambda: answers(spec, picked[0], split, limit))
    job = jobs.follow(JOB)
    if job is not None and job.result is not None:
        show(job.result)


render()
