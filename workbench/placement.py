"""Where a model runs and how much it computes at once: its dtype, its device map, the rows of
each inference batch and of each backward pass.

On the CPU inference keeps what the callers ask for: float32 and each caller's own rows per batch
(a CPU forward pass is compute-bound, so bigger batches buy no speed and cost memory); a backward
pass, which keeps every layer's activations, takes as many rows as fit a fixed budget
(`backward_rows`). On a
GPU an audit runs in bfloat16 (float16 where the GPU has no bfloat16), inference batches take as
many rows as fit in a share of the free memory, and `device="auto"` spreads a model over every
GPU with accelerate's `device_map="auto"` (a model larger than one GPU; on one GPU that holds it,
the same map puts it all there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from workbench.errors import WorkbenchError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)
# share of the GPU's free memory (measured once per device) that one inference batch may use:
# the rest covers the allocator's fragmentation and what the caller keeps between batches
FREE_SHARE = 0.4
MAX_ROWS = 512  # beyond this a GPU is saturated on any model this workbench audits
# the working set one backward pass (relearning, attribution patching) may take on the CPU; on a
# GPU, `batch_bytes`' share of the free memory
BACKWARD_BYTES = 192 * 2**20
_FREE: dict[str, int] = {}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """A dtype name ('auto', 'float32', 'bfloat16', 'float16'), a torch dtype or None ('auto')
    for a model on `device`: 'auto' is bfloat16 on a GPU that has it, float16 on one that does
    not, float32 on the CPU (the shipped calibration was fitted in float32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = "auto" if dtype is None else str(dtype).removeprefix("torch.")
    if name != "auto":
        if name not in DTYPES:
            raise WorkbenchError(f"unknown dtype {dtype!r}; choose one of "
                                 f"{', '.join(DTYPE_CHOICES)}")
        return DTYPES[name]
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def bytes_per_token(config: Any, element_size: int) -> int:
    """A generous bound on the memory one token of an inference batch takes at its peak: one
    block's working set (residual, norm, q/k/v, attention and MLP activations), every layer's
    kept output and key/value cache (capture and generation keep them), and the float32 logits
    and log-probabilities over the vocabulary (scoring)."""
    d = int(config.hidden_size)
    f = int(getattr(config, "intermediate_size", 4 * d) or 4 * d)
    n_layers = int(config.num_hidden_layers)
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(config, "num_key_value_heads", heads) or heads)
    kv = 2 * kv_heads * int(getattr(config, "head_dim", d // heads) or d // heads)
    vocab = int(config.vocab_size)
    return element_size * (6 * d + 3 * f + n_layers * (d + kv)) + 12 * vocab


def backward_bytes_per_token(config: Any, element_size: int) -> int:
    """A generous bound on the memory one token of a backward pass holds at its peak: every
    block's saved activations (residual, norms, q/k/v, attention and MLP activations) and the
    float32 logits and log-probabilities over the vocabulary with their gradients."""
    d = int(config.hidden_size)
    f = int(getattr(config, "intermediate_size", 4 * d) or 4 * d)
    return (element_size * int(config.num_hidden_layers) * (6 * d + 3 * f)
            + 16 * int(config.vocab_size))


def backward_rows(subject: Any, width: int, rows: int) -> int:
    """Rows of `width` tokens per backward pass, at most `rows`: as many as keep its working
    set within the budget (`BACKWARD_BYTES` on the CPU), rounded down to a power of two, at
    least 1. SmolLM2-135M in float32 at 21 tokens: 4 rows; the toy world's model: all 32."""
    per_row = max(1, width) * backward_bytes_per_token(subject.config, subject.dtype.itemsize)
    return min(rows, _power_of_two_floor(batch_bytes(subject.device, BACKWARD_BYTES) // per_row))


def _power_of_two_floor(n: int) -> int:
    """The largest power of two <= n, and 1 for n < 1 (a batch never has no rows)."""
    return 1 << (n.bit_length() - 1) if n > 0 else 1


def token_width(subject: Any, prompts: Sequence[str], answers: Sequence[str] | None = None
                ) -> int:
    """The longest row's token count: each prompt, followed by its answer when given."""
    texts = list(prompts) if answers is None else [p + a for p, a in zip(prompts, answers,
                                                                         strict=True)]
    return max(len(ids) for ids in subject.tokenizer(texts)["input_ids"])


def rows_for_memory(free_bytes: int, config: Any, element_size: int, width: int) -> int:
    """Rows of `width` tokens that fit in `FREE_SHARE` of `free_bytes`, rounded down to a power
    of two (the same free memory always gives the same batches), between 1 and `MAX_ROWS`."""
    per_row = max(1, width) * bytes_per_token(config, element_size)
    return min(MAX_ROWS, _power_of_two_floor(int(free_bytes * FREE_SHARE) // per_row))


def free_memory(device: torch.device) -> int:
    """The device's free memory in bytes, measured the first time it is asked for (so that one
    process sizes its batches alike whatever it allocates later)."""
    key = str(device)
    if key not in _FREE:
        _FREE[key] = int(torch.cuda.mem_get_info(device)[0])
    return _FREE[key]


def rows_per_batch(subject: Any, prompts: Sequence[str], cpu_rows: int,
                   answers: Sequence[str] | None = None, extra: int = 0) -> int:
    """Rows per inference batch for `prompts` (each followed by its answer, and growing by
    `extra` generated tokens) on `subject`: `cpu_rows` off the GPU; on a GPU as many as fit in
    its free memory at the longest row's token count."""
    device = subject.device
    if device.type != "cuda" or not prompts:
        return cpu_rows
    width = extra + token_width(subject, prompts, answers)
    return rows_for_memory(free_memory(device), subject.config, subject.dtype.itemsize, width)


def batch_bytes(device: torch.device, cpu_bytes: int) -> int:
    """A memory budget for one batch's working set on `device`: `cpu_bytes` off the GPU, else
    the share of the GPU's free memory `rows_for_memory` uses."""
    if device.type != "cuda":
        return cpu_bytes
    return max(cpu_bytes, int(free_memory(device) * FREE_SHARE))


def resolve_device(device: str | torch.device | None) -> tuple[torch.device, str | None]:
    """The device a model's inputs go to, and the accelerate device map to load it with: 'auto'
    spreads it over the GPUs (`device_map="auto"`) where there is one, else it is the CPU; None
    is the GPU when there is one, else the CPU; any other name is that device."""
    if device is not None and str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0), "auto"
        return torch.device("cpu"), None
    if device is not None:
        try:
            return torch.device(device), None
        except RuntimeError as e:
            raise WorkbenchError(f"unknown device {device!r} (cpu, cuda, cuda:N, mps or auto)"
                                 ) from e
    return torch.device("cuda" if torch.cuda.is_available() else "cpu"), None


def spread(model: Any) -> bool:
    """The model was loaded over several devices by accelerate (its layers move tensors
    between them; it cannot be moved, forked or shared as one piece)."""
    placed = getattr(model, "hf_device_map", None) or {}
    return len({str(v) for v in placed.values()}) > 1
