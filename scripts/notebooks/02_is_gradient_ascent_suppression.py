"""Source of notebooks/02_is_gradient_ascent_suppression.ipynb (scripts/make_notebooks.py)."""

# %% [markdown]
# # Is gradient ascent only suppression?
#
# Fine-tuning unlearning (gradient ascent and its descendants) makes a model stop saying the
# facts to forget. Several papers argue it only hides them: Hong et al. (2024, "Intrinsic
# evaluation of unlearning using parametric knowledge traces") found that patching a few late
# activations of the original model back into the unlearned one restores much of what it had
# "forgotten", and recovery attacks (relearning, quantization, in-context prompts, directional
# ablation) bring answers back.
#
# But restoration and recovery mean little on their own: any model can be pushed to say an
# answer. The question is whether the edit leaves *more* behind than a model that never learned
# the facts. This notebook asks it of the removal-intended operators on both worlds, each
# against its **retrain oracle**:
#
# 1. the toy world: `ga`, `graddiff`, `npo` and `task_vector`, and the oracle itself, each
#    through the full audit (lenses, probes, patching, restoration, the recovery attacks);
# 2. the real-model world: gradient ascent on one person, and Hong et al.'s patch into the
#    unlearned model *and into the oracle*.
#
# Everything is written under `runs/notebooks/02/`.

# %%
import math
import shutil
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from transformers.utils import logging as hf_logging

from apps.audit_demo import demo_facts
from apps.figures import draw
from probes import get_probe
from probes.audit import run_audit
from probes.verdict import VERDICTS
from workbench.behavior import accuracy_by_split
from workbench.operators import get_operator, make_config
from workbench.pretrained_world import build_pretrained_world
from workbench.toyworld import build_toyworld

hf_logging.disable_progress_bar()
T0 = time.perf_counter()
ROOT = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").exists()),
            Path.cwd())
OUT = ROOT / "runs" / "notebooks" / "02"
shutil.rmtree(OUT, ignore_errors=True)  # every execution starts from scratch
OUT.mkdir(parents=True)

# %% [markdown]
# ## 1. The toy world: four removal-intended operators and the oracle
#
# The toy world is a 4-block Llama trained from scratch on 140 fictitious people (forget,
# retain, holdout) and its retrain oracle, trained identically without the 30 forget people.
# Each operator runs with its defaults; then the **full** audit reads each edit against the
# oracle. The oracle is audited too, as if it were an edit: it is removal by construction, so
# whatever the audit says about it is the baseline every operator is measured against.

# %%
toy = build_toyworld(seed=0)
toy_facts = toy.facts()
t_m0, t_oracle = toy.original(), toy.oracle()
OPERATORS = ("ga", "graddiff", "npo", "task_vector")
toy_runs = {}
for op in OPERATORS:
    edit = get_operator(op).apply(t_m0, toy_facts.forget, toy_facts.retain,
                                  make_config(op, {}, seed=0))
    toy_runs[op] = run_audit(t_m0, edit.subject, toy_facts, OUT / f"toy-{op}", oracle=t_oracle,
                             tier="full", progress=False)
    print(f"{op:12s} {toy_runs[op].verdict.verdict}", flush=True)
toy_runs["oracle"] = run_audit(t_m0, t_oracle, toy_facts, OUT / "toy-oracle", oracle=t_oracle,
                               tier="full", progress=False)
print(f"{'oracle':12s} {toy_runs['oracle'].verdict.verdict}")

# %% [markdown]
# ### Behaviour and verdicts
#
# Accuracy per split (greedy answers), and the verdict with its removal score (0 = suppressed,
# 1 = removed) and confidence.

# %%
print(f"{'edit':12s} {'forget':>7s} {'retain':>7s} {'holdout':>8s}  verdict (score, confidence)")
for name, run in toy_runs.items():
    acc, v = run.report["behaviour"]["M1"], run.verdict
    print(f"{name:12s} {acc['forget']:7.0%} {acc['retain']:7.0%} {acc['holdout']:8.0%}  "
          f"{v.verdict} ({v.removal_score:.2f}, {v.confidence:.2f})")

# %% [markdown]
# ### The recovery attacks, against the oracle
#
# Each attack tries to bring the forget answers back: a few steps of fine-tuning on *other*
# forget people (relearning), round-to-nearest weight quantization, projecting out the
# direction the edit added (directional ablation), and a few stated facts in the prompt
# (in-context recovery). Each reports how much of M0's accuracy it recovers; the same attack on
# the oracle is the floor (a model that never learned the people, pushed the same way). What
# counts is the recovery **over the oracle** (a floor below zero counts as zero, as the modules
# themselves read it: an attack that costs the oracle a few lucky guesses proves nothing).

# %%
ATTACKS = {"relearning": ("recovery_over_floor", None),
           "quantization": ("recovery", "floor"),
           "directional_ablation": ("recovery", "floor_recovery"),
           "in_context_recovery": ("recovery", "floor_recovery")}


