"""The loop's promises: kill -9 + re-run is bit-identical, SIGTERM saves and exits 0,
a non-finite loss stops with the step number and leaves the last good checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from launching import ROOT, TINY_QUICKSTART, launch, launch_env

RESUME_ARGS = [*TINY_QUICKSTART, "--config.num_train_steps=60", "--config.augment.flip=true"]


def final_params(workdir) -> dict:
    ckpt_dir = os.path.join(workdir, "checkpoints")
    step = max(int(p) for p in os.listdir(ckpt_dir) if p.isdigit())
    tree = ocp.PyTreeCheckpointer().restore(os.path.join(ckpt_dir, str(step), "default"))
    return step, tree["state"]["params"]


def events(workdir, kind):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(ln) for ln in f if json.loads(ln)["kind"] == kind]


def strip_timing(event):
    return {k: v for k, v in event.items() if k not in ("wall_time", "elapsed_s", "images_per_sec")}


@pytest.mark.parametrize("feeding", ["device", "stream"])
def test_kill_9_then_rerun_is_bit_identical(tmp_path, feeding):
    args = [*RESUME_ARGS, f"--config.data.feeding={feeding}"]
    reference = tmp_path / "uninterrupted"
    launch([*args, f"--workdir={reference}"], check=True)

    resumed = tmp_path / "killed"
    # Killed right after the step-40 checkpoint save was started (the save may be torn), then
    # again mid-interval at step 47, then run to the end with the same command.
    for kill_at in (40, 47):
        proc = launch(
            [*args, f"--workdir={resumed}"], env={"CNNJAX_FAULT_KILL_AT_STEP": str(kill_at)}
        )
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    proc = launch([*args, f"--workdir={resumed}"], check=True)
    assert "Resuming from the checkpoint at step" in proc.stdout

    step_a, params_a = final_params(reference)
    step_b, params_b = final_params(resumed)
    assert step_a == step_b == 60
    flat_a = ocp.tree.to_flat_dict(params_a)
    flat_b = ocp.tree.to_flat_dict(params_b)
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=str(key))
    for kind in ("train", "eval"):
        assert [strip_timing(e) for e in events(reference, kind)] == [
            strip_timing(e) for e in events(resumed, kind)
        ], kind


def test_sigterm_during_start_up_still_saves_and_exits_0(tmp_path):
    """A preemption notice while the run compiles (before step 1) is not a crash: the run
    stops at the first step boundary with a checkpoint."""
    workdir = tmp_path / "run"
    args = [*TINY_QUICKSTART, "--config.batch_size=24", f"--workdir={workdir}"]
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch.py"), *args, "--compilation_cache=off"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (workdir / "checkpoints").exists():  # Made before the restore and the compile.
        assert time.time() < deadline and proc.poll() is None, "the run never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    preempted = events(workdir, "preempted")
    assert len(preempted) == 1 and preempted[0]["step"] >= 1
    assert "checkpoint saved" in out + err


def _start_long_run(workdir):
    """(args, process): a quickstart of 100,000 steps logging every step, started in the
    background, for the tests that stop it with a signal."""
    args = [
        *TINY_QUICKSTART,
        "--config.num_train_steps=100000",
        "--config.log_every_steps=1",
        f"--workdir={workdir}",
    ]
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch.py"), *args],
        cwd=ROOT,
        env=launch_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return args, proc


def test_sigterm_saves_a_checkpoint_and_exits_0(tmp_path):
    workdir = tmp_path / "run"
    args, proc = _start_long_run(workdir)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and '"kind": "train"' in metrics.read_text():
            break
        time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("training never started")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    preempted = events(workdir, "preempted")
    assert len(preempted) == 1 and preempted[0]["signal"] == signal.SIGTERM
    step = preempted[0]["step"]
    assert f"at step {step}; checkpoint saved" in out + err
    saved = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
    assert saved[-1] == step

    # The same command picks up exactly there.
    proc = launch(
        [*args[:-2], "--config.num_train_steps=" + str(step + 5), f"--workdir={workdir}"],
        check=True,
    )
    assert f"Resuming from the checkpoint at step {step}" in proc.stdout


def test_non_finite_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    # The learning rate jumps by 1e12 half-way: fine for 20 steps, then the loss blows up.
    blow_up = [
        *TINY_QUICKSTART,
        "--config.optim.name=sgd",
        "--config.optim.lr=0.01",
        "--config.schedule.warmup_epochs=0",
        "--config.schedule.name=piecewise",
        "--config.schedule.boundaries=(0.5,)",
        "--config.schedule.decay_factor=1e12",
    ]
    proc = launch([*blow_up, f"--workdir={workdir}"])
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    # Losses are fetched every 5 steps (21..25 here), yet the message names the exact step.
    assert message.startswith("error: loss became nan at step 22;"), message
    assert "last good checkpoint (step 20)" in message
    # Checked independently: logging every step, step 21's loss is the last finite one.
    every_step = tmp_path / "every_step"
    proc = launch([*blow_up, "--config.log_every_steps=1", f"--workdir={every_step}"])
    assert proc.returncode == 3 and "at step 22;" in proc.stderr
    logged = events(every_step, "train")
    assert [e["step"] for e in logged][-1] == 21 and np.isfinite(logged[-1]["loss"])
    saved = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
    assert saved[-1] == 20
    tree = ocp.PyTreeCheckpointer().restore(str(workdir / "checkpoints" / "20" / "default"))
    for leaf in ocp.tree.to_flat_dict(tree["state"]["params"]).values():
        assert np.all(np.isfinite(leaf))


def test_streaming_and_on_device_feeding_train_identically(tmp_path):
    # Without augmentation both feeds give the step the same examples in the same order, so
    # the runs agree exactly.
    args = [*TINY_QUICKSTART, "--config.num_train_steps=30", "--config.augment.crop_padding=0"]
    launch([*args, f"--workdir={tmp_path / 'device'}", "--config.data.feeding=device"], check=True)
    launch([*args, f"--workdir={tmp_path / 'stream'}", "--config.data.feeding=stream"], check=True)
    for kind in ("train", "eval"):
        assert [strip_timing(e) for e in events(tmp_path / "device", kind)] == [
            strip_timing(e) for e in events(tmp_path / "stream", kind)
        ]
    _, a = final_params(tmp_path / "device")
    _, b = final_params(tmp_path / "stream")
    for key, value in ocp.tree.to_flat_dict(a).items():
        np.testing.assert_array_equal(value, ocp.tree.to_flat_dict(b)[key])


def test_ctrl_c_twice_exits_at_once_without_a_traceback_and_the_run_resumes(tmp_path):
    workdir = tmp_path / "run"
    args, proc = _start_long_run(workdir)
    ckpts = workdir / "checkpoints"
    saved = lambda: sorted(int(d) for d in os.listdir(ckpts) if d.isdigit())  # noqa: E731
    deadline = time.time() + 120
    while not (ckpts.is_dir() and saved()):  # A first good checkpoint: something to lose.
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("training never saved a checkpoint")
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.002)  # The second one lands while the first one's checkpoint is written.
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130), err  # 0: the save won the race.
    assert "Traceback" not in out + err
    if proc.returncode == 130:
        assert "interrupted again" in err.strip().splitlines()[-1]
    # Nothing lost: the same command resumes from a readable checkpoint.
    total = saved()[-1] + 5
    resumed = launch([*args[:-2], f"--config.num_train_steps={total}", f"--workdir={workdir}"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Resuming from the checkpoint at step" in resumed.stdout
    assert "Traceback" not in resumed.stdout + resumed.stderr
