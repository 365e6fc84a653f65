"""Shared test helpers: running `launch.py` as a user would, in a subprocess.

A plain module (on the path through pytest's `pythonpath`), not a conftest: conftest modules
in several test folders would shadow one another."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A quickstart shrunk to a few seconds: fewer steps, frequent logs/evals/checkpoints.
TINY_QUICKSTART = [
    "--experiment=quickstart",
    "--config.num_train_steps=40",
    "--config.batch_size=32",
    "--config.log_every_steps=5",
    "--config.eval_every_steps=20",
    "--config.checkpoint_every_steps=10",
]


# XLA:CPU flags for the runs tests start (launched here, or in-process: tests/conftest.py). A
# shrunk run spends most of its time compiling: LLVM at -O1 with its expensive passes off and
# XLA:CPU's older (non "fusion emitter") code generator compile several times faster (a tiny
# quickstart: 18 s -> 12 s; Xception's two phases: 51 s -> 29 s; same metrics), and run as fast
# (2 epochs of real CIFAR-10: 37 s either way). Not -O0 (tests/models/conftest.py's `fast_jit`,
# for functions run once): its unoptimized loops made FCN-8s' evaluation 40x slower.
FAST_COMPILE_XLA_FLAGS = (
    "--xla_backend_optimization_level=1",
    "--xla_llvm_disable_expensive_passes=true",
    "--xla_cpu_use_fusion_emitters=false",
)


def launch_env(env=None):
    """The environment of a launched run: ours with `env` on top. XLA_FLAGS are only those of
    `env` (e.g. a device count) and FAST_COMPILE_XLA_FLAGS, not this process's."""
    flags = [*(env or {}).get("XLA_FLAGS", "").split(), *FAST_COMPILE_XLA_FLAGS]
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), "XLA_FLAGS": " ".join(flags)}


def launch(args, *, env=None, timeout=300, check=False):
    """Runs `python launch.py ARGS` from the project root; returns the CompletedProcess."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch.py"), *args],
        cwd=ROOT,
        env=launch_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"launch.py {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc
