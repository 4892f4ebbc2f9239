"""SAE features: load an SAE (a directory or a published release) or train a small one on the
facts; rank the features of the forget facts; browse each feature (top contexts, activation
histogram, decoder logit effects); clamp some and see the greedy answers change (`saes`)."""

from __future__ import annotations

import streamlit as st

from apps.dashboard import common, jobs

JOB, CLAMP = "sae", "sae.clamp"
TRAIN, LOAD = "train a small SAE on the facts", "load an SAE (directory or release:<r>:<id>)"


def find(spec: str, facts_spec: str, source: str, sae_path: str, train, top: int,
         max_retain_rate: float) -> dict:
    """The SAE, its forget features and every fact's latents (runs as a job)."""
    from saes.clamp import train_for_facts
    from saes.features import forget_features
    from saes.load import check_fits, resolve_sae
    from saes.views import text_latents
    from workbench.corpus import fact_texts
    from workbench.entities import with_entities
    from workbench.facts import load_facts

    facts, _ = with_entities(load_facts(facts_spec))
    subject = common.load_model(spec)
    if source == TRAIN:
        loaded = train_for_facts(subject, facts.forget, facts.retain, train)
    else:
        loaded = resolve_sae(sae_path, device=subject.device)
    check_fits(loaded, subject)
    stats = forget_features(subject, loaded, facts.forget, facts.retain, top=top,
                            max_retain_rate=max_retain_rate)
    texts = fact_texts(facts.forget) + fact_texts(facts.retain)
    return {"spec": spec, "facts": facts_spec, "loaded": loaded, "stats": stats,
            "texts": texts, "latents": text_latents(subject, loaded, texts)}


def clamp(found: dict, features: list[int], multiplier: float) -> list[dict]:
    """Greedy answers on the forget facts without and with the chosen features clamped."""
    from saes.clamp import SAEClamp
    from workbench.behavior import evaluate
    from workbench.facts import load_facts

    subject = common.load_model(found["spec"])
    forget = load_facts(found["facts"]).forget
    clamped = subject.with_interventions(SAEClamp(found["loaded"], tuple(features), multiplier))
    return [{"id": a.id, "prompt": a.prompt, "answer": a.answer, "without clamp": a.generated,
             "with clamp": b.generated, "correct without": a.correct,
             "correct with": b.correct, "changed": a.generated != b.generated}
            for a, b in zip(evaluate(subject, forget), evaluate(clamped, forget), strict=True)]


def sae_form() -> tuple[str, str, object | None]:
    """The SAE source: a path, or the config of a small SAE to train (None: a bad value, shown)."""
    source = st.radio("SAE", (TRAIN, LOAD), key="sae.source", horizontal=True)
    if source == LOAD:
        return source, st.text_input("SAE directory or release:<release>:<id>",
                                     key="sae.path").strip(), None
    from saes.clamp import SAEClampConfig
    from workbench.options import parse_value

    d, c = SAEClampConfig(), st.columns(5)
    layer = c[0].text_input("layer (none: the middle block)", "none", key="sae.layer")
    try:
        config = SAEClampConfig(
            layer=parse_value(layer.strip() or "none", int | None, "layer"),
            width=int(c[1].number_input("features", 16, 65536, 256, key="sae.width")),
            k=int(c[2].number_input("active per token (topk)", 1, 512, d.k, key="sae.k")),
            tokens=int(c[3].number_input("activations", 1000, 10**7, 20_000, 1000,
                                         key="sae.tokens")),
            epochs=int(c[4].number_input("epochs", 1, 100, d.epochs, key="sae.epochs")))
    except Exception as e:
        st.error(jobs.error_text(e))
        return source, "", None
    return source, "", config


def show(found: dict) -> None:
    from saes.views import feature_view, rates_figure

    stats = found["stats"]
    loaded = found["loaded"]
    st.subheader(f"{len(stats)} forget features of the SAE at {loaded.hook} "
                 f"({loaded.sae.cfg.d_sae} features)")
    if not stats:
        st.warning("No feature fires on the forget prompts while staying below the retain "
                   "rate: raise the maximum retain rate or train a wider SAE.")
        return
    st.dataframe([vars(s) for s in stats], hide_index=True, key="sae.stats")
    st.plotly_chart(rates_figure(stats), key="sae.rates")
    feature = st.selectbox("Feature", [s.feature for s in stats], key="sae.feature")
    view = feature_view(common.load_model(found["spec"]), loaded, int(feature),
                        found["texts"], stats, tl=found["latents"])
    st.markdown("**Top contexts** (orange: how strongly the feature fires on each token)")
    st.html(view.contexts_html)
    left, right = st.columns(2)
    left.plotly_chart(view.histogram, key="sae.hist")
    right.plotly_chart(view.logits, key="sae.logits")
    st.subheader("Clamp features")
    chosen = st.multiselect("Features to clamp", [s.feature for s in stats],
                            default=[s.feature for s in stats[:5]], key="sae.clamp_features")
    mult = float(st.number_input("Active feature a becomes -multiplier * a", 0.0, 1000.0, 20.0,
                                 key="sae.multiplier"))
    if st.button("Clamp and compare the answers", disabled=not chosen, key="sae.clamp"):
        jobs.start(CLAMP, "clamping", lambda: clamp(found, [int(f) for f in chosen], mult))
    job = jobs.follow(CLAMP)
    if job is not None and job.result is not None:
        rows = job.result
        changed = sum(r["changed"] for r in rows)
        without = sum(r["correct without"] for r in rows) / len(rows)
        with_ = sum(r["correct with"] for r in rows) / len(rows)
        st.markdown(f"Clamping changes **{changed} of {len(rows)}** forget answers; forget "
                    f"accuracy {without:.0%} without, {with_:.0%} with the clamp.")
        st.dataframe(rows, hide_index=True, key="sae.clamped")


def render() -> None:
    ctx = common.context()
    st.title("SAE features")
    st.caption("Sparse-autoencoder features that fire on the forget facts but (almost) never on "
               "the retain facts, and what clamping them does to the answers.")
    spec, picked = common.model_and_facts("sae", ctx)
    source, path, train = sae_form()
    c1, c2 = st.columns(2)
    top = int(c1.number_input("Forget features to rank", 1, 500, 20, key="sae.top"))
    rate = float(c2.number_input("Maximum share of retain tokens a feature fires on", 0.0, 1.0,
                                 0.01, 0.01, key="sae.max_retain"))
    ready = spec is not None and picked is not None and bool(path or train)
    if st.button("Find the forget features", type="primary", disabled=not ready, key="sae.run"):
        jobs.forget(CLAMP)
        jobs.start(JOB, "SAE features", lambda: find(spec, picked[0], source, path, train, top,
                                                     rate))
    job = jobs.follow(JOB)
    if job is not None and job.result is not None:
        show(job.result)


render()
