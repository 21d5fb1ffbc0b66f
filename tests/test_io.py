import json

import numpy as np
import pytest

from toybench.errors import ToybenchError
from toybench.io import atomic_save_npz, atomic_write_bytes, atomic_write_json, check_output


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


# -- never replace what is not a regular file (issue #11, fault 3) ------------------------------
def _no_temp_files(folder):
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def _refused(path, fragment, monkeypatch):
    """``atomic_write_bytes(path)`` raises one line with ``fragment`` before any write."""
    import toybench.io as tio

    def no_write(*args, **kwargs):  # the check must come before the temporary file
        raise AssertionError("a temporary file was created for a refused path")

    monkeypatch.setattr(tio.tempfile, "mkstemp", no_write)
    with pytest.raises(ToybenchError) as err:
        atomic_write_bytes(path, b"new")
    message = str(err.value)
    assert fragment in message and "\n" not in message and str(path) in message
    monkeypatch.undo()


def test_fifo_is_refused_and_kept(tmp_path, monkeypatch):
    import os
    import stat

    fifo = tmp_path / "out.npz"
    os.mkfifo(fifo)
    _refused(fifo, "is a FIFO (named pipe), not a regular file; refusing to replace it",
             monkeypatch)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert _no_temp_files(tmp_path)


def test_folder_is_refused_and_kept(tmp_path, monkeypatch):
    (tmp_path / "out.npz").mkdir()
    (tmp_path / "out.npz" / "inside").write_text("x")
    _refused(tmp_path / "out.npz", "is a folder, not a regular file", monkeypatch)
    assert (tmp_path / "out.npz" / "inside").read_text() == "x"


def test_symlink_to_a_device_is_refused_without_touching_it(tmp_path, monkeypatch):
    import os

    # Only a link in tmp_path points at /dev/null; the refusal happens before any write, and the
    # unfixed code replaced the link itself (never /dev/null), so this test is safe either way.
    link = tmp_path / "out.npz"
    link.symlink_to("/dev/null")
    _refused(link, "is a symlink to /dev/null, a character device", monkeypatch)
    assert os.readlink(link) == "/dev/null"


def test_dangling_symlink_and_loop_are_refused(tmp_path, monkeypatch):
    import os

    dangling = tmp_path / "out.npz"
    dangling.symlink_to(tmp_path / "nowhere.npz")
    _refused(dangling, "is a dangling symlink", monkeypatch)
    assert os.path.islink(dangling) and not (tmp_path / "nowhere.npz").exists()
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    _refused(tmp_path / "a", "a symlink loop", monkeypatch)


def test_symlink_to_a_regular_file_is_written_through(tmp_path):
    import os

    real = tmp_path / "elsewhere" / "data.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "m.json"
    link.symlink_to(real)
    assert atomic_write_json(link, {"a": 1}) == link
    assert os.path.islink(link) and os.readlink(link) == str(real)  # the link is kept
    assert json.loads(real.read_text()) == {"a": 1}
    assert _no_temp_files(tmp_path) and _no_temp_files(real.parent)


def test_check_output_names_the_target(tmp_path):
    real = tmp_path / "real.npz"
    real.write_bytes(b"")
    (tmp_path / "link.npz").symlink_to(real)
    assert check_output(tmp_path / "link.npz") == real
    assert check_output(tmp_path / "new.npz") == tmp_path / "new.npz"
    with pytest.raises(ToybenchError, match="no such folder"):
        check_output(tmp_path / "missing" / "x.npz")
    with pytest.raises(ToybenchError, match="is not a folder"):
        check_output(real / "x.npz")


def test_over_long_name_is_one_short_line(tmp_path):
    with pytest.raises(ToybenchError) as err:
        atomic_write_bytes(tmp_path / ("a" * 300 + ".npz"), b"x")
    message = str(err.value)
    assert "file name too long (a name of 304 bytes" in message
    assert len(message) < 300 and "\n" not in message
    assert not list(tmp_path.iterdir())


def test_longest_legal_name_can_be_written(tmp_path):
    # The temporary name must stay legal where the final name is (it used to add 14 characters).
    path = atomic_write_bytes(tmp_path / ("b" * 251 + ".npz"), b"x")
    assert path.read_bytes() == b"x" and len(path.name) == 255


def test_npz_is_streamed_and_byte_identical_to_numpy(tmp_path):
    import io

    arrays = {"a": np.arange(12.0).reshape(3, 4), "b": np.array(["x", "yz"])}
    for compressed in (False, True):
        buffer = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
        path = atomic_save_npz(tmp_path / f"{compressed}.npz", compressed=compressed, **arrays)
        assert path.read_bytes() == buffer.getvalue()
