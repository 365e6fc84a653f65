"""Shared test helpers: running `launch.py` as a user would, in a subprocess.

A plain module (on the path through pytest's `pythonpath`), not a conftest: conftest modules
in several test folders would shadow one another."""

import os
import socket
import subprocess
import sys
import tempfile
import time

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


def start(args, *, env=None, stderr=subprocess.PIPE) -> subprocess.Popen:
    """Starts `python launch.py ARGS` from the project root in the background (text pipes);
    the caller waits for it, signals it or kills it."""
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch.py"), *args],
        cwd=ROOT,
        env=launch_env(env),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


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


def free_port() -> int:
    """A TCP port free on this machine now (for a coordinator on localhost)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch_processes(args, n, *, env=None, envs=(), timeout=300):
    """Runs `python launch.py ARGS` as processes 0..n-1 of one multi-process run (one CPU
    device each unless `env` pads XLA_FLAGS; gloo over localhost). `envs[i]`: more variables for
    process i alone. Returns their CompletedProcess objects. Output goes to files, not pipes,
    so no process blocks on a full pipe while the others wait for it in a collective; if any
    is still running after `timeout` seconds, all are killed and the test fails with their
    output."""
    port = free_port()
    flags = [f"--coordinator_address=localhost:{port}", f"--num_processes={n}"]
    with tempfile.TemporaryDirectory(prefix="launch-processes-") as logs:
        procs = []
        try:
            for i in range(n):
                extra = envs[i] if i < len(envs) else {}
                with (
                    open(os.path.join(logs, f"{i}.out"), "w") as out,
                    open(os.path.join(logs, f"{i}.err"), "w") as err,
                ):
                    procs.append(
                        subprocess.Popen(
                            [
                                sys.executable,
                                os.path.join(ROOT, "launch.py"),
                                *args,
                                *flags,
                                f"--process_id={i}",
                            ],
                            cwd=ROOT,
                            env=launch_env({**(env or {}), **extra}),
                            stdout=out,
                            stderr=err,
                        )
                    )
            deadline = time.monotonic() + timeout
            for proc in procs:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            hung = False
        except subprocess.TimeoutExpired:
            hung = True
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        results = []
        for i, proc in enumerate(procs):
            with (
                open(os.path.join(logs, f"{i}.out")) as out,
                open(os.path.join(logs, f"{i}.err")) as err,
            ):
                results.append(
                    subprocess.CompletedProcess([i], proc.returncode, out.read(), err.read())
                )
    if hung:
        shown = "\n".join(
            f"--- process {i}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
            for i, r in enumerate(results)
        )
        raise AssertionError(f"{n} processes of launch.py {args} ran over {timeout} s:\n{shown}")
    return results
