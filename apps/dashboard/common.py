"""What every dashboard page shares: the sidebar (runs folder, active world), the model and fact
pickers, the operator config form, the model cache and the one-line error display.

Pages call library functions only; the science lives in `workbench`, `probes` and `saes`. A
model spec or a fact file a user types is handed to the library's loaders (`load_subject`,
`load_facts`), never to a shell or a pickle loader; an upload is saved under the runs folder.
"""

from __future__ import annotations

import hashlib
import re
import sys
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from apps.dashboard import jobs, listing

if TYPE_CHECKING:
    from workbench.facts import FactSet
    from workbench.models import Subject
    from workbench.worlds import World

BUNDLED = "smollm2-135m"
WORLDS = ("none", "toy world", "people world")
MODEL_CHOICES = ("bundled smollm2-135m", "world original", "world oracle", "saved edit",
                 "path or hub id")
FACT_CHOICES = ("built-in smollm2", "world facts", "file path", "upload")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class Context:
    """What the sidebar chose: where runs are written and read, and the active world."""

    runs: Path
    world_name: str
    world: World | None


_CURRENT: ContextVar[Context | None] = ContextVar("dashboard_context", default=None)


def runs_from_argv(argv: list[str]) -> str:
    """The `--runs DIR` the app was started with (`streamlit run app.py -- --runs DIR`)."""
    for i, a in enumerate(argv):
        if a == "--runs" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--runs="):
            return a.split("=", 1)[1]
    return "runs"


def _default(key: str, value: Any) -> None:
    if key not in st.session_state:
        st.session_state[key] = value


def world_root(name: str, seed: int) -> tuple[Path, str]:
    """Where the world `name` of `seed` is cached and the hash of its config (no build)."""
    if name == "toy world":
        from workbench.toyworld import WorldConfig, default_root

        cfg = WorldConfig(seed=seed)
        return default_root(cfg), cfg.hash()
    from workbench.pretrained_world import PeopleConfig
    from workbench.pretrained_world import default_root as people_root

    people = PeopleConfig(seed=seed)
    return people_root(people), people.hash()


def _build_world(name: str, seed: int) -> Path:
    from workbench.pretrained_world import PeopleConfig
    from workbench.worlds import TOY, build_world

    base = TOY if name == "toy world" else PeopleConfig.base  # the people world's default base
    return build_world(base, seed=seed, progress=False).root


# keys of widgets whose value cannot be set through st.session_state (buttons, uploads, chart
# selections): the pages name them with these endings
_ACTIONS = (".run", ".open", ".patch", ".clamp", ".upload", ".grid", "build_world")
_KEPT = "kept_widget_values"


def keep_widget_values(page: str) -> None:
    """Streamlit drops the values of the widgets a run does not draw (another page's) before
    the run starts. Called first in every run, this notes the values of the widgets drawn (the
    browser sends them with each run) and gives back those of `page` (the prefix of the keys
    of the page drawn now) that were dropped, so every page's form stays as the user left it.
    They must be given back in the run that draws them: the browser shows a value set through
    st.session_state only then."""
    kept = st.session_state.setdefault(_KEPT, {})
    kept.update({k: v for k, v in st.session_state.items()
                 if "." in k and not k.endswith(_ACTIONS) and not k.startswith("job:")})
    for k, v in kept.items():
        if k.startswith(page) and k not in st.session_state:
            st.session_state[k] = v


def sidebar() -> Context:
    """Draw the sidebar (the entry point draws it once for every page) and return its choice."""
    from workbench.worlds import World, is_complete

    _default("runs", runs_from_argv(sys.argv))
    _default("world", "none")
    _default("world_seed", 0)
    bar = st.sidebar
    bar.text_input("Runs folder", key="runs",
                   help="where edits, audits and uploads are written, and what Runs lists")
    bar.radio("Active world", WORLDS, key="world",
              help="a world has facts, an original model and its retrain oracle; the pickers "
                   "offer them")
    name, world = st.session_state["world"], None
    if name != "none":
        bar.number_input("World seed", min_value=0, step=1, key="world_seed")
        seed = int(st.session_state["world_seed"])
        root, config_hash = world_root(name, seed)
        if is_complete(root, config_hash):
            world = World.at(root)
            bar.caption(f"{name} (seed {seed}): {root}")
        else:
            took = "a couple of minutes" if name == "toy world" else "about 10 minutes"
            bar.info(f"The {name} (seed {seed}) is not built yet ({took} on a CPU; cached).")
            if bar.button("Build it", key="build_world"):
                jobs.start("world", f"building the {name}", lambda: _build_world(name, seed))
            with bar:
                done = jobs.follow("world")
            if done is not None and done.result is not None:
                world = World.at(done.result)
    return Context(Path(st.session_state["runs"]).expanduser(), name, world)


