"""The metric sinks: they fail loudly and fast and never block the training thread; damaged
lines of metrics.jsonl are skipped with one warning. (Through launch.py: tests/test_faults.py.)"""

import errno
import json
import threading
import time

import pytest

from cnnjax.errors import MetricsWriteError, UserError
from cnnjax.train import writers


def test_read_events_skips_lines_without_an_event_with_one_warning(tmp_path, capsys):
    good = [{"step": 1, "kind": "train", "loss": 1.0}, {"step": 2, "kind": "eval"}]
    (tmp_path / "metrics.jsonl").write_bytes(
        b"".join(
            [
                json.dumps(good[0]).encode() + b"\n",
                b"\xff\xfe not UTF-8\n",
                b"[1, 2]\n",
                b'{"kind": "train", "step": "5"}\n',
                json.dumps(good[1]).encode() + b"\n",
                b'{"step": 3, "ki',  # Torn by a crash: skipped quietly.
            ]
        )
    )
    assert writers.read_events(str(tmp_path)) == good
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: skipped 3 unreadable lines"), err
    assert "(2, 3, 4)" in err[0]


def test_read_events_of_a_folder_is_a_user_error(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(UserError, match="move it aside"):
        writers.read_events(str(tmp_path))


def _tensorboard_run(behaviour):
    """A stand-in for the TensorBoard thread's body."""

    def run(self, purge_step):
        del purge_step
        behaviour(self)

    return run


def test_a_dead_tensorboard_thread_is_an_error_at_the_next_event(tmp_path, monkeypatch):
    def dies(self):
        self._error = OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers._TensorBoard, "_run", _tensorboard_run(dies))
    writer = writers.MetricWriter(str(tmp_path), resume_step=None)
    writer._tb._thread.join()
    with pytest.raises(MetricsWriteError, match=r"tensorboard: \[Errno 28\] No space left"):
        writer.write({"step": 1, "kind": "train", "loss": 1.0})


def test_a_stalled_tensorboard_thread_blocks_an_event_for_a_bounded_time(tmp_path, monkeypatch):
    """The queue never drains (a disk that hangs): the training thread waits `_TB_WAIT_S`,
    then gets an error, instead of waiting for ever (SIGTERM ignored) as with tensorboardX's
    own writer."""
    stalled = threading.Event()
    monkeypatch.setattr(writers._TensorBoard, "_run", _tensorboard_run(lambda self: stalled.wait()))
    monkeypatch.setattr(writers, "_TB_QUEUE", 2)
    monkeypatch.setattr(writers, "_TB_WAIT_S", 0.5)
    writer = writers.MetricWriter(str(tmp_path), resume_step=None)
    t0 = time.monotonic()
    with pytest.raises(MetricsWriteError, match="took no event for"):
        for step in range(1, 10):
            writer.write({"step": step, "kind": "train", "loss": 1.0})
    assert time.monotonic() - t0 < 5
    stalled.set()


def test_events_reach_metrics_jsonl_and_tensorboard_and_a_resume_drops_later_ones(tmp_path):
    writer = writers.MetricWriter(str(tmp_path), resume_step=None)
    for step in (1, 2, 3):
        writer.write({"step": step, "kind": "train", "loss": 1.0 / step})
    writer.close()
    resumed = writers.MetricWriter(str(tmp_path), resume_step=2)
    resumed.close()
    assert [e["step"] for e in writers.read_events(str(tmp_path))] == [1, 2]
    files = sorted((tmp_path / "tensorboard").iterdir())
    assert len(files) == 2 and all(f.name.startswith("events.out.tfevents.") for f in files)
    assert b"train/loss" in files[0].read_bytes() or b"train/loss" in files[1].read_bytes()
