"""Damaged checkpoints as a user meets them: through launch.py, in a subprocess."""

import os
import shutil

import pytest
from launching import TINY_QUICKSTART, launch


def _damage(step_dir):
    for root, _, files in os.walk(step_dir):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(os.urandom(7))


def test_a_damaged_newest_checkpoint_is_set_aside_and_training_resumes(
    quickstart_20_steps, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(quickstart_20_steps, run)
    ckpts = run / "checkpoints"
    steps = sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())
    _damage(ckpts / str(steps[-1]))
    proc = launch([*TINY_QUICKSTART, f"--workdir={run}", "--config.num_train_steps=30"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    warnings = [line for line in out.splitlines() if line.startswith("warning: checkpoint")]
    assert len(warnings) == 1 and f"step {steps[-1]}" in warnings[0], warnings
    assert f"Resuming from the checkpoint at step {steps[-2]}" in out
    assert any(d.startswith(f"corrupt-{steps[-1]}-") for d in os.listdir(ckpts))  # Not deleted.


def test_no_readable_checkpoint_is_exit_2_and_nothing_is_touched(quickstart_20_steps, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(quickstart_20_steps, run)
    ckpts = run / "checkpoints"
    for d in os.listdir(ckpts):
        if d.isdigit():
            _damage(ckpts / d)
    before = sorted(os.listdir(ckpts))
    for mode in ("train", "eval"):
        proc = launch([*TINY_QUICKSTART, f"--workdir={run}", f"--mode={mode}"])
        assert proc.returncode == 2, (mode, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "no readable checkpoint" in lines[0].lower(), lines
        assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(os.listdir(ckpts)) == before  # Never a silent fresh start over the run.


def test_checkpoints_that_is_a_file_is_exit_2(tmp_path):
    (tmp_path / "checkpoints").write_text("not a folder")
    proc = launch([*TINY_QUICKSTART, f"--workdir={tmp_path}"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_disk_full_is_one_line_exit_4_and_earlier_checkpoints_stay(tmp_path):
    """The workdir on a real 3 MB tmpfs: the save that does not fit ends the run with one line."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        run = mount / "run"
        proc = launch(
            [
                "--experiment=quickstart",
                "--config.num_train_steps=200",
                "--config.checkpoint_every_steps=20",
                # None deleted: the saves add up past 3 MB whatever the timing of deletions
                # (with the default retention, a run sometimes fit and exited 0).
                "--config.keep_checkpoints=1000",
                f"--workdir={run}",
            ]
        )
        assert proc.returncode == 4, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0], lines
        assert "Traceback" not in proc.stdout + proc.stderr
        steps = sorted(int(d) for d in os.listdir(run / "checkpoints") if d.isdigit())
        assert steps, "earlier checkpoints must stay"
        # They are readable: evaluating the run works.
        evaluated = launch(["--experiment=quickstart", f"--workdir={run}", "--mode=eval"])
        assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
