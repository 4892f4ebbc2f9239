"""Background jobs: long work (unlearning, audits, anything that runs a model) leaves the page
responsive. A job runs in a thread, hears the library's `workbench.progress` reports, and keeps
its result or its one-line error in `st.session_state`; the page polls it with a fragment that
redraws a live progress bar and reruns the page once the job is done.

Jobs of one process run one at a time (a queue on one lock): they share the cached models, and
some analyses attach hooks to a model while they run, which must not fire in another's forward
pass. Two cores gain nothing from running two at once anyway.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from workbench.errors import WorkbenchError, one_line
from workbench.progress import Report, listening

_QUEUE = threading.Lock()
# The page polls a job often while it is young (short jobs show their result at once), then
# rarely: every poll reruns a fragment in the server and redraws in the browser, which slows a
# long job down on a small machine (bench/dashboard.py weighs the page's audit against the CLI's).
FAST_S, SLOW_S, FAST_FOR_S = 0.5, 2.0, 4.0


def error_text(e: BaseException) -> str:
    """What the page shows of an error: its message on one line, never a traceback (a library
    bug also names its type; its traceback goes to the server's console)."""
    if isinstance(e, WorkbenchError):
        return one_line(e, limit=1000)
    return f"{type(e).__name__}: {one_line(e, limit=1000)}"


@dataclass
class Job:
    """One piece of background work and what it reported."""

    title: str
    events: list[Report] = field(default_factory=list)
    result: Any = None
    error: str | None = None
    queued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    finished: float | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.perf_counter()) - self.started

    def latest(self, stage: str | None = None) -> Report | None:
        for e in reversed(list(self.events)):
            if stage is None or e.stage == stage:
                return e
        return None

    def of(self, stage: str) -> list[Report]:
        return [e for e in list(self.events) if e.stage == stage]

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job is done (tests and benchmarks; a page polls instead)."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self

    def _run(self, fn: Callable[[], Any]) -> None:
        with _QUEUE:
            self.started = time.perf_counter()
            try:
                with listening(self.events.append):
                    self.result = fn()
            except BaseException as e:  # the page shows one line; the console the traceback
                self.error = error_text(e)
                if not isinstance(e, WorkbenchError):
                    traceback.print_exc(file=sys.stderr)
                if not isinstance(e, Exception):  # e.g. SystemExit: not the job's to swallow
                    raise
            finally:
                self.finished = time.perf_counter()


def _key(name: str) -> str:
    return f"job:{name}"


def start(name: str, title: str, fn: Callable[[], Any]) -> Job:
    """Run `fn()` in the background as job `name` of this session (replacing a finished one of
    that name; a running one is kept and returned)."""
    old = get(name)
    if old is not None and not old.done:
        return old
    job = Job(title)
    thread = threading.Thread(target=contextvars.copy_context().run, args=(job._run, fn),
                              name=f"workbench-{name}", daemon=True)
    # No script-run context is attached: st.cache_resource (the model cache) works without one,
    # and with one a wait on the cache's lock could stop the job when the page reruns.
    job.thread = thread
    st.session_state[_key(name)] = job
    thread.start()
    return job


def get(name: str) -> Job | None:
    return st.session_state.get(_key(name))


def forget(name: str) -> None:
    st.session_state.pop(_key(name), None)


def follow(name: str, live: Callable[[Job], None] | None = None) -> Job | None:
    """The finished job `name` (its error shown), or None while it runs: then a live view
    (progress bar, and `live(job)` for e.g. curves) polls until it is done and reruns the page."""
    job = get(name)
    if job is None:
        return None
    if not job.done:
        young = time.perf_counter() - job.queued < FAST_FOR_S
        (_poll_often if young else _poll_rarely)(name, live, young)
        return None
    if job.error:
        st.error(job.error)
    return job


@st.fragment(run_every=FAST_S)
def _poll_often(name: str, live: Callable[[Job], None] | None, young: bool) -> None:
    _draw(name, live, young)


@st.fragment(run_every=SLOW_S)
def _poll_rarely(name: str, live: Callable[[Job], None] | None, young: bool) -> None:
    _draw(name, live, young)


def _draw(name: str, live: Callable[[Job], None] | None, young: bool) -> None:
    job = get(name)
    if job is None:
        return
    if job.done or (young and time.perf_counter() - job.queued >= FAST_FOR_S):
        st.rerun()  # the results, or a slower poll for a long job
    if job.started is None:
        st.info(f"{job.title}: waiting for the job before it to finish")
        return
    event = job.latest()
    text = f"{job.title}: {job.seconds:.0f} s"
    if event is not None:
        running = event.metrics.get("running") or event.metrics.get("operator")
        text += f" | {event.stage} {event.done} of {event.total}" + (
            f" ({running})" if running else "")
    st.progress(event.fraction if event is not None else 0.0, text=text)
    if live is not None:
        live(job)
