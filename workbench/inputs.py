"""Read input files with one-line errors that name the file and what is wrong.

Loaders read text, JSON and safetensors through these helpers instead of `open`, `json.loads` or
`safetensors.load_file`, so bad bytes (not UTF-8, binary, truncated, corrupt) become a
`WorkbenchError` (or the subclass the caller passes), never a traceback. Nothing here writes.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError, one_line

if TYPE_CHECKING:  # torch takes a second to import; reading text and JSON needs none of it
    import torch

ErrorType = type[WorkbenchError]


def _read_bytes(path: Path, error: ErrorType) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a file") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or one_line(e)})") from e


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and character column of byte `offset` in `data`."""
    start = data.rfind(b"\n", 0, offset) + 1
    col = len(data[start:offset].decode("utf-8", errors="replace")) + 1
    return data.count(b"\n", 0, offset) + 1, col


def decode_text(data: bytes, name: str, error: ErrorType = WorkbenchError) -> str:
    """`data` as UTF-8 text (a leading BOM is dropped); binary or other encodings are refused
    with the line and column of the first bad byte."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise error(f"{name}: UTF-16 text (byte-order mark), not UTF-8; save the file as UTF-8")
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    nul = data.find(b"\x00", skip)
    if nul >= 0:
        line, col = _line_col(data, nul)
        raise error(f"{name}:{line}: binary data, not text (NUL byte at column {col})")
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _line_col(data, skip + e.start)
        raise error(f"{name}:{line}: not UTF-8 text (byte 0x{data[skip + e.start]:02x} at "
                    f"column {col}); save the file as UTF-8") from e


def read_text(path: str | Path, error: ErrorType = WorkbenchError) -> str:
    """A UTF-8 text file (BOM accepted), or `error` naming the file, line and bad byte."""
    path = Path(path)
    return decode_text(_read_bytes(path, error), str(path), error)


def read_json(path: str | Path, error: ErrorType = WorkbenchError) -> dict[str, Any]:
    """A JSON file holding one object, or `error` naming the file, line and problem."""
    path = Path(path)
    text = read_text(path, error)
    if not text.strip():
        raise error(f"{path}: empty file, expected a JSON object")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(doc, dict):
        kind = {list: "an array", str: "a string"}.get(type(doc), type(doc).__name__)
        raise error(f"{path}: expected a JSON object, found {kind}")
    return doc


def check_safetensors(path: str | Path, error: ErrorType = WorkbenchError) -> list[str]:
    """The tensor names in a safetensors file, reading only its header; `error` if it is
    missing, truncated or not a safetensors file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return list(fh.keys())
    except (SafetensorError, OSError) as e:
        raise error(f"{path}: not a readable safetensors file, truncated or corrupt "
                    f"({one_line(e)})") from e


def read_tensors(path: str | Path, error: ErrorType = WorkbenchError,
                 required: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; `error` if it is unreadable, lacks a `required`
    tensor, or holds NaN or infinite values."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    check_safetensors(path, error)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise error(f"{path}: not a readable safetensors file ({one_line(e)})") from e
    missing = [k for k in required if k not in tensors]
    if missing:
        raise error(f"{path}: missing tensor(s) {missing}; found {sorted(tensors)}")
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise error(f"{path}: tensor {name!r} contains NaN or infinite values")
    return tensors
