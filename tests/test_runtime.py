"""cnnjax.runtime: the XLA flags launch.py sets before JAX starts, and that they change nothing
but speed (the same losses with XLA:CPU's YNNPACK fusions on and off)."""

import json
import os
import subprocess
import sys

import pytest
from launching import ROOT, TINY_QUICKSTART, launch

from cnnjax import runtime


def test_add_xla_flag_appends_once_and_the_users_setting_wins():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert runtime.add_xla_flag("--xla_gpu_deterministic_ops=true", env)
    assert not runtime.add_xla_flag("--xla_gpu_deterministic_ops=true", env)  # Idempotent.
    assert env["XLA_FLAGS"] == (
        "--xla_force_host_platform_device_count=2 --xla_gpu_deterministic_ops=true"
    )
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
    assert not runtime.tune_xla_cpu(env=mine, version=(0, 10))
    assert mine["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot"
    empty = {}
    assert runtime.tune_xla_cpu(env=empty, version=(0, 10))
    assert empty["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="
    some = {}
    assert runtime.tune_xla_cpu(" Eltwise, reduce", env=some, version=(0, 11))
    assert some["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=eltwise,reduce"
    assert not runtime.tune_xla_cpu("default", env=some, version=(0, 10))


def test_an_unknown_fusion_kind_is_one_line_and_exit_2_before_xla_sees_it(tmp_path):
    proc = launch(
        [*TINY_QUICKSTART, f"--workdir={tmp_path / 'run'}", "--config.xla_cpu_ynn_fusions=eltwse"]
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: config.xla_cpu_ynn_fusions: unknown fusion kind 'eltwse'. Did you mean "
        "'eltwise'? Use a comma list of dot, eltwise, reduce, individual_dot, "
        "individual_convolution; '' for none or 'default' for jaxlib's."
    ]


@pytest.mark.parametrize("version", [(0, 0), (0, 9), (0, 12), (1, 0)])
def test_no_flag_outside_the_measured_jaxlib_releases(version):
    # XLA aborts the whole process on a flag its release does not know.
    env = {}
    assert not runtime.tune_xla_cpu(env=env, version=version)
    assert env == {}


_PROBE = """
import sys
from cnnjax import runtime
if sys.argv[1] == "tune":
    runtime.tune_xla_cpu()
import jax, jax.numpy as jnp
conv = lambda w, x: jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")).sum()
step = jax.jit(jax.grad(conv)).lower(jnp.ones((3, 3, 64, 64)), jnp.ones((8, 32, 32, 64)))
print("__ynn_fusion" in step.compile().as_text())
"""


@pytest.mark.skipif(
    not runtime._TESTED[0] <= runtime.jaxlib_version() < runtime._TESTED[1],
    reason="the installed jaxlib is outside the releases the flag was measured on",
)
def test_the_flag_reaches_xla_and_takes_the_convolutions_off_ynnpack():
    def ynn(*args):
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.split()[-1]

    assert ynn("default") == "True"  # jaxlib's default: the conv gradient in a YNNPACK fusion.
    assert ynn("tune") == "False"


def _losses(workdir, tuning, *extra):
    # XLA's default flags (not launching.py's faster-compiling ones): what a user's run gets.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--experiment=resnet18_cifar",
            f"--workdir={workdir}",
            f"--xla_cpu_tuning={tuning}",
            "--compilation_cache=off",
            "--config.data.name=synthetic",
            "--config.batch_size=8",
            "--config.num_train_steps=4",
            "--config.log_every_steps=1",
            "--config.eval_every_steps=4",
            "--config.checkpoint_every_steps=4",
            "--config.optim.lr=0.001",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "done:" in proc.stdout, proc.stderr
    events = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [e["loss"] for e in events if e["kind"] in ("train", "eval")]


def test_resnet18_trains_to_the_same_losses_with_and_without_the_cpu_tuning(tmp_path):
    # Convolutions, BatchNorm, residual adds and SGD through jaxlib's default YNNPACK fusions,
    # the experiment's (eltwise, reduce) and none: 4 steps and the evaluation agree to float32
    # rounding (a miscompilation is off by far more).
    default = _losses(tmp_path / "default", "false")
    assert len(default) == 5
    for name, extra in [("tuned", ()), ("none", ("--config.xla_cpu_ynn_fusions=",))]:
        tuned = _losses(tmp_path / name, "true", *extra)
        assert tuned == pytest.approx(default, rel=2e-4), name
        assert tuned[0] == pytest.approx(default[0], rel=1e-5), name
