"""Atomic writes: all or nothing, with ordinary permissions."""

from __future__ import annotations

import os

import pytest

from locseg.io import atomic_path, write_json_atomic


def test_crash_inside_the_block_leaves_neither_file_nor_temp(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_written_file_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.read_text().strip().startswith("{") and (path.stat().st_mode & 0o777) == 0o644


def test_json_has_no_nan(tmp_path):
    import json
    import math

    from locseg.io import write_json_atomic

    path = write_json_atomic(tmp_path / "m.json", {"a": math.nan, "b": [1.0, math.inf], "c": 2})
    assert json.loads(path.read_text(), parse_constant=lambda c: 1 / 0) == {
        "a": None,
        "b": [1.0, None],
        "c": 2,
    }
