"""Damaged or unwritable checkpoints: detected, warned about in one line, set aside, never a
traceback or a silent fresh start."""

import glob
import os
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cnnjax.errors import UserError
from cnnjax.train import checkpoint
from cnnjax.train.checkpoint import (
    MANIFEST,
    CheckpointMismatch,
    Checkpoints,
    CheckpointWriteError,
)


def tree(step, n=64):
    return {"w": jnp.full((n,), float(step)), "step": jnp.asarray(step, jnp.int32)}


def target(n=64):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree(0, n))


def saved(directory, steps=(1, 2, 3), **kwargs):
    """A closed run with `steps` saved, each with accuracy step / 10."""
    ckpts = Checkpoints(str(directory), keep=len(steps), **kwargs)
    for step in steps:
        ckpts.save(step, tree(step), metrics={"accuracy": step / 10})
    ckpts.close()
    return str(directory)


def files_of(directory, step):
    return sorted(
        p
        for p in glob.glob(os.path.join(directory, str(step), "**"), recursive=True)
        if os.path.isfile(p)
    )


def data_file(directory, step):
    """The biggest array data file of `step` (orbax's OCDBT layout)."""
    pattern = os.path.join(directory, str(step), "default", "ocdbt.process_*", "d", "*")
    return max(glob.glob(pattern), key=os.path.getsize)


def resumes_from_2(directory, capsys, cause):
    """Opens the run, checks it resumes from step 2 with one warning about step 3 naming
    `cause` and the folder step 3 moved to; returns the reopened Checkpoints."""
    ckpts = Checkpoints(directory, keep=3)
    step, restored = ckpts.restore_latest(target())
    assert step == 2
    np.testing.assert_array_equal(restored["w"], np.full((64,), 2.0))
    out, err = capsys.readouterr()
    (warning,) = [line for line in out.splitlines() if line.startswith("warning:")]
    assert f"step 3 in {directory} is unreadable" in warning and cause in warning, warning
    assert "moved aside to" in warning and warning.endswith("falling back to the previous one")
    assert "Traceback" not in out + err
    (aside,) = glob.glob(os.path.join(directory, "corrupt-3-*"))
    assert aside in warning
    assert ckpts.steps() == [1, 2]
    return ckpts


def test_random_bytes_in_every_file_of_the_newest_step(tmp_path, capsys):
    """Orbax's own start-up read every step's metrics JSON and crashed on these bytes."""
    directory = saved(tmp_path)
    for path in files_of(directory, 3):
        with open(path, "wb") as f:
            f.write(os.urandom(7))
    ckpts = Checkpoints(directory, keep=3)  # Neither this ...
    assert ckpts.steps() == [1, 2, 3]
    assert ckpts.best_step() == 2  # ... nor ranking reads a damaged file as a crash.
    ckpts.close()
    resumes_from_2(directory, capsys, "IntegrityError").close()


def test_truncated_data_file(tmp_path, capsys):
    directory = saved(tmp_path)
    path = data_file(directory, 3)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    resumes_from_2(directory, capsys, "bytes").close()


def test_missing_file(tmp_path, capsys):
    directory = saved(tmp_path)
    os.remove(data_file(directory, 3))
    resumes_from_2(directory, capsys, "is missing").close()


def test_bit_flip_in_array_data_is_caught_by_the_manifest(tmp_path, capsys):
    """Same size, one bit changed: orbax alone restores it as garbage without a word."""
    directory = saved(tmp_path)
    path = data_file(directory, 3)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x01]))
    resumes_from_2(directory, capsys, "sha256").close()


def test_damaged_manifest(tmp_path, capsys):
    directory = saved(tmp_path)
    with open(os.path.join(directory, "3", MANIFEST), "w") as f:
        f.write('{"files": ')
    resumes_from_2(directory, capsys, MANIFEST).close()


def test_moved_aside_step_is_ignored_and_can_be_saved_again(tmp_path, capsys):
    directory = saved(tmp_path)
    os.remove(data_file(directory, 3))
    resumes_from_2(directory, capsys, "is missing").close()
    (aside,) = glob.glob(os.path.join(directory, "corrupt-3-*"))
    kept = sorted(os.listdir(aside))
    ckpts = Checkpoints(directory, keep=3)  # Orbax neither lists it nor cleans it up.
    assert ckpts.steps() == [1, 2]
    ckpts.save(3, tree(33))
    ckpts.close()
    assert sorted(os.listdir(aside)) == kept
    ckpts = Checkpoints(directory, keep=3)
    step, restored = ckpts.restore_latest(target())
    assert step == 3 and float(restored["w"][0]) == 33.0
    assert "warning" not in capsys.readouterr().out
    ckpts.close()


def test_every_step_unreadable_is_a_user_error_not_a_fresh_start(tmp_path, capsys):
    directory = saved(tmp_path)
    for step in (1, 2, 3):
        os.remove(data_file(directory, step))
    for _ in range(2):  # Nothing is moved: running again says the same.
        ckpts = Checkpoints(directory, keep=3)
        with pytest.raises(UserError) as raised:
            ckpts.restore_latest(target())
        ckpts.close()
        message = str(raised.value)
        assert "\n" not in message
        assert "[1, 2, 3]" in message and directory in message and "aside" in message
        assert sorted(os.listdir(directory)) == ["1", "2", "3"]
        out = capsys.readouterr().out
        assert out.count("warning:") == 3 and "no other checkpoint is left" in out


def test_checkpoints_path_that_is_a_file(tmp_path):
    path = tmp_path / "checkpoints"
    path.write_text("not a folder")
    with pytest.raises(UserError) as raised:
        Checkpoints(str(path), keep=1)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and "is a file" in message
    assert "--workdir" in message


def test_steps_of_older_versions_read_unverified_even_with_damaged_metrics(tmp_path, capsys):
    """Older versions kept metrics in orbax's JSON and wrote no manifest: such steps restore,
    rank by their metrics, and a damaged metrics file only drops that step from ranking."""
    old = ocp.CheckpointManager(
        str(tmp_path),
        options=ocp.CheckpointManagerOptions(best_fn=lambda m: m["accuracy"], best_mode="max"),
    )
    for step, accuracy in {1: 0.9, 2: 0.5, 3: 0.7}.items():
        old.save(step, args=ocp.args.StandardSave(tree(step)), metrics={"accuracy": accuracy})
    old.close()
    with open(tmp_path / "1" / "metrics" / "metrics", "wb") as f:
        f.write(os.urandom(7))
    ckpts = Checkpoints(str(tmp_path), keep=3)
    assert ckpts.best_step() == 3
    step, restored = ckpts.restore_latest(target())
    assert step == 3 and float(restored["w"][0]) == 3.0
    ckpts.save(4, tree(4), metrics={"accuracy": 0.1})  # Gets a manifest; 1-3 stay legacy.
    ckpts.close()
    assert os.path.exists(tmp_path / "4" / MANIFEST)
    assert not os.path.exists(tmp_path / "3" / MANIFEST)
    ckpts = Checkpoints(str(tmp_path), keep=3)
    assert ckpts.restore_best(target())[0] == 3
    assert "warning" not in capsys.readouterr().out
    ckpts.close()


def test_a_step_newer_than_a_manifest_without_one_is_unreadable(tmp_path, capsys):
    """The process died between orbax's commit and the manifest: unverifiable, so unreadable."""
    directory = saved(tmp_path)
    os.remove(os.path.join(directory, "3", MANIFEST))
    resumes_from_2(directory, capsys, f"no {MANIFEST}").close()


def test_retention_after_reopening_keeps_the_best(tmp_path):
    """Metrics come back from the manifests, so "best" survives a restart."""
    directory = saved(tmp_path, steps=(1, 2, 3))
    ckpts = Checkpoints(directory, keep=1)
    ckpts.save(4, tree(4), metrics={"accuracy": 0.05})
    ckpts.wait()
    assert ckpts.steps() == [3, 4] and ckpts.best_step() == 3
    ckpts.close()


