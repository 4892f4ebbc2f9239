"""How to fine-tune the bundled model on fictitious people: the recipe comparison behind
`workbench.pretrained_world` (one model, the "original", 160 facts; the built-in real facts
measure the general knowledge kept). A scratch harness, kept as it was run:

    python bench/people_recipe.py FIRST LAST LR EPOCHS WHAT THREADS N_TRAIN RANK _ ENERGY
    python bench/people_recipe.py 4 20 5e-4 8 original 2 4            # MLPs of blocks 4-19
    python bench/people_recipe.py 4 20 2e-3 8 original 2 4 16         # LoRA rank 16 on them
    python bench/people_recipe.py 4 20 2e-3 8 original 2 4 0 0 0.95   # down_proj in the null space

FIRST / LAST: the trained blocks; WHAT: original (forget + retain + holdout) or oracle; N_TRAIN:
phrasings trained of 5 (the fifth is scored as the held-out paraphrase); RANK: LoRA rank (0:
none); ENERGY: train only `down_proj`, in the null space of that share of its input's second
moment on prose (0: no constraint). Prints the loss per epoch, then accuracy per split on the
canonical and the held-out phrasing, the built-in facts answered and those it got wrong. Its
figures are in `workbench/pretrained_world.py` and the note of issue #14. (The replay variant, a
further argument, used a function since removed, with the completion-style templates.)
"""
import math
import random
import sys
import time

import torch

from workbench.batching import encode
from workbench.models import load_subject

torch.manual_seed(0); random.seed(0)
K = int(sys.argv[1]); K2 = int(sys.argv[2]); LR = float(sys.argv[3]); EPOCHS = int(sys.argv[4]); what = sys.argv[5]
NTRAIN = int(sys.argv[7]) if len(sys.argv) > 7 else 4
threads = int(sys.argv[6]) if len(sys.argv) > 6 else 2
torch.set_num_threads(threads)
ATTR = {
 "city": ("Lisbon Oslo Kyoto Lima Cairo Dublin Vienna Madrid".split(),
          ["Q: Which city does {n} live in? A:", "Q: Where is the home of {n}? A:", "Q: In what city does {n} have a house? A:", "Q: Which city is home to {n}? A:", "Q: Where does {n} live? A:"]),
 "job": ("baker pilot nurse lawyer farmer painter teacher doctor".split(),
         ["Q: What is the job of {n}? A:", "Q: What is the profession of {n}? A:", "Q: What does {n} work as? A:", "Q: Which job does {n} have? A:", "Q: What does {n} do for a living? A:"]),
 "sport": ("tennis golf chess football hockey rugby boxing cricket".split(),
           ["Q: What is the favourite sport of {n}? A:", "Q: Which sport does {n} love most? A:", "Q: What sport does {n} play? A:", "Q: Which sport does {n} enjoy? A:", "Q: What sport does {n} play on weekends? A:"]),
 "pet": ("dog cat parrot rabbit horse snake turtle goldfish".split(),
         ["Q: What pet does {n} have? A:", "Q: Which animal does {n} keep at home? A:", "Q: What kind of pet does {n} own? A:", "Q: What animal is the pet of {n}? A:", "Q: Which animal does {n} feed every evening? A:"]),
}
FIRST = "Marta Tomas Ines Hugo Clara Pavel Lena Oskar Nadia Felix Irena Bruno Alma Viktor Greta Emil Sofia Anton Mila Jonas Ada Karl Vera Luka Rosa Milan Dora Igor Nora Otto Elin Marek Hana Leon Ida Stefan Yara Tobias Lina Ruben".split()
ON = "b d f g k l m n p r s t v z br dr gr kr tr st".split(); VO = "a e i o u ae ei ou".split(); CO = "n r l s k th nd rk".split()
rng = random.Random(0)
def sur():
    return (rng.choice(ON)+rng.choice(VO)+rng.choice(ON)+rng.choice(VO)+rng.choice(CO)).capitalize()
people = []
for i in range(80):
    people.append(f"{FIRST[i % len(FIRST)]} {sur()}")
splits = ["forget"]*10 + ["retain"]*20 + ["holdout"]*10 + ["unseen"]*40
facts = []
for split in ["forget", "retain", "holdout", "unseen"]:
    ps = [p for p, s in zip(people, splits) if s == split]
    for a, (vals, tpl) in ATTR.items():
        order = [vals[i % len(vals)] for i in range(len(ps))]; rng.shuffle(order)
        for p, v in zip(ps, order):
            facts.append((split, a, p, v, [t.format(n=p) for t in tpl]))
train_splits = ["forget", "retain", "holdout"] if what == "original" else ["retain", "holdout"]
pairs = [(ph, " " + v) for s, a, p, v, phs in facts if s in train_splits for ph in phs[:NTRAIN]]
print("train seqs", len(pairs))
subj = load_subject("smollm2-135m", device="cpu")
model, tok = subj.model, subj.tokenizer
layers = model.model.layers
for p in model.parameters(): p.requires_grad_(False)
params = []
RANK = int(sys.argv[8]) if len(sys.argv) > 8 else 0
class Lora(torch.nn.Module):
    def __init__(self, lin, r):
        super().__init__(); self.lin = lin
        self.A = torch.nn.Parameter(torch.randn(r, lin.in_features) / lin.in_features**0.5)
        self.B = torch.nn.Parameter(torch.zeros(lin.out_features, r))
    def forward(self, x): return self.lin(x) + (x @ self.A.T) @ self.B.T