def over_oracle(run, attack):
    """The attack's recovery in M1 minus the same attack's in the oracle (NaN: not read)."""
    key, floor = ATTACKS[attack]
    scores = run.findings[attack].scores
    value = scores.get(key, math.nan)
    return value - (max(scores.get(floor, 0.0), 0.0) if floor else 0.0)


recovered = {name: {a: over_oracle(run, a) for a in ATTACKS} for name, run in toy_runs.items()}
print(f"{'edit':12s}" + "".join(f"{a:>22s}" for a in ATTACKS))
for name, row in recovered.items():
    print(f"{name:12s}" + "".join(f"{row[a]:22.2f}" for a in ATTACKS))
fig = go.Figure([go.Bar(name=name, x=list(ATTACKS), y=[row[a] for a in ATTACKS])
                 for name, row in recovered.items()])
fig.update_layout(title="Toy world: forget accuracy recovered by each attack, over the oracle",
                  yaxis_title="recovery in M1 minus in the oracle", barmode="group",
                  template="plotly_white", height=380)
fig.show()
worst = max((v, name, a) for name, row in recovered.items() if name != "oracle"
            for a, v in row.items() if not math.isnan(v))
print(f"largest recovery over the oracle: {worst[0]:.2f} ({worst[1]}, {worst[2]})")

# %% [markdown]
# ### Through the lenses: gradient ascent
#
# The logit lens reads the forget answers out of every layer of M0, M1 and the oracle; activation
# patching puts M0's activations into M1 one layer (or window) at a time and measures how much
# of M0's answer comes back, and the Unlearning Depth Score compares that with the oracle
# (1 = erased as deep as the oracle); parameter restoration puts M0's weights back one group at
# a time (a small late group that restores the answers would be a suppressor's signature).

# %%
for module in ("logit_lens", "activation_patching", "parameter_restoration"):
    finding = toy_runs["ga"].findings[module]
    print(f"{module}: {finding.reading} - {finding.reason}")
    draw(finding).show()

# %% [markdown]
# How to read the toy world. Every operator forgets about as well as retraining (forget accuracy
# within a few points of the oracle's) and keeps retain and holdout. The lenses and patching
# find little of the forget answers left inside gradient ascent, and weight attacks
# (quantization, directional ablation) bring back almost nothing the oracle does not give up
# too. Relearning and, above all, in-context recovery are where the edits differ from the
# oracle: a few stated facts in the prompt bring back some forget answers that retraining
# would not. When this notebook was written, `ga`, `graddiff` and `npo` read `removed` with
# modest confidence (the oracle itself 0.94 / 0.88), `task_vector` read `suppressed` at a
# confidence near zero, and in-context recovery brought back up to about 30% of the answers
# more than in the oracle (`npo`). The verdict weighs these attacks against the lenses; its
# removal score and confidence say how close the call is. Note gradient ascent's parameter
# restoration above: on the toy model the gradient operators also train the forget names' own
# embedding rows (`rows=auto`: its embedding is untied), and putting M0's rows back restores
# every answer. The module reads that as a suppression signature ("the way in was cut"); when
# this notebook was written the verdict still read `removed`, because the modules that look
# inside the blocks find the facts gone as deep as the oracle and outweigh it. Notebook 04's
# checkpoint B, which changes *only* those rows, shows how hard that case is for the verdict.
#
# This is a world where the operators' defaults were tuned to forget like the oracle, with
# entity-local updates: the easy case, and the baseline for the real model.

# %% [markdown]
# ## 2. The real-model world: gradient ascent on one person
#
# SmolLM2-135M-Instruct fine-tuned on 60 fictitious people, with its retrain oracle (the same
# fine-tuning without the forget people). `demo_facts` keeps one forget person (4 facts) and a
# few people of every other split. Gradient ascent runs with its defaults, except 100 prose texts
# (instead of 400) for the directions its updates must stay out of, to save time on a CPU.

# %%
world = build_pretrained_world()
facts = demo_facts(world.facts(), people=1)
m0, oracle = world.original(), world.oracle()
ga = get_operator("ga").apply(m0, facts.forget, facts.retain,
                              make_config("ga", {"preserve_texts": 100}, seed=0))
people_acc = {name: {s: r["accuracy"] for s, r in accuracy_by_split(s_, facts).items()}
              for name, s_ in (("M0", m0), ("ga", ga.subject), ("oracle", oracle))}
print("forget person:", sorted({f.entity for f in facts.forget}))
print(f"{'':8s}" + "".join(f"{s:>9s}" for s in facts.splits()))
for name, acc in people_acc.items():
    print(f"{name:8s}" + "".join(f"{acc[s]:9.0%}" for s in facts.splits()))