def test_restore_best_falls_back_to_the_newest_readable(tmp_path, capsys):
    directory = saved(tmp_path, steps=(1, 2, 3, 4))
    ckpts = Checkpoints(directory, keep=4)
    for step, accuracy in {5: 0.2, 6: 0.3}.items():
        ckpts.save(step, tree(step), metrics={"accuracy": accuracy})
    ckpts.close()
    os.remove(data_file(directory, 4))  # The best.
    os.remove(data_file(directory, 6))  # The newest.
    ckpts = Checkpoints(directory, keep=4, read_only=True)
    assert ckpts.best_step() == 4
    step, restored = ckpts.restore_best(target())
    assert step == 5 and float(restored["w"][0]) == 5.0
    out = capsys.readouterr().out.splitlines()
    assert "step 4" in out[0] and out[0].endswith("falling back to the newest one")
    assert "step 6" in out[1] and out[1].endswith("falling back to the previous one")
    ckpts.close()
    assert not glob.glob(os.path.join(directory, "corrupt-*"))  # Readers move nothing.


def test_another_tree_structure_is_a_mismatch_not_damage(tmp_path, capsys):
    """Issue 25: the same shapes under other names used to be called unreadable (and a
    training run then set the steps aside). It is a readable checkpoint of another tree: a
    CheckpointMismatch naming the paths, and nothing is moved."""
    directory = saved(tmp_path, steps=(1, 2))
    renamed = {"v": target()["w"], "step": target()["step"]}  # Same shapes, other names.
    ckpts = Checkpoints(directory, keep=2)
    with pytest.raises(CheckpointMismatch) as raised:
        ckpts.restore_latest(renamed)
    assert raised.value.part == "model" and raised.value.step == 2
    assert "v (64,) not in the checkpoint" in str(raised.value), str(raised.value)
    assert "w (64,) only in the checkpoint" in str(raised.value)
    assert ckpts.steps() == [1, 2] and sorted(os.listdir(directory)) == ["1", "2"]
    assert "warning" not in capsys.readouterr().out
    ckpts.close()


def test_disk_full_while_the_manifest_is_written(tmp_path, monkeypatch, capsys):
    """The write error is one line; the step orbax committed without its manifest is not
    trusted on the next start."""
    directory = saved(tmp_path, steps=(1, 2))

    def disk_full(*_):
        raise OSError(28, "No space left on device")

    ckpts = Checkpoints(directory, keep=3)
    monkeypatch.setattr(checkpoint, "_write_manifest", disk_full)
    ckpts.save(3, tree(3))
    with pytest.raises(CheckpointWriteError) as raised:
        ckpts.wait()
    assert str(raised.value) == (
        f"could not write the checkpoint at step 3 to {directory}: "
        "[Errno 28] No space left on device"
    )
    ckpts.close()
    monkeypatch.undo()
    resumes_from_2(directory, capsys, f"no {MANIFEST}").close()


def test_a_bug_in_saving_is_not_reported_as_a_write_error(tmp_path, monkeypatch):
    ckpts = Checkpoints(str(tmp_path), keep=1)

    def broken(*_, **__):
        raise TypeError("not a storage problem")

    monkeypatch.setattr(ckpts.manager, "save", broken)
    ckpts.save(1, tree(1))
    with pytest.raises(TypeError):
        ckpts.wait()
    ckpts.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (needs root); skipped where mounting is not permitted."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full_during_a_save(small_disk, capfd):
    """Real ENOSPC from tensorstore inside orbax's background commit: one line naming step,
    folder and OS error, no traceback printed, the earlier steps intact."""
    directory = str(small_disk / "checkpoints")

    def big(step):  # 1.2 MB that does not compress: two fit in 3 MB, the third does not.
        return {"w": jax.random.normal(jax.random.key(step), (300_000,))}

    ckpts = Checkpoints(directory, keep=5)
    for step in (1, 2):
        ckpts.save(step, big(step))
        ckpts.wait()
    ckpts.save(3, big(3))
    with pytest.raises(CheckpointWriteError) as raised:
        ckpts.wait()
    message = str(raised.value)
    assert message == (
        f"could not write the checkpoint at step 3 to {directory}: "
        "[Errno 28] No space left on device"
    )
    assert ckpts.steps() == [1, 2]
    ckpts.close()  # Does not raise the same error again.
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    ckpts = Checkpoints(directory, keep=5)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), big(0))
    step, restored = ckpts.restore_latest(abstract)
    assert step == 2
    np.testing.assert_array_equal(restored["w"], big(2)["w"])
    ckpts.close()
    assert "warning" not in capfd.readouterr().out
    assert sorted(os.listdir(directory)) == ["1", "2"]  # The partial step 3 was cleaned up.
