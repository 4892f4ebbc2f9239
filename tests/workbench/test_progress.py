"""`workbench.progress`: reports reach the listeners of their own context, and only those."""

from __future__ import annotations

import contextvars
import threading

from workbench import progress


def test_reports_reach_nested_listeners_and_stop_after_the_block():
    outer, inner = [], []
    progress.report("nobody", 1, 2)  # no listener: nothing happens, nothing raises
    with progress.listening(outer.append):
        assert progress.active()
        progress.report("train", 1, 4, loss=0.5)
        with progress.listening(inner.append):
            progress.report("train", 2, 4)
        progress.report("train", 3, 4)
    progress.report("train", 4, 4)
    assert [(r.done, r.total) for r in outer] == [(1, 4), (2, 4), (3, 4)]
    assert [r.done for r in inner] == [2]
    assert outer[0].metrics == {"loss": 0.5} and outer[0].fraction == 0.25
    assert not progress.active()


def test_a_thread_hears_nothing_unless_it_runs_in_a_copied_context():
    heard = []

    def work() -> None:
        progress.report("audit", 1, 1)

    with progress.listening(heard.append):
        plain = threading.Thread(target=work)
        plain.start(), plain.join()
        assert heard == []  # contextvars do not flow into a new thread by themselves
        copied = threading.Thread(target=contextvars.copy_context().run, args=(work,))
        copied.start(), copied.join()
    assert [r.stage for r in heard] == ["audit"]
