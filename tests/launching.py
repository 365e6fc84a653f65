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


def launch(args, *, env=None, timeout=300, check=False):
    """Runs `python launch.py ARGS` from the project root; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("XLA_FLAGS", None) if env is None or "XLA_FLAGS" not in env else None
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch.py"), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"launch.py {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc
