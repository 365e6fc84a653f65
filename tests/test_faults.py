"""Damaged checkpoints as a user meets them: through launch.py, in a subprocess."""

import json
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


def _ckpt_listing(run):
    return sorted(os.listdir(run / "checkpoints"))


def test_a_changed_optimizer_is_a_mismatch_not_damage_and_fresh_optimizer_resumes(
    quickstart_20_steps, tmp_path
):
    """Issue 25: the NaN stop advises grad_clip_norm; resuming with it used to call every
    checkpoint unreadable. Now: exit 2 naming the setting, nothing moved; then an explicit
    fresh optimizer state keeps the parameters."""
    run = tmp_path / "run"
    shutil.copytree(quickstart_20_steps, run)
    before = _ckpt_listing(run)
    args = [*TINY_QUICKSTART, f"--workdir={run}", "--config.num_train_steps=30"]
    proc = launch([*args, "--config.optim.grad_clip_norm=1.0"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, lines
    assert "another optimizer state" in lines[0] and "unreadable" not in lines[0]
    assert "optim.grad_clip_norm 0.0 -> 1.0" in lines[0]
    assert "--config.resume.fresh_optimizer=true" in lines[0]
    assert "warning" not in proc.stdout
    assert _ckpt_listing(run) == before  # Nothing renamed, nothing rolled back.

    proc = launch(
        [*args, "--config.optim.grad_clip_norm=1.0", "--config.resume.fresh_optimizer=true"]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Resuming from the parameters at step 20" in proc.stdout
    assert "fresh optimizer state" in proc.stdout
    steps = [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
    assert max(steps) == 30 and not any(d.startswith("corrupt") for d in _ckpt_listing(run))


def test_a_changed_phase_two_optimizer_keeps_the_phase_two_checkpoint(tmp_path):
    """A two-phase run resumed in phase 2 with another finetune_optim: exit 2, the phase-2 step
    is neither renamed nor rolled back to phase 1's."""
    run = tmp_path / "run"
    args = [
        *TINY_QUICKSTART,
        f"--workdir={run}",
        "--config.checkpoint_every_steps=5",
        "--config.keep_checkpoints=10",
        "--config.transfer.freeze_pattern=^conv1",
        "--config.transfer.freeze_steps=10",
        "--config.transfer.finetune_lr=0.001",
    ]
    launch([*args, "--config.num_train_steps=20"], check=True)
    before = _ckpt_listing(run)
    longer = [*args, "--config.num_train_steps=25"]
    proc = launch([*longer, "--config.transfer.finetune_optim.grad_clip_norm=1.0"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert "step 20" in line and "transfer.finetune_optim.grad_clip_norm" in line, line
    assert _ckpt_listing(run) == before
    proc = launch(
        [
            *longer,
            "--config.transfer.finetune_optim.grad_clip_norm=1.0",
            "--config.resume.fresh_optimizer=true",
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Resuming from the parameters at step 20" in proc.stdout
