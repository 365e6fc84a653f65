"""benchmarks/profile_step.py: which trace events are the device's work, and how busy it was."""

import importlib.util
import os
import subprocess
import sys

import pytest
from launching import ROOT, launch_env

_spec = importlib.util.spec_from_file_location(
    "profile_step", os.path.join(ROOT, "benchmarks", "profile_step.py")
)
profile_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_step)


def _meta(kind, pid, name, tid=0):
    return {"ph": "M", "name": kind, "pid": pid, "tid": tid, "args": {"name": name}}


def _op(pid, tid, name, ts, dur):
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": ts, "dur": dur}


def test_gpu_trace_counts_the_device_processes_only():
    trace = {
        "traceEvents": [
            _meta("process_name", 1, "/host:CPU"),
            _meta("process_name", 2, "/device:GPU:0"),
            _op(1, 0, "PjitFunction(fused)", 0, 500),
            _op(2, 7, "convolution_fusion", 10, 100),
            _op(2, 8, "loop_add_fusion", 50, 100),  # Another stream, overlapping: 10..150.
            _op(2, 7, "convolution_fusion", 300, 50),
        ]
    }
    events, what = profile_step.device_events(trace)
    assert what == "device kernels"
    assert sorted(e["name"] for e in events) == [
        "convolution_fusion",
        "convolution_fusion",
        "loop_add_fusion",
    ]
    assert profile_step.busy_us(events) == 140 + 50
    table = profile_step.summarize(events, steps=2, wall_ms_per_step=0.25, top=1, what=what)
    assert "device busy 0.095 ms per step of 0.250 ms wall (38% busy" in table
    assert "| `convolution_fusion` | 1 | 0.075 | 60.0% |" in table
    assert "| (1 more) | | 0.050 | 40.0% |" in table


def test_cpu_trace_counts_xla_threads_without_waits_and_wrappers():
    trace = [
        _meta("process_name", 1, "/host:CPU"),
        _meta("thread_name", 1, "python", tid=1),
        _meta("thread_name", 1, "tf_XLAEigen/123", tid=2),
        _op(1, 1, "PjitFunction(fused)", 0, 900),
        _op(1, 2, "ThunkExecutor::Execute", 0, 800),
        _op(1, 2, "ynn_fusion.4", 0, 300),
        _op(1, 2, "SlinkyThreadPool::Await", 300, 100),
        _op(1, 2, "transpose_copy_fusion", 400, 0),  # Zero-length events are dropped.
    ]
    events, what = profile_step.device_events(trace)
    assert what == "XLA:CPU thunks"
    assert [e["name"] for e in events] == ["ynn_fusion.4"]


@pytest.mark.parametrize(
    "spans, busy", [([], 0), ([(0, 10), (20, 5)], 15), ([(0, 10), (2, 3)], 10)]
)
def test_busy_time_is_the_union_of_intervals(spans, busy):
    events = [{"ts": ts, "dur": dur} for ts, dur in spans]
    assert profile_step.busy_us(events) == busy


def test_the_script_profiles_a_real_step(tmp_path):
    out = tmp_path / "trace"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "profile_step.py"),
            "--experiment=quickstart",
            "--steps=2",
            "--warmup=1",
            "--top=3",
            f"--out={out}",
            "batch_size=16",
        ],
        cwd=ROOT,
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "batch 16, 2 timed steps" in proc.stdout
    busy = next(line for line in proc.stdout.splitlines() if line.startswith("device busy"))
    assert float(busy.split()[2]) > 0
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == 3  # --top=3 named ops, then the rest.
    assert list(out.glob("plugins/profile/*/perfetto_trace.json.gz"))
