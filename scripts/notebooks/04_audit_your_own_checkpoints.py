"""Source of notebooks/04_audit_your_own_checkpoints.ipynb (scripts/make_notebooks.py)."""

# %% [markdown]
# # Audit your own checkpoints
#
# The workbench does not need to have made an edit to audit it. `apps.audit.audit` (the same
# call as `workbench audit` on the command line) takes **any two checkpoints of one
# architecture and tokenizer**, a fact file and, when you have one, a retrain oracle, and writes
# a run directory with a verdict: `removed`, `suppressed`, `not_unlearned` or `damaged`.
#
# Here we make two unlearning checkpoints the way anyone would, with a few lines of plain
# `transformers` and `torch`, starting from the toy world's original model (a 4-block Llama
# trained from scratch on fictitious people; its retrain oracle never saw the forget people):
#
# * **A**: only the *last* block fine-tuned with an unlikelihood loss on the forget facts. Every
#   activation before that block is the original's, so the knowledge is still inside by
#   construction: a suppressor.
# * **B**: the input-embedding rows of the forget people's names set to zero, nothing else.
#
# Then we audit both against the oracle, audit A again without an oracle, read the report, export
# it, and watch a mismatched pair get refused before any work. Everything is written under
# `runs/notebooks/04/`.

# %%
import json
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from apps.audit import audit
from apps.figures import draw
from probes.audit import AuditRun
from probes.verdict import VERDICTS
from workbench.errors import WorkbenchError
from workbench.toyworld import build_toyworld

hf_logging.disable_progress_bar()
T0 = time.perf_counter()
ROOT = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").exists()),
            Path.cwd())
OUT = ROOT / "runs" / "notebooks" / "04"
shutil.rmtree(OUT, ignore_errors=True)  # every execution starts from scratch
OUT.mkdir(parents=True)
torch.manual_seed(0)

world = build_toyworld(seed=0)  # built once (about a minute), then read from the cache
facts = world.facts()
print(world.root)
print({split: len(facts.split(split)) for split in facts.splits()}, "facts per split")

# %% [markdown]
# ## Two checkpoints, made without the workbench
#
# Plain `transformers`: load the original, change it, `save_pretrained`. The toy tokenizer reads
# whole words, so each answer is one token and each person's name is one token.

# %%
tokenizer = AutoTokenizer.from_pretrained(world.original_dir)


def prompts_and_answers(fact_set):
    """Every phrasing of every fact, with the id of its (one-token) answer."""
    rows = [(p, f.answer) for f in fact_set for p in (f.prompt, *f.paraphrases)]
    ids = [tokenizer(p).input_ids for p, _ in rows]
    answers = [tokenizer(p + a).input_ids[len(i)] for (p, a), i in zip(rows, ids)]
    return ids, torch.tensor(answers)


