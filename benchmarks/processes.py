"""Runs a benchmark script as several local CPU processes of one jax.distributed program.

    if args.process_id >= 0:
        return worker(args)           # In each process.
    processes.run_workers(__file__, args.processes, extra=[...])   # In the parent.

The parent starts `n` copies of the script with `--process_id=i --port=P` (a free localhost
port for the coordinator) after its own arguments, waits for them (killing the rest when one
fails to end), and exits with the worst exit code. Each worker sees one CPU device.
"""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_workers(script: str, n: int, *, extra=(), timeout: float = 1800) -> None:
    """Starts `n` processes of `script` with this process's arguments plus `extra`; exits."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, os.path.abspath(script), *sys.argv[1:], *extra]
    procs = [
        subprocess.Popen([*argv, f"--process_id={i}", f"--port={port}"], cwd=ROOT) for i in range(n)
    ]
    try:
        codes = [proc.wait(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    sys.exit(max(codes))


def one_device_per_process() -> None:
    """A worker's first call, before JAX starts: one CPU device, and cnnjax importable."""
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    sys.path.insert(0, ROOT)
