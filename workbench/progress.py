"""Progress reports from long library work (training steps, audit modules) to whoever listens.

Library code calls `report(stage, done, total, **metrics)`; nothing happens unless a caller has
installed a listener with `with listening(callback):` around the work. The listener lives in a
context variable, so two front ends working in two threads each hear only their own work; a new
thread starts with an empty context (run the work under `contextvars.copy_context().run`, or
enter `listening` inside the thread). Terminal progress bars are unaffected: this is a second,
silent channel for front ends such as the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Report:
    """One progress event: `done` of `total` units of `stage`, plus any figures of the moment
    (e.g. a training step's loss and forget / retain accuracy)."""

    stage: str
    done: int
    total: int
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return min(max(self.done / self.total, 0.0), 1.0) if self.total > 0 else 0.0


Listener = Callable[[Report], None]
_LISTENERS: ContextVar[tuple[Listener, ...]] = ContextVar("workbench_progress", default=())


@contextmanager
def listening(callback: Listener) -> Iterator[None]:
    """Within the block, every `report` in this context reaches `callback` (nested listeners
    all hear it, innermost last)."""
    token = _LISTENERS.set((*_LISTENERS.get(), callback))
    try:
        yield
    finally:
        _LISTENERS.reset(token)


def report(stage: str, done: int, total: int, **metrics: Any) -> None:
    """Tell the listeners of this context that `done` of `total` units of `stage` are done."""
    listeners = _LISTENERS.get()
    if not listeners:
        return
    event = Report(stage, int(done), int(total), metrics)
    for callback in listeners:
        callback(event)


def active() -> bool:
    """Whether anyone listens (lets callers skip computing metrics nobody will read)."""
    return bool(_LISTENERS.get())
