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


@pytest.fixture
def tmpfs():
    """mount(path, size): a real tmpfs of `size` ("8k", "1m") at `path`, unmounted after the
    test; skips the test where mounting is not allowed."""
    import subprocess

    mounted = []

    def mount(path, size: str):
        path.mkdir(parents=True, exist_ok=True)
        made = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        )
        if made.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", str(path)], capture_output=True)


# A run that logs at every step and saves no checkpoint by itself (only at the end), so the
# only checkpoint a failed log leaves is the one saved for it.
_LOG_EVERY_STEP = [
    *TINY_QUICKSTART,
    "--config.num_train_steps=100000",
    "--config.log_every_steps=1",
    "--config.eval_every_steps=0",
    "--config.checkpoint_every_steps=0",
]


def test_a_full_disk_under_tensorboard_is_exit_4_with_a_checkpoint_of_that_step(tmp_path, tmpfs):
    """TensorBoard's folder on an 8 KB tmpfs: its writer thread fails (it used to die there and
    leave the training thread blocked for ever, SIGTERM ignored); the run stops with one line,
    saves the step it was at, and the same command resumes from it once there is space."""
    import re
    import subprocess

    run = tmp_path / "run"
    tensorboard = tmpfs(run / "tensorboard", "8k")
    proc = launch([*_LOG_EVERY_STEP, f"--workdir={run}"], timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, lines
    assert f"could not write {tensorboard}: [Errno 28] No space left on device" in lines[0]
    step = int(re.search(r"the checkpoint of step (\d+) is saved", lines[0])[1])
    assert "run the same command to resume" in lines[0]
    assert [d for d in os.listdir(run / "checkpoints") if d.isdigit()] == [str(step)]

    subprocess.run(["umount", str(tensorboard)], check=True)  # Space again.
    resumed = launch(
        [*_LOG_EVERY_STEP, f"--config.num_train_steps={step + 3}", f"--workdir={run}"],
        check=True,
    )
    assert f"Resuming from the checkpoint at step {step}" in resumed.stdout


@pytest.mark.parametrize("free_kb", [8, 60])
def test_a_disk_filling_up_under_the_logs_is_one_line_exit_4_at_once(tmp_path, tmpfs, free_kb):
    """The whole workdir on a tmpfs that fills up during training, leaving 8 or 60 KB:
    metrics.jsonl or TensorBoard fails first (with 8 KB it was a traceback; with 60 KB the run
    hung for ever, SIGTERM ignored), then the checkpoint does not fit either; the run ends at
    once, exit 4, one line."""
    import contextlib
    import time

    from launching import start

    small = tmpfs(tmp_path / "small", "2m")
    run = small / "run"
    proc = start([*_LOG_EVERY_STEP, f"--workdir={run}"])
    try:
        deadline = time.time() + 120
        metrics = run / "metrics.jsonl"
        while not (metrics.exists() and '"kind": "train"' in metrics.read_text()):
            assert time.time() < deadline and proc.poll() is None, "training never started"
            time.sleep(0.1)
        stat = os.statvfs(small)
        with contextlib.suppress(OSError):  # The run took the last pages first: full anyway.
            (small / "filler").write_bytes(bytes(stat.f_bavail * stat.f_frsize - free_kb * 1024))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 4, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out + err, lines
    assert "No space left on device" in lines[0] and "Free space" in lines[0], lines
    assert f"could not write {run}{os.sep}" in lines[0], lines  # metrics.jsonl or tensorboard.


def _damaged_copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_unreadable_lines_of_metrics_jsonl_are_one_warning_in_visualize_and_resume(
    quickstart_20_steps, tmp_path
):
    """Lines that hold no event (a byte that is not UTF-8, JSON that is not an object) used to
    be tracebacks in --mode=visualize and on resume, on every retry."""
    run = _damaged_copy(quickstart_20_steps, tmp_path)
    metrics = run / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines(keepends=True)
    lines[2:2] = [b'{"step": 5, "kind": "train", "note": "caf\xe9"}\n', b"[1, 2, 3]\n", b"42\n"]
    metrics.write_bytes(b"".join(lines))

    shown = launch([*TINY_QUICKSTART, f"--workdir={run}", "--mode=visualize"])
    assert shown.returncode == 0, shown.stdout + shown.stderr
    warnings = shown.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipped 3 unreadable lines")
    assert str(metrics) in warnings[0] and "Traceback" not in shown.stdout + shown.stderr
    assert (run / "plots" / "training_curves.png").exists()

    resumed = launch([*TINY_QUICKSTART, "--config.num_train_steps=25", f"--workdir={run}"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stderr.strip().splitlines() == warnings
    events = [json.loads(line) for line in metrics.read_text().splitlines()]  # Clean again.
    assert [e["step"] for e in events if e["kind"] == "train"] == [5, 10, 15, 20, 25]


def test_a_folder_in_place_of_metrics_jsonl_is_exit_2_naming_it(quickstart_20_steps, tmp_path):
    run = _damaged_copy(quickstart_20_steps, tmp_path)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    for mode in ("visualize", "train"):
        proc = launch([*TINY_QUICKSTART, f"--workdir={run}", f"--mode={mode}"])
        assert proc.returncode == 2, (mode, proc.stdout + proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, (mode, lines)
        assert str(run / "metrics.jsonl") in lines[0] and "move it aside" in lines[0], lines


def test_a_full_disk_when_the_run_starts_is_one_line_exit_4(tmp_path, tmpfs):
    """8 KB for the whole workdir: config.json, data.json, run.json or the first log line does
    not fit. It used to end in an OSError traceback; now one line, exit 4, and a file written
    before stays whole (atomic writes)."""
    small = tmpfs(tmp_path / "tiny", "8k")
    proc = launch([*TINY_QUICKSTART, f"--workdir={small / 'run'}"])
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, lines
    assert "No space left on device" in lines[0] and "Free space" in lines[0], lines
    for name in ("config.json", "data.json", "run.json"):
        written = small / "run" / name
        if written.exists():
            json.loads(written.read_text())  # Whole, never torn.
