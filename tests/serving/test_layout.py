"""serving/layout.py on a real filesystem: version scans, staged directories, atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving import layout


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_version_dirs_follow_tf_serving_names(tmp_path):
    for name in ("7", "1", "00000123", str(2**63 - 1)):
        (tmp_path / name).mkdir()
    # ignored: temporary directories of writes in progress, other names, files, numbers
    # beyond int64, non-ASCII digits (str.isdigit() accepts them, TF Serving does not)
    for name in (".tmp-3-123", "abc", "12a", "-4", " 5", "\u0663", str(2**63)):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file, not a version")
    assert layout.version_dirs(tmp_path) == [
        (1, tmp_path / "1"),
        (7, tmp_path / "7"),
        (123, tmp_path / "00000123"),
        (2**63 - 1, tmp_path / str(2**63 - 1)),
    ]


def test_version_dirs_of_a_missing_or_non_directory_base(tmp_path):
    assert layout.version_dirs(tmp_path / "absent") == []
    (tmp_path / "file").write_text("x")
    assert layout.version_dirs(tmp_path / "file") == []


def test_parse_version():
    assert layout.parse_version("00000123") == 123
    assert layout.parse_version("0") == 0
    for name in ("", "1.0", "+1", "-1", "1 ", "\u00b2", str(2**63)):
        assert layout.parse_version(name) is None, name


def test_next_version(tmp_path):
    base = tmp_path / "models" / "m"
    assert layout.next_version(base) == 1  # base does not exist yet
    base.mkdir(parents=True)
    (base / ".tmp-50-1").mkdir()
    assert layout.next_version(base) == 1
    (base / "2").mkdir()
    (base / "010").mkdir()
    assert layout.next_version(base) == 11
    (base / "12").write_text("a file")  # the name is taken: the next version must skip it
    assert layout.next_version(base) == 13


def test_staged_directory_renames_on_success_and_hides_the_work(tmp_path):
    final = tmp_path / "base" / "3"
    with layout.staged_directory(final) as tmp:
        assert tmp.is_dir() and tmp.parent == final.parent and not list(tmp.iterdir())
        assert layout.parse_version(tmp.name) is None  # a polling server ignores it
        (tmp / "saved_model.pb").write_bytes(b"pb")
        (tmp / "variables").mkdir()
        (tmp / "variables" / "variables.index").write_bytes(b"ix")
        assert layout.version_dirs(final.parent) == []
        assert not final.exists()
    assert _listing(final.parent) == ["3"]
    assert (final / "variables" / "variables.index").read_bytes() == b"ix"
    assert layout.version_dirs(final.parent) == [(3, final)]


def test_staged_directory_leaves_nothing_on_exception(tmp_path):
    (tmp_path / "1").mkdir()
    with pytest.raises(RuntimeError, match="export failed"):
        with layout.staged_directory(tmp_path / "2") as tmp:
            (tmp / "saved_model.pb").write_bytes(b"half")
            raise RuntimeError("export failed")
    assert _listing(tmp_path) == ["1"]
    with pytest.raises(KeyboardInterrupt):  # not only Exception: a Ctrl-C cleans up too
        with layout.staged_directory(tmp_path / "2") as tmp:
            raise KeyboardInterrupt
    assert _listing(tmp_path) == ["1"]


def test_staged_directory_never_overwrites_a_version(tmp_path):
    existing = tmp_path / "4"
    existing.mkdir()
    (existing / "saved_model.pb").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="never overwritten"):
        with layout.staged_directory(existing):
            pytest.fail("the block must not run")
    # a version that appears while we write (another exporter) is not replaced either, even
    # an empty directory, which a plain rename would silently replace
    racing = tmp_path / "5"
    with pytest.raises(FileExistsError):
        with layout.staged_directory(racing) as tmp:
            (tmp / "saved_model.pb").write_bytes(b"new")
            racing.mkdir()
    assert _listing(tmp_path) == ["4", "5"]
    assert (existing / "saved_model.pb").read_bytes() == b"old"
    assert not list(racing.iterdir())


def test_write_json_atomic_keeps_the_old_file_when_serialization_fails(tmp_path):
    path = tmp_path / "run" / "history.json"
    layout.write_json_atomic(path, [{"epoch": 1, "loss": 0.5}])  # creates the parent
    before = path.read_text()
    assert json.loads(before) == [{"epoch": 1, "loss": 0.5}]
    with pytest.raises(TypeError):
        layout.write_json_atomic(path, [{"epoch": 2, "loss": object()}])
    assert path.read_text() == before
    assert _listing(path.parent) == ["history.json"]  # no temporary file left behind
    layout.write_json_atomic(path, {"b": 1, "a": 2})
    assert path.read_text() == '{\n  "a": 2,\n  "b": 1\n}'  # indent 2, sorted keys


def test_write_bytes_and_text_atomic(tmp_path):
    path = tmp_path / "models.config"
    layout.write_text_atomic(path, "h\u00e9\n")
    assert path.read_bytes() == "h\u00e9\n".encode()
    layout.write_bytes_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    with pytest.raises(TypeError):
        layout.write_bytes_atomic(path, "not bytes")  # fails after the temp file exists
    assert path.read_bytes() == b"\x00\x01"
    assert _listing(tmp_path) == ["models.config"]
    # the file gets the usual mode (umask), not tempfile.mkstemp's 0600
    (tmp_path / "plain").write_bytes(b"")
    assert path.stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_staged_file_keeps_the_suffix_and_cleans_up(tmp_path):
    path = tmp_path / "ckpt-0001.weights.h5"
    path.write_bytes(b"epoch 1")
    with pytest.raises(OSError):
        with layout.staged_file(path) as tmp:
            assert tmp.name.endswith(path.name) and tmp.parent == path.parent
            tmp.write_bytes(b"half of epoch 2")
            raise OSError("disk full")
    assert path.read_bytes() == b"epoch 1"
    assert _listing(tmp_path) == [path.name]
    with layout.staged_file(path) as tmp:
        tmp.write_bytes(b"epoch 2")
        assert path.read_bytes() == b"epoch 1"
    assert path.read_bytes() == b"epoch 2"
    assert _listing(tmp_path) == [path.name]


def test_replace_file(tmp_path):
    src, dst = tmp_path / "a.part", tmp_path / "a.tar.gz"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    layout.replace_file(src, dst)
    assert dst.read_bytes() == b"new" and not src.exists()


def test_warmup_path():
    assert layout.WARMUP_PATH == Path("assets.extra") / "tf_serving_warmup_requests"
    assert layout.WARMUP_PATH.name == layout.WARMUP_FILE


def test_layout_imports_no_tensorflow():
    code = "import sys, serving.layout; assert 'tensorflow' not in sys.modules, 'tf imported'"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)
