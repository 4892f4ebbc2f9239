"""Where each family of HF causal LMs keeps its decoder blocks and final norm.

One registered `Layout` per module-tree layout (not per `model_type`: Llama, Mistral, Qwen and
Gemma share one). `layout_of` takes the first layout, in registration order, whose block list
exists in the model; a new layout is one `ARCHITECTURES.register` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from workbench.errors import ModelLoadError
from workbench.registry import Registry


@dataclass(frozen=True)
class Layout:
    """Dotted attribute paths, from the top-level HF model, to its blocks and final norm."""

    layers: str
    final_norm: str


ARCHITECTURES: Registry[Layout] = Registry("architecture")
ARCHITECTURES.register("llama", Layout("model.layers", "model.norm"))  # + Mistral, Qwen, Gemma
ARCHITECTURES.register("gpt_neox", Layout("gpt_neox.layers", "gpt_neox.final_layer_norm"))
ARCHITECTURES.register("gpt2", Layout("transformer.h", "transformer.ln_f"))
ARCHITECTURES.register("opt", Layout("model.decoder.layers", "model.decoder.final_layer_norm"))


def resolve(model: nn.Module, path: str) -> Any:
    """`model.a.b.c` for the path "a.b.c", or None when some attribute is missing."""
    obj: Any = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def layout_of(model: nn.Module) -> tuple[str, Layout]:
    """The name and layout of the first registered architecture whose blocks `model` has."""
    for name, layout in ARCHITECTURES.items():
        if isinstance(resolve(model, layout.layers), nn.ModuleList):
            return name, layout
    raise ModelLoadError(f"Cannot find the decoder blocks of {type(model).__name__}: its layout "
                         f"is none of the known architectures {ARCHITECTURES.names()}")
