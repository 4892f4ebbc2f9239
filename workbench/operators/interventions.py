"""Hook-based inference-time interventions: residual steering (optionally gated) and a prompt prefix.

Both are plain PyTorch hooks on an HF module tree (see `Subject.with_interventions`), saved as a
JSON spec plus one safetensors file. Hook state (the gate of the current batch) lives in a closure
per attached tree, so one intervention object can be attached to several forks at once.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor, nn

from workbench.edits import register_intervention
from workbench.errors import LayerError, ModelLoadError, WorkbenchError
from workbench.inputs import read_tensors
from workbench.models import decoder_layers, hidden_of, with_hidden

SteerMode = Literal["add", "ablate"]
STEER_MODES = get_args(SteerMode)


def _check_layers(layers: tuple[int, ...], n: int, what: str) -> None:
    bad = [L for L in layers if not 0 <= L < n]
    if bad or not layers:
        raise LayerError(f"{what}: layer(s) {list(layers) or '[]'} out of range: the model has "
                         f"layers 0..{n - 1}")


def real_token_mask(input_ids: Tensor | None, attention_mask: Tensor | None,
                    pad_token_id: int | None, shape: tuple[int, int],
                    device: torch.device) -> Tensor:
    """Which positions are real tokens: the 2D attention mask when given, else every position but a
    trailing run of `pad_token_id` (the right padding of `workbench.batching.encode`)."""
    if attention_mask is not None and attention_mask.ndim == 2:
        return attention_mask.bool()
    if input_ids is None or pad_token_id is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    not_pad = input_ids != pad_token_id
    # position t is real if any position >= t is not padding (reverse cumulative "or")
    return not_pad.flip(1).cummax(1).values.flip(1)


def key_similarity(h: Float[Tensor, "batch pos d_model"], real: Tensor,  # noqa: F722
                   keys: Float[Tensor, "k d_model"]) -> Tensor:  # noqa: F722
    """Per row, the highest cosine similarity between any real token of `h` and any unit key."""
    sim = torch.nn.functional.normalize(h.float(), dim=-1) @ keys.to(h.device).T
    sim = sim.amax(-1).masked_fill(~real.bool(), -1.0)
    return sim.amax(-1)


@register_intervention
class ResidualSteer:
    """Add `-coef * direction` to (mode `add`) or project `direction` out of (mode `ablate`) the
    residual stream after each chosen block, at every position.

    Gated: a detector on the residual after block `gate_layer` (before any steering, so
    `gate_layer <= min(layers)`) decides per input whether to steer: a linear one (`w . h + b`
    averaged over the input's real tokens) or a key codebook (the best cosine of any real token
    to any key, above the cut `gate_b`); inputs where it does not fire are left exactly unchanged. The gate is
    decided on the first forward of a batch and reused for cached generation steps."""

    type = "steer"

    def __init__(self, layers: tuple[int, ...], directions: Float[Tensor, "k d_model"],  # noqa: F722
                 coefs: Float[Tensor, " k"], mode: str = "add", gate_layer: int | None = None,  # noqa: F722
                 gate_w: Float[Tensor, " d_model"] | None = None, gate_b: float = 0.0,  # noqa: F722
                 pad_token_id: int | None = None, name: str = "steer",
                 gate_keys: Float[Tensor, "k d_model"] | None = None) -> None:  # noqa: F722
        if mode not in STEER_MODES:
            raise WorkbenchError(f"unknown steering mode {mode!r}; expected one of {STEER_MODES}")
        if directions.ndim != 2 or directions.shape[0] != len(layers) or len(coefs) != len(layers):
            raise WorkbenchError("steer: need one direction and one coefficient per layer")
        if gate_w is not None and gate_keys is not None:
            raise WorkbenchError("steer: a gate is either linear (gate_w) or keys, not both")
        if (gate_layer is None) != (gate_w is None and gate_keys is None):
            raise WorkbenchError("steer: a gate needs gate_layer and gate_w or gate_keys")
        if gate_layer is not None and gate_layer > min(layers):
            raise LayerError(f"steer: the gate layer {gate_layer} must not come after the first "
                             f"steered layer {min(layers)}")
        self.layers = tuple(int(L) for L in layers)
        self.directions = _unit_rows(directions.detach().float())
        self.coefs = coefs.detach().float()
        self.mode = mode
        self.gate_layer = gate_layer
        self.gate_w = None if gate_w is None else gate_w.detach().float()
        self.gate_b = float(gate_b)
        self.gate_keys = None if gate_keys is None else _unit_rows(gate_keys.detach().float())
        self.pad_token_id = pad_token_id
        self.name = name

    @property
    def gated(self) -> bool:
        return self.gate_w is not None or self.gate_keys is not None

    def gate_scores(self, h: Float[Tensor, "batch pos d_model"], real: Tensor) -> Tensor:  # noqa: F722
        """Per row, > 0 where the gate fires. Linear gate: the mean detector logit over the real
        tokens. Key gate: the highest cosine similarity of any real token to any key, minus the
        cut `gate_b`."""
        if self.gate_keys is not None:
            return key_similarity(h, real, self.gate_keys) - self.gate_b
        s = h.float() @ self.gate_w.to(h.device) + self.gate_b
        m = real.to(s.dtype)
        return (s * m).sum(1) / m.sum(1).clamp_min(1)

    def steer(self, h: Tensor, i: int) -> Tensor:
        d = self.directions[i].to(h.device, h.dtype)
        if self.mode == "ablate":
            return h - (h @ d).unsqueeze(-1) * d
        return h - self.coefs[i].to(h.device, h.dtype) * d

    def check(self, subject: Any) -> None:
        n = subject.n_layers
        _check_layers(self.layers, n, "steer")
        if self.gate_layer is not None:
            _check_layers((self.gate_layer,), n, "steer gate")
        if self.directions.shape[1] != subject.d_model:
            raise WorkbenchError(f"steer: directions have width {self.directions.shape[1]}, the "
                                 f"model {subject.d_model}")

    def attach(self, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        blocks = decoder_layers(model)
        _check_layers(self.layers, len(blocks), "steer")
        state: dict[str, Any] = {"gate": None, "real": None, "continuation": False,
                                 "cache": None}
        handles = []
        if self.gated:
            _check_layers((self.gate_layer,), len(blocks), "steer gate")

            def record(_mod, args, kwargs):
                ids = kwargs.get("input_ids", args[0] if args else None)
                emb = kwargs.get("inputs_embeds")
                ref = ids if ids is not None else emb
                # a cached generation step reuses the gate of the cache's first forward
                cache = kwargs.get("past_key_values")
                last = state["cache"]() if state["cache"] is not None else None
                state["continuation"] = cache is not None and cache is last
                state["cache"] = weakref.ref(cache) if cache is not None else None
                state["real"] = real_token_mask(ids, kwargs.get("attention_mask"),
                                                self.pad_token_id, tuple(ref.shape[:2]),
                                                ref.device)

            def detect(_mod, _args, output):
                if not state["continuation"] or state["gate"] is None:
                    h = hidden_of(output)
                    state["gate"] = self.gate_scores(h, state["real"][:, -h.shape[1]:]) > 0

            handles.append(model.register_forward_pre_hook(record, with_kwargs=True))
            handles.append(blocks[self.gate_layer].register_forward_hook(detect))

        for i, L in enumerate(self.layers):
            def hook(_mod, _args, output, i=i):
                h = hidden_of(output)
                new = self.steer(h, i)
                if self.gated:
                    new = torch.where(state["gate"].view(-1, 1, 1), new, h)
                return with_hidden(output, new)

            handles.append(blocks[L].register_forward_hook(hook))
        return handles

    def save(self, directory: Path) -> dict[str, Any]:
        tensors = {"directions": self.directions.contiguous(), "coefs": self.coefs.contiguous()}
        if self.gate_w is not None:
            tensors["gate_w"] = self.gate_w.contiguous()
        if self.gate_keys is not None:
            tensors["gate_keys"] = self.gate_keys.contiguous()
        save_file({k: v.cpu() for k, v in tensors.items()}, str(Path(directory) / "steer.safetensors"))
        return {"type": self.type, "name": self.name, "layers": list(self.layers),
                "mode": self.mode, "gate_layer": self.gate_layer, "gate_b": self.gate_b,
                "pad_token_id": self.pad_token_id}

    @classmethod
    def load(cls, directory: Path, spec: dict[str, Any]) -> ResidualSteer:
        t = read_tensors(Path(directory) / "steer.safetensors", ModelLoadError,
                         required=("directions", "coefs"))
        return cls(tuple(spec["layers"]), t["directions"], t["coefs"], spec["mode"],
                   spec.get("gate_layer"), t.get("gate_w"), spec.get("gate_b", 0.0),
                   spec.get("pad_token_id"), spec.get("name", "steer"), t.get("gate_keys"))


def _unit_rows(x: Tensor) -> Tensor:
    """Rows scaled to unit norm; rows already unit (a saved edit's keys) are kept bit for bit,
    so a save / load round trip gives the same intervention (and the same audit key)."""
    n = x.norm(dim=-1, keepdim=True)
    done = ((n - 1).abs() <= 1e-6) | (n == 0)  # per row: one zero or off row must not touch the rest
    return torch.where(done, x, x / n.clamp_min(1e-12))


@register_intervention
class PromptPrefix:
    """Prepend fixed text to every input without changing the input's positions.

    The prefix's key/value cache is computed once at attach time and injected by a forward
    pre-hook on the top-level model: position ids are offset by the prefix length and a 2D
    attention mask is extended with ones, so every layer output holds only the original tokens
    (probes index the original prompt) while attention sees prefix + prompt. Cached generation
    works because the cache handed in by `generate` is filled with the prefix on its first step.
    Needs an HF model whose forward takes `past_key_values` (a `transformers` Cache)."""

    type = "prompt_prefix"

    def __init__(self, prefix_ids: list[int], text: str, name: str = "prompt") -> None:
        if not prefix_ids:
            raise WorkbenchError("prompt: the prefix encodes to no tokens")
        self.prefix_ids = [int(i) for i in prefix_ids]
        self.text = text
        self.name = name

    def __len__(self) -> int:
        return len(self.prefix_ids)

    @torch.no_grad()
    def prefix_cache(self, model: nn.Module) -> list[tuple[Tensor, Tensor]]:
        """Per-layer (key, value) of the prefix, each [1, kv_heads, P, head_dim]."""
        device = next(model.parameters()).device
        ids = torch.tensor([self.prefix_ids], device=device)
        out = model(input_ids=ids, use_cache=True)
        cache = out.past_key_values
        return [(layer.keys.detach(), layer.values.detach()) for layer in cache.layers]

    def attach(self, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        from transformers import DynamicCache

        kv = self.prefix_cache(model)
        n_prefix = len(self.prefix_ids)

        def pre(_mod, args, kwargs):
            if args:  # normalise a positional input_ids into kwargs
                kwargs = {"input_ids": args[0], **kwargs}
                args = args[1:]
            ref = kwargs.get("input_ids")
            ref = ref if ref is not None else kwargs["inputs_embeds"]
            batch = ref.shape[0]
            cache = kwargs.get("past_key_values")
            if cache is None:
                cache = DynamicCache()
            if cache.get_seq_length() == 0:
                for layer_idx, (k, v) in enumerate(kv):
                    cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1),
                                 layer_idx)
            kwargs["past_key_values"] = cache
            mask = kwargs.get("attention_mask")
            if mask is not None:
                if mask.ndim != 2:
                    raise WorkbenchError("prompt prefix: only 2D attention masks are supported")
                ones = torch.ones(batch, n_prefix, dtype=mask.dtype, device=mask.device)
                if mask.shape[1] < cache.get_seq_length() + ref.shape[1]:
                    kwargs["attention_mask"] = torch.cat([ones, mask], dim=1)
            pos = kwargs.get("position_ids")
            if pos is not None:
                kwargs["position_ids"] = pos + n_prefix
            return args, kwargs

        return [model.register_forward_pre_hook(pre, with_kwargs=True)]

    def save(self, directory: Path) -> dict[str, Any]:
        ids = torch.tensor(self.prefix_ids, dtype=torch.long)
        save_file({"prefix_ids": ids}, str(Path(directory) / "prompt.safetensors"))
        return {"type": self.type, "name": self.name, "text": self.text}

    @classmethod
    def load(cls, directory: Path, spec: dict[str, Any]) -> PromptPrefix:
        t = read_tensors(Path(directory) / "prompt.safetensors", ModelLoadError,
                         required=("prefix_ids",))
        return cls(t["prefix_ids"].tolist(), spec["text"], spec.get("name", "prompt"))
