"""Check model files before transformers reads them: GGUF headers and HF checkpoint directories.

transformers, gguf and safetensors report bad files with tracebacks or several-line messages that
do not say which file is wrong; these checks name the file and the problem in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workbench.errors import ModelLoadError, one_line
from workbench.inputs import check_safetensors, read_json

# JSON files of a checkpoint directory that are read on load (config.json is checked first)
_JSON_FILES = ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json",
               "generation_config.json", "model.safetensors.index.json",
               "workbench_subject.json", "edit.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_OTHER_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def check_gguf_header(path: Path) -> None:
    """Refuse an empty file or one without the GGUF magic bytes before any reader sees it."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read ({e.strerror or one_line(e)})") from e
    if not head:
        raise ModelLoadError(f"{path}: empty file (0 bytes), not a GGUF model")
    if head != b"GGUF":
        raise ModelLoadError(f"{path}: not a GGUF file (starts with {head!r}, not b'GGUF')")


def check_checkpoint_dir(path: Path) -> list[Path]:
    """Check a checkpoint directory's files before transformers reads them; return its
    safetensors files. Each problem names the file."""
    from transformers import CONFIG_MAPPING

    if not (path / "config.json").exists():
        raise ModelLoadError(f"{path} is not an HF checkpoint directory (no config.json)")
    config = read_json(path / "config.json", ModelLoadError)
    kind = config.get("model_type")
    if not isinstance(kind, str) or not kind:
        raise ModelLoadError(f"{path / 'config.json'}: no 'model_type' (e.g. \"llama\")")
    if kind not in CONFIG_MAPPING:
        raise ModelLoadError(f"{path / 'config.json'}: unknown model_type {kind!r} (not an "
                             f"architecture this version of transformers knows)")
    for name in _JSON_FILES:
        if (path / name).exists():
            read_json(path / name, ModelLoadError)
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not any((path / n).exists() for n in _OTHER_WEIGHTS):
        raise ModelLoadError(f"{path}: no weights (expected model.safetensors)")
    for w in weights:
        check_safetensors(w, ModelLoadError)
    if not any((path / n).exists() for n in _TOKENIZER_FILES):
        raise ModelLoadError(f"{path}: no tokenizer (expected tokenizer.json or "
                             f"tokenizer_config.json)")
    return weights


def shape_mismatch(config: Any, weights: list[Path]) -> str:
    """The first tensor whose saved shape differs from the one `config` builds, or ''."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        wanted = {k: tuple(v.shape) for k, v in
                  AutoModelForCausalLM.from_config(config).state_dict().items()}
    for w in weights:
        with safe_open(str(w), framework="pt") as fh:
            for key in fh.keys():
                saved = tuple(fh.get_slice(key).get_shape())
                if key in wanted and wanted[key] != saved:
                    return (f"{key} is {list(saved)} in {w.name} but config.json makes it "
                            f"{list(wanted[key])}")
    return ""


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                       "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
                       "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def safetensors_index(path: Path) -> dict[str, tuple[torch.dtype, tuple[int, ...], int, int]]:
    """Each tensor of a safetensors file as (dtype, shape, start byte, end byte), read from its
    header; a file `check_safetensors` accepted. An unknown dtype names the file and tensor."""
    import json
    import struct

    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ModelLoadError(f"{path}: tensor {name!r} has dtype {info['dtype']!r}, which "
                                 f"the workbench does not read")
        begin, end = info["data_offsets"]
        out[name] = (dtype, tuple(info["shape"]), 8 + n + begin, 8 + n + end)
    return out


def read_safetensors_plainly(path: Path, index: dict[str, tuple[torch.dtype, tuple[int, ...],
                                                                 int, int]]):
    """Yield (name, tensor) for each entry of `index` (from `safetensors_index`), one tensor
    at a time, each in memory of its own.

    Written by hand because safetensors reads through a memory map whose touched pages count
    against the process until the file is closed: reading a second checkpoint to compare it
    with a model already held would peak at one more whole model, where plain reads peak at
    one tensor."""
    with path.open("rb") as fh:
        for name, (dtype, shape, begin, end) in index.items():
            buf = torch.empty(end - begin, dtype=torch.uint8)
            fh.seek(begin)
            if fh.readinto(memoryview(buf.numpy())) != end - begin:
                raise ModelLoadError(f"{path}: tensor {name!r} is truncated")
            yield name, buf.view(dtype).reshape(shape)
