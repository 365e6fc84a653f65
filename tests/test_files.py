"""cnnjax.files: one path layer for local paths and gs:// URIs, and the one atomic write."""

import importlib.util
import os
import subprocess
import sys

import pytest
from gcs_server import gcs_server

from cnnjax import files
from cnnjax.errors import UserError


def test_absolute_leaves_uris_alone_and_expands_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert files.absolute("gs://bucket/runs/qs") == "gs://bucket/runs/qs"
    assert files.absolute("runs/qs") == str(tmp_path / "runs" / "qs")
    assert files.absolute("~/x") == os.path.join(os.path.expanduser("~"), "x")
    assert files.is_uri("gs://b/x") and not files.is_uri("/tmp/gs:/b")


def test_write_atomic_leaves_the_previous_file_whole_when_it_fails(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    files.write_json_atomic(str(path), {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'

    def full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(str(path), "torn")
    assert path.read_text() == '{\n  "a": 1\n}\n' and os.listdir(tmp_path) == ["config.json"]


def test_a_gs_path_without_gcsfs_is_one_line_naming_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gcsfs" else real(name, *a)
    )
    with pytest.raises(UserError, match=r"pip install 'cnnjax\[gcs\]'"):
        files.exists("gs://bucket/run/config.json")


def exercise(root: str) -> None:
    """The calls cnnjax makes on a run's files, on `root` (a local folder or a gs:// URI)."""
    files.makedirs(os.path.join(root, "a", "b"))
    files.write_atomic(os.path.join(root, "a", "b", "x.bin"), b"12345")
    files.write_atomic(os.path.join(root, "y.txt"), "hello")
    assert files.walk_files(root) == ["a/b/x.bin", "y.txt"], root
    assert files.read_bytes(os.path.join(root, "y.txt")) == b"hello"
    assert files.size(os.path.join(root, "a", "b", "x.bin")) == 5
    assert files.isdir(os.path.join(root, "a")) and files.isfile(os.path.join(root, "y.txt"))
    files.rename(os.path.join(root, "y.txt"), os.path.join(root, "z.txt"))
    assert sorted(files.listdir(root)) == ["a", "z.txt"]
    files.remove(os.path.join(root, "z.txt"))
    assert not files.exists(os.path.join(root, "z.txt"))
    try:
        files.read_bytes(os.path.join(root, "missing"))
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("a missing file was read")


def test_the_same_calls_work_on_a_local_folder_and_in_a_bucket(tmp_path):
    pytest.importorskip("gcsfs")
    exercise(str(tmp_path / "run"))
    with gcs_server() as gcs:  # In a fresh process: the auth libraries read their settings once.
        code = f"import test_files; test_files.exercise({gcs.uri('run')!r})"
        env = {**os.environ, **gcs.env, "PYTHONPATH": os.path.dirname(__file__)}
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