@contextmanager
def using(ctx: Context) -> Iterator[None]:
    """While a page runs under the entry point, `context()` returns the sidebar's choice."""
    token = _CURRENT.set(ctx)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def context() -> Context:
    """The sidebar's choice: the entry point's, or (a page run on its own) drawn here."""
    ctx = _CURRENT.get()
    return ctx if ctx is not None else sidebar()


# ----- models and facts ----------------------------------------------------------------------

@st.cache_resource(show_spinner=False, max_entries=8)
def load_model(spec: str) -> Subject:
    """A model spec loaded once per process (shared by every session; never modified: operators
    edit copies)."""
    from workbench.models import load_subject

    return load_subject(spec)


def model_picker(key: str, ctx: Context, label: str = "Model", default: str = "original",
                 optional: bool = False) -> str | None:
    """A model spec: the bundled model, the active world's original or oracle, a saved edit under
    the runs folder, or a typed path / hub id (None: `optional` and none chosen)."""
    choices = (("none",) if optional else ()) + MODEL_CHOICES
    want = {"original": "world original", "oracle": "world oracle", "edit": "saved edit",
            "none": "none"}.get(default, MODEL_CHOICES[0])
    if ctx.world is None and want.startswith("world"):
        want = "none" if optional else MODEL_CHOICES[0]
    wkey = f"{key}.source.{ctx.world_name}"  # a new world gives the picker new defaults
    _default(wkey, want)
    kind = st.radio(label, choices, key=wkey, horizontal=True)
    if kind == "none":
        return None
    if kind == "bundled smollm2-135m":
        return BUNDLED
    if kind in ("world original", "world oracle"):
        if ctx.world is None:
            st.warning("No active world: choose one in the sidebar.")
            return None
        return str(ctx.world.original_dir if kind == "world original" else ctx.world.oracle_dir)
    if kind == "saved edit":
        edits = listing.dirs_with(ctx.runs, "edit.json")
        if not edits:
            st.warning(f"No saved edit under {ctx.runs} yet (the Unlearn page saves them).")
            return None
        return str(st.selectbox(f"{label}: saved edit", edits, key=f"{key}.edit",
                                format_func=lambda p: str(p.relative_to(ctx.runs))))
    text = st.text_input(f"{label}: checkpoint directory, .gguf file, saved edit or hub id",
                         key=f"{key}.path")
    return text.strip() or None


def save_upload(runs: Path, name: str, data: bytes) -> Path:
    """An uploaded fact file saved atomically under `runs/uploads/<content hash>/<name>`."""
    from workbench.atomic import write_text

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(name).name) or "facts.jsonl"
    digest = hashlib.sha256(data).hexdigest()[:12]
    return write_text(runs / "uploads" / digest / safe, data.decode("utf-8", errors="replace"))


def facts_picker(key: str, ctx: Context, default: str = "world") -> tuple[str, FactSet] | None:
    """A fact set: the built-in real facts, the active world's, a file path, or an upload. A
    file that does not validate shows its error (file and line) and gives None."""
    from workbench.facts import load_facts

    want = "world facts" if default == "world" and ctx.world is not None else FACT_CHOICES[0]
    wkey = f"{key}.facts.{ctx.world_name}"
    _default(wkey, want)
    kind = st.radio("Facts", FACT_CHOICES, key=wkey, horizontal=True)
    spec: str | None = None
    if kind == "built-in smollm2":
        spec = "smollm2"
    elif kind == "world facts":
        if ctx.world is None:
            st.warning("No active world: choose one in the sidebar.")
            return None
        spec = str(ctx.world.facts_path)
    elif kind == "file path":
        spec = st.text_input("Fact file (JSONL)", key=f"{key}.facts_path").strip() or None
    else:
        up = st.file_uploader("Fact file (JSONL)", type=["jsonl", "txt"], key=f"{key}.upload")
        if up is not None:
            spec = str(save_upload(ctx.runs, up.name, up.getvalue()))
    if spec is None:
        return None
    try:
        fs = load_facts(spec)
    except Exception as e:
        st.error(jobs.error_text(e))
        return None
    st.caption(f"{fs.name}: {len(fs)} facts (" + ", ".join(
        f"{s} {len(fs.split(s))}" for s in fs.splits()) + ")")
    return spec, fs


