"""Keeping other libraries' import-time log lines out of the workbench's output."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quieter(logger: str, level: int = logging.ERROR) -> Iterator[None]:
    """While open, `logger` (and its children) log only at `level` and above; its own level
    comes back afterwards. For imports that warn about what the workbench never uses, e.g.
    bitsandbytes' CPU backend about an optional kernel package (imported by peft too)."""
    log = logging.getLogger(logger)
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)