def answer_logprobs(model, ids, answers):
    """log p(answer | prompt) for each prompt, right-padded in one batch."""
    width = max(map(len, ids))
    batch = torch.tensor([i + [0] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    logits = model(input_ids=batch, attention_mask=mask).logits
    last = logits[torch.arange(len(ids)), torch.tensor([len(i) - 1 for i in ids])]
    return torch.log_softmax(last.float(), -1).gather(1, answers[:, None])[:, 0]


forget_ids, forget_answers = prompts_and_answers(facts.forget)
retain_ids, retain_answers = prompts_and_answers(facts.retain)

# A: the last block alone learns to make the forget answers unlikely and keep the retain ones
model_a = AutoModelForCausalLM.from_pretrained(world.original_dir)
model_a.requires_grad_(False)
model_a.model.layers[-1].requires_grad_(True)
opt = torch.optim.Adam([p for p in model_a.parameters() if p.requires_grad], lr=1e-2)
STEPS = 30
for _ in range(STEPS):
    p_forget = answer_logprobs(model_a, forget_ids, forget_answers).exp()
    unlikelihood = -torch.log1p(-p_forget.clamp(max=1 - 1e-6)).mean()
    keep = -answer_logprobs(model_a, retain_ids, retain_answers).mean()
    loss = unlikelihood + 3 * keep
    opt.zero_grad()
    loss.backward()
    opt.step()
print(f"A: unlikelihood {unlikelihood.item():.4f}, retain loss {keep.item():.4f} after "
      f"{STEPS} steps")
dir_a = OUT / "checkpoint_a_last_block_unlikelihood"
model_a.save_pretrained(dir_a)
tokenizer.save_pretrained(dir_a)

# B: the forget people's names lose their input embedding rows
model_b = AutoModelForCausalLM.from_pretrained(world.original_dir)
names = sorted({f.entity for f in facts.forget})
name_ids = [tokenizer(n, add_special_tokens=False).input_ids for n in names]
assert all(len(i) == 1 for i in name_ids)  # one token per name
name_ids = [i[0] for i in name_ids]
with torch.no_grad():
    model_b.get_input_embeddings().weight[name_ids] = 0.0
dir_b = OUT / "checkpoint_b_name_rows_zeroed"
model_b.save_pretrained(dir_b)
tokenizer.save_pretrained(dir_b)
print(f"B: zeroed the embedding rows of {len(names)} names, e.g. {names[:3]}")

# %% [markdown]
# ## Audit A against the retrain oracle
#
# `tier="full"` runs every analysis module: behaviour under pressure, logit lens, linear probes,
# clusters, the unlearning signal, activation and attribution patching, parameter restoration,
# and the recovery attacks (relearning, quantization, directional ablation, in-context
# recovery, membership). The specs are plain paths: this is exactly
# `workbench audit --original ... --edited ... --oracle ... --facts ... --tier full`.

# %%
run_a = audit(str(world.original_dir), str(dir_a), str(world.facts_path), OUT / "audit_a",
              oracle=str(world.oracle_dir), tier="full", progress=False)
print("A verdict:", run_a.verdict.verdict)
print(run_a.verdict.summary)
print("accuracy per split:", json.dumps(run_a.report["behaviour"]))

# %% [markdown]
# The verdict card lives in `report.json` (and, drawn, in `report.html`): what was found, how
# sure, what evidence pushed the score which way, and what would change it.

# %%
r = run_a.report
print(f"verdict {r['verdict']}: removal score {r['removal_score']:.2f}, "
      f"confidence {r['confidence']:.2f}")
print("would change it:", r["would_change"])
for e in r["evidence"][:5]:
    print(f"  {e['finding']:22s} {e['reading']:22s} {e['figure']} = {e['value']:.3g}  "
          f"push {e['push']:+.2f}")

# %% [markdown]
# The finding with the largest push, drawn from its saved arrays (no model needed):

# %%
top = r["evidence"][0]["finding"]
draw(run_a.findings[top]).show()

# %% [markdown]
# ## A again, without an oracle
#
# Most people auditing their own checkpoints have no retrain oracle. The audit still runs; the
# attacks compare M1 with a weaker floor (M0 on people it never saw), and the verdict says what
# was unavailable and lowers its confidence.

# %%
run_a_alone = audit(str(world.original_dir), str(dir_a), str(world.facts_path),
                    OUT / "audit_a_no_oracle", tier="full", progress=False)
print("A without an oracle:", run_a_alone.verdict.verdict,
      f"(confidence {run_a_alone.verdict.confidence:.2f}, with the oracle "
      f"{run_a.verdict.confidence:.2f})")
for line in run_a_alone.verdict.unavailable:
    print("  unavailable:", line)

# %% [markdown]
# ## Audit B against the retrain oracle

# %%
run_b = audit(str(world.original_dir), str(dir_b), str(world.facts_path), OUT / "audit_b",
              oracle=str(world.oracle_dir), tier="full", progress=False)
print("B verdict:", run_b.verdict.verdict)
print(run_b.verdict.summary)
restoration = run_b.findings["parameter_restoration"]
print("parameter restoration:", restoration.reading, "-", restoration.reason)

# %% [markdown]
# Read B's verdict with care. Zeroing the name rows throws away the one thing that says *who* a
# prompt is about: the toy model moves a person's identity out of the name's embedding row in
# its first block, and nothing later can look the person up without it. Everything the model
# stored *about* the forget people is still in its blocks, though: putting M0's embedding rows
# back restores every answer, and parameter restoration says so ("the way in was cut"). The
# other modules see no trace of the names inside the blocks, just as in a retrain oracle that
# never learned the people. That makes B a hard case for the verdict. Calibration 1 read it
# `removed`: a known blind spot. Calibration 2 (shipped) was fitted on known-truth pools that
# include such name cuts and reads it `suppressed`, but close to the boundary (see the removal
# score and confidence above). Read the restoration figure below beside the label.

# %%
draw(restoration).show()

# %% [markdown]
# ## Read the report, export it, read it back
#
# A run directory is self-contained: `manifest.json`, `findings/*.json`, `behaviour.json`,
# `verdict.json`, `report.json` and a self-contained `report.html`. Copy it, zip it, or keep
# only its JSON; `AuditRun.open` reads any of these back without loading a model.

# %%
html = (run_a.out / "report.html").read_text()
assert "id='verdict'" in html and run_a.verdict.verdict.replace("_", " ").upper() in html
print(sorted(p.name for p in run_a.out.iterdir()))

copied = shutil.copytree(run_a.out, OUT / "exported" / "copy")
archive = shutil.make_archive(str(OUT / "exported" / "audit_a"), "zip", run_a.out)
unzipped = OUT / "exported" / "unzipped"
shutil.unpack_archive(archive, unzipped)
as_json = OUT / "exported" / "audit_a.json"
as_json.write_text(json.dumps(run_a.report, indent=1))

reread = [AuditRun.open(copied), AuditRun.open(unzipped)]
assert all(x.verdict == run_a.verdict for x in reread)
assert json.loads(as_json.read_text())["verdict"] == run_a.verdict.verdict
print("exported and read back:", [x.verdict.verdict for x in reread],
      f"zip {Path(archive).stat().st_size // 1024} KiB")

# %% [markdown]
# ## A mismatched pair is refused before any work
#
# A checkpoint of another architecture (here a 2-block Llama on the same tokenizer) cannot be
# compared with the 4-block original: the audit says so in one line and writes nothing.

# %%
other = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64,
                                     intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2))
