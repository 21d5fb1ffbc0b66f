import json

import numpy as np
import pytest

from toybench.errors import ToybenchError
from toybench.io import atomic_save_npz, atomic_write_json


def test_atomic_json_roundtrip_and_no_temp_left(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"b": 1, "a": 2.5})
    assert json.loads(target.read_text()) == {"a": 2.5, "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_write_to_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(ToybenchError, match="cannot write"):
        atomic_write_json(tmp_path / "nope" / "m.json", {})


def test_atomic_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError):
        atomic_save_npz(tmp_path / "x.npz", a=np.array([{}], dtype=object))
    assert not list(tmp_path.iterdir())
    atomic_save_npz(tmp_path / "x.npz", a=np.arange(3))
    assert np.load(tmp_path / "x.npz")["a"].tolist() == [0, 1, 2]


def test_atomic_write_respects_umask(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "m.json", {})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