def model_and_facts(key: str, ctx: Context, default: str = "original"
                    ) -> tuple[str | None, tuple[str, FactSet] | None]:
    """The picker block of the pages that read one model on one fact set."""
    model = model_picker(key, ctx, "Model", default)
    return model, facts_picker(key, ctx)


def run_name(key: str, prefix: str) -> str | None:
    """A folder name for a new run (letters, digits, `_.-`), or None with an error shown."""
    import time

    _default(f"{key}.name", f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")
    name = st.text_input("Save as", key=f"{key}.name").strip()
    if not _NAME.match(name):
        st.error(f"{name!r} is not a folder name: use letters, digits, '_', '.' and '-'")
        return None
    return name


# ----- operator configs ----------------------------------------------------------------------

def _as_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return str(value)


def _step(value: float) -> float:
    import math

    return 10.0 ** math.floor(math.log10(abs(value))) if value else 0.01


def config_form(operator: str, key: str) -> dict[str, Any]:
    """One widget per config field of `operator` (its `workbench.options` field specs): choices
    as a select box, booleans as a checkbox, numbers with their bounds, tuples and optional
    values as text (read like `--set`). Returns the raw values for `make_config`, which checks
    them; the docs are the widgets' help."""
    from workbench.operators import get_operator
    from workbench.options import field_specs

    cls = get_operator(operator).config_cls
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    specs = field_specs(cls)
    cols = st.columns(3)
    for i, spec in enumerate(specs):
        col = cols[i % 3]  # fields fill three columns, row by row
        k, bounds = f"{key}.{operator}.{spec.name}", dict(spec.bounds)
        optional = type(None) in typing.get_args(hints[spec.name])
        if spec.choices is not None:
            options = [*spec.choices, *([None] if optional else [])]
            values[spec.name] = col.selectbox(spec.name, options, key=k, help=spec.doc,
                                              index=options.index(spec.default),
                                              format_func=_as_text)
        elif spec.type == "bool":
            values[spec.name] = col.checkbox(spec.name, value=bool(spec.default), key=k,
                                             help=spec.doc)
        elif spec.type == "int":
            values[spec.name] = int(col.number_input(
                spec.name, value=int(spec.default), step=1, key=k, help=spec.doc,
                min_value=int(bounds[">="]) if ">=" in bounds else None,
                max_value=int(bounds["<="]) if "<=" in bounds else None))
        elif spec.type == "float":
            values[spec.name] = float(col.number_input(
                spec.name, value=float(spec.default), step=_step(spec.default), format="%g",
                key=k, help=spec.doc, min_value=float(bounds[">="]) if ">=" in bounds else None,
                max_value=float(bounds["<="]) if "<=" in bounds else None))
        else:  # tuples, optionals, strings: text read by `workbench.options.parse_value`
            values[spec.name] = col.text_input(f"{spec.name} ({spec.type})",
                                               value=_as_text(spec.default), key=k,
                                               help=spec.doc)
    return values


def operators_by_family() -> dict[str, list[str]]:
    """Operator names grouped by what they are meant to do (the registry says)."""
    from workbench.operators import OPERATORS

    out: dict[str, list[str]] = {"removal-intended": [], "suppression-intended": []}
    for name, cls in sorted(OPERATORS.items()):
        out.setdefault(cls.family, []).append(name)
    return out


def operator_picker(key: str) -> str:
    """An operator, chosen within its family."""
    groups = operators_by_family()
    family = st.radio("Intent", list(groups), key=f"{key}.family", horizontal=True,
                      help="removal-intended operators aim to erase the facts from the weights; "
                           "suppression-intended ones to stop the model saying them")
    return str(st.selectbox("Operator", groups[family], key=f"{key}.operator.{family}"))


# ----- results -------------------------------------------------------------------------------

def verdict_card(report: dict[str, Any]) -> None:
    """The verdict card of a run's report document, as `report.html` shows it."""
    from apps.report import CARD_STYLE, card_html

    st.html(f"<style>{CARD_STYLE}</style>{card_html(report)}")