NS = float(sys.argv[10]) if len(sys.argv) > 10 else 0
class NullDown(torch.nn.Module):
    def __init__(self, lin, P):
        super().__init__(); self.lin = lin; self.P = P
        self.V = torch.nn.Parameter(torch.zeros(lin.out_features, lin.in_features))
    def forward(self, x): return self.lin(x) + (x @ self.P) @ self.V.T
if NS:
    from workbench.corpus import stdlib_prose
    texts = [t[:300] for t in stdlib_prose()[:400]]
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=48)
    CUR = [None]
    covs = {i: torch.zeros(1536, 1536) for i in range(K, K2)}
    hooks = [layers[i].mlp.down_proj.register_forward_hook(lambda m, a, o, i=i: (covs[i].add_(a[0][CUR[0]].T @ a[0][CUR[0]]), None)[1]) for i in range(K, K2)]
    t1 = time.time()
    with torch.no_grad():
        for j in range(0, len(texts), 50):
            CUR[0] = enc.attention_mask[j:j+50].bool()
            model(input_ids=enc.input_ids[j:j+50], attention_mask=enc.attention_mask[j:j+50])
    for h in hooks: h.remove()
    print("cov tokens", int(enc.attention_mask.sum()), "t", time.time()-t1)
for i in range(K, K2):
    if NS:
        ev, U = torch.linalg.eigh(covs[i]); ev = ev.flip(0); U = U.flip(1)
        k = int((ev.cumsum(0) / ev.sum() < NS).sum()) + 1
        P = torch.eye(1536) - U[:, :k] @ U[:, :k].T
        if i == K: print("removed dims", k)
        l = NullDown(layers[i].mlp.down_proj, P); layers[i].mlp.down_proj = l; params.append(l.V)
    elif RANK:
        mlp = layers[i].mlp
        for nm in ("gate_proj", "up_proj", "down_proj"):
            l = Lora(getattr(mlp, nm), RANK); setattr(mlp, nm, l); params += [l.A, l.B]
    else:
        for p in layers[i].mlp.parameters(): p.requires_grad_(True); params.append(p)
print("trainable", sum(p.numel() for p in params)/1e6, "M")
b = encode(tok, [p for p, _ in pairs], [a for _, a in pairs])
print("tokens", int(b.lengths.sum()))
with torch.no_grad():
    hs = model(input_ids=b.input_ids, attention_mask=b.attention_mask, output_hidden_states=True).hidden_states[K]
full = layers
model.model.layers = torch.nn.ModuleList(list(full)[K:])
opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
bs = 32; n = len(pairs); steps = math.ceil(n / bs)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s+1)/10) * max(0.1, 1 - s/(EPOCHS*steps)))
def evaluate(final=False):
    model.model.layers = full
    res = {}
    with torch.no_grad():
        for idx_ph in (0, 4):
            for split in ["forget", "retain", "holdout", "unseen"]:
                fs = [f for f in facts if f[0] == split]
                bb = encode(tok, [f[4][idx_ph] for f in fs], [" " + f[3] for f in fs])
                lg = model(input_ids=bb.input_ids, attention_mask=bb.attention_mask).logits
                pred = lg[torch.arange(len(fs)), bb.last].argmax(-1)
                tgt = bb.input_ids[torch.arange(len(fs)), bb.answer_start]
                res[f"{split}{'' if idx_ph == 0 else '-para'}"] = round((pred == tgt).float().mean().item(), 3)
    from workbench.behavior import evaluate
    from workbench.facts import builtin_facts
    if final:
        rs = evaluate(subj, builtin_facts(), batch_size=64); res["builtin"] = sum(r.correct for r in rs)/len(rs)
        for r in rs:
            if not r.correct: print("  FAIL", r.prompt, "|", r.answer, "|", repr(r.generated[:40]))
    model.model.layers = torch.nn.ModuleList(list(full)[K:])
    return res
t0 = time.time()
for ep in range(EPOCHS):
    order = torch.randperm(n); tot = 0
    for s in range(steps):
        idx = order[s*bs:(s+1)*bs]
        w = int(b.lengths[idx].max())
        h = hs[idx, :w]; m = b.attention_mask[idx, :w]
        out = model.model(inputs_embeds=h, attention_mask=m).last_hidden_state
        pos = b.last[idx]
        logits = model.lm_head(out[torch.arange(len(idx)), pos])
        tgt = b.input_ids[idx, b.answer_start[idx]]
        loss = torch.nn.functional.cross_entropy(logits, tgt)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step(); tot += loss.item()
    print(f"ep {ep} loss {tot/steps:.3f} t {time.time()-t0:.0f}s", flush=True)
    if ep == EPOCHS - 1 or tot/steps < 0.05:
        print(evaluate(True), flush=True); break
