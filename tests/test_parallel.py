"""Scale: the same experiment on 1 device, 8 fake devices and 2 real processes; checkpoints move
between device counts; each step function compiles once."""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from launching import ROOT, TINY_QUICKSTART, launch, launch_env

EIGHT = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


def eval_events(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [e for e in map(json.loads, f) if e["kind"] == "eval"]


@pytest.fixture(scope="module")
def eight_device_run(tmp_path_factory):
    """(workdir, stdout) of the 20-step tiny quickstart finished on 8 fake devices: the run
    `quickstart_20_steps` (tests/conftest.py) makes on one. Read-only: copy it to resume it."""
    workdir = tmp_path_factory.mktemp("eight_devices") / "run"
    args = [*TINY_QUICKSTART, "--config.num_train_steps=20", f"--workdir={workdir}"]
    return workdir, launch(args, env=EIGHT, check=True).stdout


def test_eight_devices_train_like_one(eight_device_run, quickstart_20_steps):
    workdir, stdout = eight_device_run
    assert "on 8 cpu device(s)" in stdout
    one, eight = eval_events(quickstart_20_steps)[-1], eval_events(workdir)[-1]
    assert one["step"] == eight["step"] == 20
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-4)
    assert abs(eight["accuracy"] - one["accuracy"]) <= 1 / 359


def test_checkpoint_from_8_devices_restores_on_1_and_continues(eight_device_run, tmp_path):
    shutil.copytree(eight_device_run[0], tmp_path, dirs_exist_ok=True)
    args = [*TINY_QUICKSTART, f"--workdir={tmp_path}"]
    proc = launch([*args, "--config.num_train_steps=30"], check=True)
    assert "Resuming from the checkpoint at step 20" in proc.stdout
    assert "on 1 cpu device(s)" in proc.stdout
    final = eval_events(tmp_path)[-1]
    assert final["step"] == 30 and np.isfinite(final["loss"]) and final["accuracy"] > 0.3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_like_one_process_with_two_devices(tmp_path):
    args = [*TINY_QUICKSTART, "--config.num_train_steps=20"]
    launch(
        [*args, f"--workdir={tmp_path / 'one'}"],
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
        check=True,
    )

    port = _free_port()
    env = launch_env()  # One cpu device each, as `launch` gives the runs.
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(ROOT, "launch.py"),
                *args,
                f"--workdir={tmp_path / 'two'}",
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "on 2 cpu device(s)" in outs[0][0]
    one, two = eval_events(tmp_path / "one"), eval_events(tmp_path / "two")
    assert [e["step"] for e in one] == [e["step"] for e in two]
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4)
        assert abs(a["accuracy"] - b["accuracy"]) <= 1 / 359


def test_each_step_function_compiles_once(tmp_path, caplog):
    import jax

    import experiments
    from cnnjax.overrides import apply_overrides
    from cnnjax.train import loop

    config = apply_overrides(
        experiments.EXPERIMENTS["quickstart"].get_config(),
        [
            ("num_train_steps", "30"),
            ("batch_size", "32"),
            ("eval_every_steps", "10"),
            ("log_every_steps", "5"),
            ("checkpoint_every_steps", "0"),
        ],
    )
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            loop.train_and_evaluate(config, str(tmp_path))
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    # 30 steps over 2 epochs, 3 evaluations: still one compilation each.
    assert sum("jit(fused)" in m for m in compiled) == 1, compiled
    assert sum("jit(evaluate)" in m for m in compiled) == 1, compiled
