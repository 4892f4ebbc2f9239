"""The unlearning pipeline (`workbench unlearn`): load, apply a chain of operators, evaluate
before and after, save the edit. It prints nothing; the CLI, the app and notebooks render."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workbench.behavior import accuracy_by_split
from workbench.entities import with_entities
from workbench.errors import WorkbenchError
from workbench.facts import load_facts
from workbench.models import Subject, load_subject
from workbench.operators import Operator, OperatorConfig, get_operator, make_config
from workbench.operators.training import check_layers
from workbench.progress import report


def split_overrides(names: Sequence[str], sets: Sequence[str]) -> list[list[str]]:
    """Route `key=value` to the first operator and `NAME.key=value` to each operator NAME."""
    per: list[list[str]] = [[] for _ in names]
    for item in sets:
        key = item.split("=", 1)[0]
        if "." in key and key.split(".", 1)[0] in names:
            op, rest = item.split(".", 1)
            for i, n in enumerate(names):
                if n == op:
                    per[i].append(rest)
        else:
            per[0].append(item)
    return per


def _check_out(out_dir: Path, model: str, facts: str) -> None:
    target = out_dir.expanduser().resolve()
    for src in (model, facts):
        p = Path(src).expanduser()
        if p.exists() and (p.resolve() == target or p.resolve() in target.parents):
            raise WorkbenchError(f"refusing to write the edit into the input {src!r}; "
                                 f"choose another --out")


def run_unlearn(model: str, facts: str, names: Sequence[str], out_dir: Path,
                sets: Sequence[str] = (), seed: int | None = None, device: str | None = None,
                generate: bool = True,
                on_operator: Callable[[Operator, Subject], None] | None = None,
                configs: Sequence[OperatorConfig] | None = None,
                subject: Subject | None = None) -> dict[str, Any]:
    """Check every input up front, apply the operators `names` in order (sequential unlearning),
    score accuracy per split before and after, save the edit to `out_dir`; return its edit.json.

    `sets` are `key=value` overrides (`NAME.key=value` for a later operator); `configs`, if
    given, are the operators' configs already built (the app's forms; `sets` and `seed` are then
    not read). `subject`, if given, is `model` already loaded (it is not modified).
    `on_operator`, if given, is called before each operator runs, with the operator and the
    subject it edits; stages are reported to `workbench.progress` listeners."""
    names = list(names)
    _check_out(out_dir, model, facts)
    fs, inferred = with_entities(load_facts(facts))  # operators that read entities find them
    forget, retain = fs.forget, fs.retain
    if len(forget) == 0:
        raise WorkbenchError(f"{facts}: the forget split is empty; nothing to unlearn")
    ops = [get_operator(n) for n in names]
    if configs is None:
        configs = [make_config(n, s, seed=seed)
                   for n, s in zip(names, split_overrides(names, sets), strict=True)]
    elif len(configs) != len(ops):
        raise WorkbenchError(f"{len(configs)} configs for {len(ops)} operators")
    subject = subject if subject is not None else load_subject(model, device=device)
    for cfg in configs:
        if getattr(cfg, "layers", None) is not None:
            check_layers(subject, cfg.layers)
    total = len(ops) + 3  # evaluate before, each operator, evaluate after, save
    report("unlearn", 0, total, running="accuracy before")
    t0 = time.perf_counter()
    before = accuracy_by_split(subject, fs, generate=generate)
    eval_s = time.perf_counter() - t0
    current, edit = subject, None
    for i, (op, cfg) in enumerate(zip(ops, configs, strict=True)):
        report("unlearn", i + 1, total, running=op.name)
        if on_operator is not None:
            on_operator(op, current)
        edit = op.apply(current, forget, retain, cfg)
        current = edit.subject
    report("unlearn", len(ops) + 1, total, running="accuracy after")
    t0 = time.perf_counter()
    after = accuracy_by_split(current, fs, generate=generate)
    eval_s += time.perf_counter() - t0
    edit.timings["eval_s"] = round(eval_s, 3)
    edit.timings["chain_total_s"] = round(sum(c["timings"].get("total_s", 0.0)
                                              for c in edit.chain), 3)
    edit.metrics.update({"before": before, "after": after, "facts": str(facts),
                         "model": model, "entities_inferred": inferred})
    report("unlearn", total - 1, total, running="save")
    edit.save(out_dir)
    report("unlearn", total, total)
    return json.loads((Path(out_dir) / "edit.json").read_text())
