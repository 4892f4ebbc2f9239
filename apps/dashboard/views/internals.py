"""Internals: one prompt in M0 and M1. Both models' logit lens, an activation-patching grid (M0's
residual stream patched into M1 at each layer and token), where their residual streams part,
residual and attention norms; patch one cell to see what M1 says then; the Python that
reproduces the view (`probes.internals`)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from apps.dashboard import charts, common, jobs

JOB, CELL = "internals", "internals.cell"


def compare(m0: str, m1: str, prompt: str, answer: str):
    from probes.internals import compare_prompt

    return compare_prompt(common.load_model(m0), common.load_model(m1), prompt, answer)


def patched(m0: str, m1: str, prompt: str, answer: str, layer: int, position: int):
    from probes.internals import patched_predictions

    return patched_predictions(common.load_model(m0), common.load_model(m1), prompt, answer,
                               layer, position)


def code(m0: str, m1: str, prompt: str, answer: str, layer: int, position: int) -> str:
    """The library calls that reproduce this view."""
    return (f"from probes.internals import compare_prompt, patched_predictions\n"
            f"from workbench.models import load_subject\n\n"
            f"m0 = load_subject({m0!r})\nm1 = load_subject({m1!r})\n"
            f"view = compare_prompt(m0, m1, {prompt!r}, {answer!r})\n"
            f"view.lens['M0'].answer_rank, view.recovery, view.resid_diff, view.norms\n"
            f"cell = patched_predictions(m0, m1, {prompt!r}, {answer!r}, layer={layer}, "
            f"position={position})\ncell.top, cell.continuation\n")


def prompt_picker(ctx: common.Context) -> tuple[str, str] | None:
    source = st.radio("Prompt", ("a fact", "type one"), key="in.source", horizontal=True)
    if source == "type one":
        prompt = st.text_input("Prompt", "The capital of France is", key="in.prompt")
        answer = st.text_input("Answer (with its leading space)", " Paris", key="in.answer")
        return (prompt, answer) if prompt.strip() and answer.strip() else None
    picked = common.facts_picker("in", ctx)
    if picked is None:
        return None
    split = st.selectbox("Split", picked[1].splits(), key="in.split")
    facts = picked[1].split(split)
    fact = st.selectbox("Fact", list(facts), key="in.fact",
                        format_func=lambda f: f"{f.id}: {f.prompt}{f.answer}")
    return fact.prompt, fact.answer


def show(view, specs: tuple[str, str]) -> None:
    layers = list(range(view.n_layers))
    toks = [f"{i}:{t!r}" for i, t in enumerate(view.tokens)]
    st.caption(f"answer token {view.answer_token!r}; teacher-forced answer log-prob: M0 "
               f"{view.logprob['M0']:.2f}, M1 {view.logprob['M1']:.2f}")
    lens, grid, diff, norms = st.tabs(["Logit lens", "Activation patching",
                                       "Residual difference", "Norms"])
    with lens:
        kind = st.radio("Colour", ("answer probability", "top-token probability"),
                        key="in.lens_kind", horizontal=True)
        for col, name in zip(st.columns(2), ("M0", "M1"), strict=True):
            g = view.lens[name]
            z = g.answer_prob if kind == "answer probability" else g.top_prob
            col.plotly_chart(charts.heatmap(z, toks, layers, f"{name}: top token per layer and "
                                            "position", "probability", text=g.top_tokens,
                                            zmin=0, zmax=1, x_title="token",
                                            y_title="layer"), key=f"in.lens.{name}")
            rank = int(g.answer_rank[-1, -1])
            col.caption(f"{name} ranks the answer {rank + 1} at its last layer's last token")
    with grid:
        st.caption("M1's answer log-prob with M0's resid_post put in at one (layer, token): the "
                   "share of the M0 - M1 gap it closes (1 = M0's answer back). Click a cell "
                   "or choose it below.")
        if np.isnan(view.recovery).all():
            st.info("M0 and M1 give the answer the same log-prob: there is no gap to recover.")
        event = st.plotly_chart(charts.heatmap(view.recovery, toks, layers, "Patching M0 -> M1",
                                               "recovery", zmin=0, zmax=1, x_title="token",
                                               y_title="layer", clickable=True),
                                key="in.grid", on_select="rerun", selection_mode="points")
        points = event.get("selection", {}).get("points", []) if event else []
        click = (int(points[0]["y"]), toks.index(points[0]["x"])) if points else None
        if click is not None and click != st.session_state.get("in.click"):
            st.session_state["in.click"] = click  # a new click moves the cell pickers
            st.session_state["in.layer"], st.session_state["in.position"] = click
        patch_cell(view, specs, toks)
    with diff:
        st.plotly_chart(charts.heatmap(view.resid_diff, toks, layers, "|h1 - h0| / |h0| of "
                                       "resid_post", "relative difference", zmin=0,
                                       x_title="token", y_title="layer"), key="in.diff")
    with norms:
        series = {f"{m} {p}": (layers, view.norms[m][p]) for m in ("M0", "M1")
                  for p in ("resid_post", "attn_out")}
        st.plotly_chart(charts.lines(series, "Norms at the last prompt token", "layer", "norm"),
                        key="in.norms")


def patch_cell(view, specs: tuple[str, str], toks: list[str]) -> None:
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", list(range(view.n_layers)), key="in.layer")
    position = c2.selectbox("Token", list(range(len(toks))), key="in.position",
                            format_func=lambda i: toks[i])
    if st.button("Patch this cell", key="in.patch"):
        jobs.start(CELL, f"patching layer {layer}, token {position}",
                   lambda: patched(*specs, view.prompt, view.answer, layer, position))
    job = jobs.follow(CELL)
    if job is None or job.result is None:
        return
    p = job.result
    rec = view.recovery[p.layer, p.position]
    st.markdown(f"**Layer {p.layer}, token {toks[p.position]}** (recovery "
                f"{'n/a' if np.isnan(rec) else f'{rec:.2f}'}): M1 continues with "
                f"`{p.continuation!r}` (unpatched: `{p.unpatched_continuation!r}`); answer "
                f"log-prob {p.answer_logprob:.2f}")
    st.dataframe([{"rank": i + 1, "patched M1": t, "p": round(pr, 4), "M1": u,
                   "p (M1)": round(q, 4)}
                  for i, ((t, pr), (u, q)) in enumerate(zip(p.top, p.unpatched_top,
                                                            strict=True))],
                 hide_index=True, key="in.top")


def render() -> None:
    ctx = common.context()
    st.title("Internals")
    st.caption("One prompt, the original against the edit: where the answer forms in each, and "
               "which activations of the original bring it back into the edit.")
    m0 = common.model_picker("in.m0", ctx, "M0 (original)", "original")
    m1 = common.model_picker("in.m1", ctx, "M1 (edited)", "edit")
    pair = prompt_picker(ctx)
    if st.button("Compare", type="primary", disabled=None in (m0, m1, pair), key="in.run"):
        jobs.forget(CELL)
        for k in ("in.layer", "in.position", "in.click"):  # the new prompt's own cells
            st.session_state.pop(k, None)
        jobs.start(JOB, "reading both models", lambda: ((m0, m1), compare(m0, m1, *pair)))
    job = jobs.follow(JOB)
    if job is not None and job.result is not None:
        specs, view = job.result
        st.session_state.setdefault("in.layer", view.n_layers - 1)
        st.session_state.setdefault("in.position", len(view.tokens) - 1)
        show(view, specs)
        st.subheader("Copy as Python")
        st.code(code(*specs, view.prompt, view.answer, int(st.session_state["in.layer"]),
                     int(st.session_state["in.position"])), language="python")


render()