# %% [markdown]
# ### Hong et al.'s patch, into the unlearned model and into the oracle
#
# Patch M0's MLP outputs into the edited model at the last prompt token, one block at a time and
# three consecutive blocks at a time, and measure how much of M0's answer log-prob comes back
# (0 = the edited model's, 1 = M0's). Then do **exactly the same** into the oracle, which never
# learned the person. If late patches restore the answer in the unlearned model but not in the
# oracle, something of the knowledge was left behind; if they restore it in both, the patch is
# carrying M0's answer in, not finding it in the edited model.

# %%
patching = get_probe("activation_patching")
hong = {name: patching(m0, m1, facts, points=("mlp_out", "resid_post"), window=3)
        for name, m1 in (("ga", ga.subject), ("oracle", oracle))}
n = m0.n_layers
fig = go.Figure()
for name, f in hong.items():
    fig.add_trace(go.Scatter(x=list(range(n)), y=f.arrays["recovery_mlp_out"],
                             mode="lines+markers", name=f"{name}: one MLP"))
    win = f.arrays["recovery_window3_mlp_out"]
    fig.add_trace(go.Scatter(x=list(range(len(win))), y=win, mode="lines", line_dash="dash",
                             name=f"{name}: 3 MLPs from this block"))
fig.update_layout(title="M0's MLP outputs patched in: recovery of the forget answers",
                  xaxis_title="block", yaxis_title="recovery (0 = edited, 1 = M0)",
                  template="plotly_white", height=400)
fig.show()

# %%
MARGIN = 0.2  # how much more the patch must restore in the edit than in the oracle


def late_mlps(f):
    """Recovery when M0's last three MLP outputs are patched in."""
    return float(f.arrays["recovery_window3_mlp_out"][-1])


def holds(recovery, oracle_recovery):
    """Hong et al.'s reading: late patches restore the answer (>= 50%), and clearly more than
    the same patches restore in a model that never learned it."""
    return recovery >= 0.5 and recovery - oracle_recovery >= MARGIN


hong_rows = {"ga": (late_mlps(hong["ga"]), late_mlps(hong["oracle"])),
             "oracle": (late_mlps(hong["oracle"]), late_mlps(hong["oracle"]))}
print(f"{'edit':8s} {'last 3 MLPs':>12s} {'same in oracle':>15s}  claim")
for name, (rec, floor) in hong_rows.items():
    print(f"{name:8s} {rec:12.0%} {floor:15.0%}  "
          f"{'holds' if holds(rec, floor) else 'does not hold'}")
ga_rec, oracle_rec = hong_rows["ga"]
print(f"\nPatching the last three MLP outputs of M0 restores {ga_rec:.0%} of the answer into the "
      f"GA model and {oracle_rec:.0%} into the oracle: Hong et al.'s claim "
      f"{'holds' if holds(ga_rec, oracle_rec) else 'does not hold'} against the oracle here.")

# %% [markdown]
# (Only the real model is asked this: the toy model has four blocks, so "a few late MLPs" would
# be most of it.)
#
# What the figure shows on the real model: M0's late MLP outputs restore much of the answer into
# the gradient-ascent model, as Hong et al. found, but they restore about as much into the
# oracle, which never learned the person at all (when this notebook was written: 67% into the
# gradient-ascent model, 75% into the oracle). The late MLPs write M0's *answer* into the
# residual stream at the last token; patching them in hands the edited model M0's conclusion,
# whether or not the model it lands in knows anything about the person. So on this world,
# late-activation restoration is not evidence that gradient ascent left the knowledge behind.
# The residual-stream patches say the same from another angle: patching M0's residual at a
# late block restores the answer in both models alike, while earlier blocks, where the person
# is looked up, restore little in either. That is why the audit reads patching through the
# Unlearning Depth Score, which asks how far M1's activations differ from M0's *compared with
# the oracle's*, and never reads raw late restoration as suppression.

# %%
resid = go.Figure([go.Scatter(x=list(range(n)), y=f.arrays["recovery_resid_post"],
                              mode="lines+markers", name=name) for name, f in hong.items()])
resid.update_layout(title="M0's residual stream patched in at one block: recovery",
                    xaxis_title="block", yaxis_title="recovery (0 = edited, 1 = M0)",
                    template="plotly_white", height=360)
resid.show()

# %% [markdown]
# ## What this notebook checks

# %%
oracle_forget = toy_runs["oracle"].report["behaviour"]["M1"]["forget"]
assert all(run.verdict.verdict in VERDICTS for run in toy_runs.values())
assert toy_runs["oracle"].verdict.verdict == "removed", toy_runs["oracle"].verdict.summary
for op in OPERATORS:  # every operator forgets about as well as retraining
    assert abs(toy_runs[op].report["behaviour"]["M1"]["forget"] - oracle_forget) <= 0.15, op
assert not holds(*hong_rows["oracle"])
assert people_acc["ga"]["forget"] < people_acc["M0"]["forget"]
assert all(np.isfinite(late_mlps(f)) for f in hong.values())
for name, run in toy_runs.items():
    print(f"verdict toy {name}: {run.verdict.verdict}")
print(f"notebook ran in {time.perf_counter() - T0:.0f} s")
