"""Atomic outputs: whole or nothing, and the old output survives a failed write."""

from __future__ import annotations

import pytest

from workbench.atomic import atomic_dir, write_text


def test_failed_write_keeps_the_old_directory_and_leaves_no_temp(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as d:
        (d / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as d:
        (d / "a.txt").write_text("new")
        raise RuntimeError("boom")
    assert (out / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_false_lets_an_existing_output_win(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as d:
        (d / "a.txt").write_text("first")
    with atomic_dir(out, overwrite=False) as d:
        (d / "a.txt").write_text("second")
    assert (out / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_write_text_replaces_whole_files(tmp_path):
    path = write_text(tmp_path / "x" / "f.json", "{}")
    assert path.read_text() == "{}" and oct(path.stat().st_mode & 0o777) == "0o644"
    write_text(path, "[1]")
    assert path.read_text() == "[1]" and len(list(path.parent.iterdir())) == 1