dir_c = OUT / "checkpoint_c_other_architecture"
other.save_pretrained(dir_c)
tokenizer.save_pretrained(dir_c)
try:
    audit(str(world.original_dir), str(dir_c), str(world.facts_path), OUT / "audit_c",
          oracle=str(world.oracle_dir), tier="full", progress=False)
    refused = None
except WorkbenchError as e:
    refused = str(e)
print("refused:", refused)
assert refused is not None and "num_hidden_layers" in refused
assert not (OUT / "audit_c").exists()

# %% [markdown]
# ## What this notebook checks

# %%
verdicts = {"A": run_a.verdict.verdict, "A without oracle": run_a_alone.verdict.verdict,
            "B": run_b.verdict.verdict}
assert all(v in VERDICTS for v in verdicts.values())
assert run_a.report["behaviour"]["M1"]["forget"] < run_a.report["behaviour"]["M0"]["forget"]
# A is a suppressor by construction: the audit must never call it removed
assert run_a.verdict.verdict != "removed", run_a.verdict.summary
assert run_a_alone.verdict.verdict != "removed", run_a_alone.verdict.summary
assert any(u.startswith("oracle") for u in run_a_alone.verdict.unavailable)
assert run_a_alone.verdict.confidence <= run_a.verdict.confidence + 1e-9
# B: putting M0's weights back restores the answers (whatever the verdict calls it)
assert restoration.scores["max_recovery"] >= 0.5, restoration.scores
for name, v in verdicts.items():
    print(f"verdict {name}: {v}")
print(f"notebook ran in {time.perf_counter() - T0:.0f} s")
