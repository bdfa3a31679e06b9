"""File I/O: atomic writes, JSON files, JSON-safe floats and digests."""

import json
import os
import stat

import numpy as np
import pytest

from jaxcl import io


def test_atomic_write_replaces_whole_file_and_is_readable(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    io.atomic_write_text(path, "first")
    io.atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert os.listdir(path.parent) == ["a.txt"]  # no temporary left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "r.json"
    io.atomic_write_text(path, "old")
    with pytest.raises(TypeError):
        io.atomic_write_bytes(path, "not bytes")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["r.json"]


def test_write_json_round_trips_numpy_values_and_ends_with_a_newline(tmp_path):
    payload = {"b": (1, 2), "a": np.float32(0.5), "rows": np.arange(3), "name": "x"}
    path = io.write_json(tmp_path / "r.json", payload)
    text = path.read_text()
    assert text.endswith("}\n") and text == json.dumps(io.json_ready(payload), indent=2) + "\n"
    assert io.read_json(path) == {"b": [1, 2], "a": 0.5, "rows": [0, 1, 2], "name": "x"}
    io.write_json(path, payload, sort_keys=True)
    assert list(io.read_json(path)) == ["a", "b", "name", "rows"]


def test_read_json_refuses_what_is_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError):
        io.read_json(path)
    with pytest.raises(OSError):
        io.read_json(tmp_path / "absent.json")


@pytest.mark.parametrize(
    "value,expected",
    [(0.25, 0.25), (np.float32(2.0), 2.0), (3, 3.0), (np.nan, None), (-np.inf, None)],
)
def test_finite_or_none(value, expected):
    got = io.finite_or_none(value)
    assert got == expected and (got is None or type(got) is float)


def test_digest_sees_values_dtypes_and_shapes():
    tree = {"a": np.arange(6, dtype=np.int32), "b": np.ones(2, np.float32)}
    same = {"a": np.arange(6, dtype=np.int32), "b": np.ones(2, np.float32)}
    assert io.digest(tree) == io.digest(same)
    for other in (
        {**tree, "b": np.asarray([1.0, 2.0], np.float32)},
        {**tree, "a": np.arange(6, dtype=np.int64)},
        {**tree, "a": np.arange(6, dtype=np.int32).reshape(2, 3)},
    ):
        assert io.digest(other) != io.digest(tree)
