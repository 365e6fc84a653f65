"""cnnjax.memory: the estimates' arithmetic, the budgets, XLA's RESOURCE_EXHAUSTED as one line,
and a dataset too big for memory stopped in one line before anything big is allocated."""

import os
import resource
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest
from launching import ROOT, TINY_QUICKSTART, launch_env

from cnnjax import cli, memory
from cnnjax.errors import UserError

GB = 10**9
# The address space a launched run gets below: JAX starts in ~1.5 GB of it, so what is left is
# far too little for the 4096x4096 digits (30 GB), and RSS can never pass it.
_ADDRESS_SPACE = 3 * 2**30


def _launch_limited(args, tmp_path, address_space=_ADDRESS_SPACE):
    """Runs launch.py ARGS under `ulimit -v`; (exit code, stdout, stderr, peak RSS in bytes)."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))  # noqa: E731
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "launch.py"), *args],
            cwd=ROOT,
            env=launch_env(),
            stdout=o,
            stderr=e,
            preexec_fn=limit,
        )
        deadline = time.monotonic() + 300
        peak = 0
        while (done := os.wait4(proc.pid, os.WNOHANG))[0] == 0:
            peak = max(peak, _high_water_mark(proc.pid))
            if time.monotonic() > deadline:
                proc.kill()
                done = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(done[1])  # Reaped here: Popen must not wait.
    return proc.returncode, out.read_text(), err.read_text(), peak


def _high_water_mark(pid: int) -> int:
    """The peak RSS of process `pid` since its exec (VmHWM), in bytes; 0 once it is gone.

    Not wait4's ru_maxrss: with a preexec_fn the child is forked from this test process, and
    that counts the pytest worker's own memory (GBs late in a suite) as the child's peak."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def test_an_image_size_too_big_for_memory_is_one_line_exit_2_before_any_big_allocation(tmp_path):
    """The issue's case: 1,797 digits at 4096x4096 are 30 GB; it used to abort (exit 134) in
    XLA with `Check failed: buffer_.IsConcrete()` and 60 lines of C++ and Python stacks."""
    workdir = tmp_path / "run"
    args = [*TINY_QUICKSTART, "--config.data.image_size=4096", f"--workdir={workdir}"]
    code, stdout, stderr, peak_rss = _launch_limited(args, tmp_path)
    assert code == 2, (code, stdout, stderr)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("error: Not enough memory: 1,797 images resized to 4096x4096x1"), line
    assert "(30.1 GB)" in line and "--config.data.image_size" in line, line
    assert "ulimit -v" in line, line  # What limited it.
    assert "Traceback" not in stdout + stderr and "Check failed" not in stderr
    assert not workdir.exists()  # Stopped while loading, before the run began.
    assert peak_rss < 1 * GB, peak_rss  # Nothing big was allocated on the way.


def test_what_the_devices_would_hold_is_checked_before_the_upload(tmp_path):
    """The resized set fits, but evaluating in batches of 100,000 pads its 359 test images to
    3.3 GB (on device and, while it uploads, on the host): refused before anything is padded."""
    args = [
        *TINY_QUICKSTART,
        "--config.data.image_size=128",
        "--config.eval_batch_size=100000",
        f"--workdir={tmp_path / 'run'}",
    ]
    code, stdout, stderr, peak_rss = _launch_limited(args, tmp_path)
    assert code == 2, (code, stdout, stderr)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stdout + stderr, stderr
    assert lines[0].startswith("error: Not enough memory: the padded test set's host copy (1.6 GB)")
    assert "--config.eval_batch_size (now 100000)" in lines[0]
    assert peak_rss < 1 * GB, peak_rss


def test_a_folder_too_big_to_decode_in_memory_says_to_stream_it(tmp_path, monkeypatch):
    import ml_collections
    from PIL import Image

    from cnnjax import data

    for split in ("train", "test"):
        for label in ("a", "b"):
            os.makedirs(tmp_path / split / label)
            Image.new("RGB", (6, 5)).save(tmp_path / split / label / "0.png")
    monkeypatch.setattr(memory, "host_budget", lambda: memory.Budget(10**6, "a small host"))
    config = ml_collections.ConfigDict(
        {"name": f"folder:{tmp_path}", "image_size": 512, "feeding": "device"}
    )
    with pytest.raises(memory.OutOfMemoryError) as e:
        data.load(config)  # 4 images of 512x512x3 = 3.1 MB: before any is decoded.
    assert str(e.value).startswith(f"Not enough memory: the decoded images of folder:{tmp_path}")
    assert "(3.1 MB)" in str(e.value) and "--config.data.feeding=stream" in str(e.value)


# ---- The arithmetic of the estimates.


def test_resize_needs_count_the_resized_copies_and_one_float32_chunk():
    shapes = [(1438, 8, 8, 1), (359, 8, 8, 1)]  # The digits' two splits.
    (what, resized), (_, chunk) = memory.resize_needs(shapes, 4096)
    assert resized == 1797 * 4096 * 4096 * 1  # N x size x size x C uint8.
    assert what == "1,797 images resized to 4096x4096x1 uint8"
    # 67 MB of float32 per image: over RESIZE_CHUNK_BYTES, so one image per chunk.
    assert memory.resize_chunk((8, 8), 4096, 1) == 1
    assert chunk == 4 * (8 * 8 + 4096 * 4096)
    # Small images: a chunk is as many as fit RESIZE_CHUNK_BYTES, or the whole split.
    per_image = 4 * 3 * (32 * 32 + 64 * 64)
    assert memory.resize_chunk((32, 32), 64, 3) == memory.RESIZE_CHUNK_BYTES // per_image
    (_, resized), (_, chunk) = memory.resize_needs([(100, 32, 32, 3)], 64)
    assert (resized, chunk) == (100 * 64 * 64 * 3, 100 * per_image)
    assert memory.resize_needs([(10, 32, 32, 3)], 32) == []  # Nothing changes size.


def test_tree_bytes_counts_arrays_shapes_keys_and_scalars():
    tree = {
        "kernel": np.ones((3, 3, 1, 6), np.float32),
        "abstract": jax.ShapeDtypeStruct((10, 4), jax.numpy.bfloat16),
        "key": jax.random.key(0),  # An extended dtype: 8 bytes for the default PRNG.
        "count": np.int32(7),
    }
    assert memory.tree_bytes(tree) == 54 * 4 + 40 * 2 + 8 + 4


def test_largest_fitting_is_the_largest_size_whose_need_fits():
    need = lambda s: 1797 * s * s  # noqa: E731
    fits = memory.largest_fitting(need, 2 * GB, 4095)
    assert need(fits) <= 2 * GB < need(fits + 1)
    assert memory.largest_fitting(need, 100, 4095) == 0
    assert memory.largest_fitting(need, 10**15, 4095) == 4095


def test_require_names_every_need_the_total_the_budget_and_the_fix():
    budget = memory.Budget(2 * GB, "the process's address-space limit, ulimit -v")
    memory.require([("a", GB), ("b", GB)], budget, "Use less.")  # Exactly fits: no error.
    with pytest.raises(memory.OutOfMemoryError) as e:
        memory.require(
            [("the images", 30_100 * 10**6), ("a chunk", 67 * 10**6)], budget, "Use less."
        )
    assert isinstance(e.value, UserError)  # Exit 2, one line.
    assert str(e.value) == (
        "Not enough memory: the images (30.1 GB) + a chunk (67.0 MB) = 30.2 GB of host memory, "
        "but 2.0 GB is available (the process's address-space limit, ulimit -v). Use less."
    )
    memory.require([("x", 10**18)], None, "")  # Nothing known about the machine: no refusal.


def test_cpu_devices_share_the_host_and_accelerators_are_checked_each(monkeypatch):
    monkeypatch.setattr(memory, "host_budget", lambda: memory.Budget(10 * GB, "host"))
    cpu = types.SimpleNamespace(platform="cpu")
    memory.require_on_devices([("state", 3 * GB)], [cpu] * 3, "fix")  # 9 GB of 10.
    with pytest.raises(memory.OutOfMemoryError, match=r"state x 4 CPU devices \(12.0 GB\)"):
        memory.require_on_devices([("state", 3 * GB)], [cpu] * 4, "fix")

    def gpu(free):
        stats = {"bytes_limit": 80 * GB, "bytes_in_use": 80 * GB - free}
        return types.SimpleNamespace(
            platform="gpu", device_kind="H100", id=0, memory_stats=lambda: stats
        )

    memory.require_on_devices([("state", 3 * GB)], [gpu(4 * GB)] * 8, "fix")
    with pytest.raises(memory.OutOfMemoryError, match="3.0 GB of device memory, but 2.0 GB"):
        memory.require_on_devices([("state", 3 * GB)], [gpu(4 * GB), gpu(2 * GB)], "fix")
    with pytest.raises(memory.OutOfMemoryError, match="host memory"):  # Host copies, too.
        memory.require_on_devices([], [gpu(4 * GB)], "fix", host_needs=[("copy", 11 * GB)])


def test_compiled_bytes_are_xla_temporaries_and_outputs_not_donated():
    stats = types.SimpleNamespace(
        temp_size_in_bytes=2_000, output_size_in_bytes=1_500, alias_size_in_bytes=1_400
    )
    assert memory.compiled_bytes(types.SimpleNamespace(memory_analysis=lambda: stats)) == 2_100
    assert memory.compiled_bytes(types.SimpleNamespace(memory_analysis=lambda: None)) is None
    # A real compiled program: temporaries of a 1 MB float32 intermediate.
    f = jax.jit(lambda x: (jax.numpy.sin(x) @ x).sum()).lower(np.ones((512, 512), np.float32))
    assert 0 < memory.compiled_bytes(f.compile()) < 100 * 2**20


def test_host_budget_is_the_tightest_limit_and_reads_cgroups(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 20 * GB)
    monkeypatch.setattr(memory, "_cgroup_headroom", lambda: None)
    monkeypatch.setattr(memory, "_address_space_headroom", lambda: 3 * GB)
    assert memory.host_budget().available == 3 * GB
    assert "ulimit -v" in memory.host_budget().source
    monkeypatch.undo()
    # cgroup v2: limit - (usage - reclaimable page cache).
    (tmp_path / "memory.max").write_text("8000000000\n")
    (tmp_path / "memory.current").write_text("5000000000\n")
    (tmp_path / "memory.stat").write_text("anon 1000000000\nfile 3000000000\nshmem 1000000000\n")
    assert memory._cgroup_headroom(str(tmp_path)) == 8 * GB - (5 * GB - 2 * GB)
    (tmp_path / "memory.max").write_text("max\n")
    assert memory._cgroup_headroom(str(tmp_path)) is None
    assert memory._cgroup_headroom(str(tmp_path / "absent")) is None


def test_the_address_space_limit_counts_in_a_process_that_has_one():
    code = (
        "import resource; from cnnjax import memory; "
        "resource.setrlimit(resource.RLIMIT_AS, (2**31, 2**31)); b = memory.host_budget(); "
        "print(b.available, b.source)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    available, source = out.split(" ", 1)
    assert 0 < int(available) < 2**31 and "ulimit -v" in source


# ---- XLA's and Python's reports of running out.


def _quickstart(**overrides):
    """The quickstart config with `overrides`, as the command line would set them."""
    import experiments
    from cnnjax.overrides import apply_overrides

    defaults = experiments.EXPERIMENTS["quickstart"].get_config()
    return apply_overrides(defaults, [(k, str(v)) for k, v in overrides.items()])


def _resource_exhausted():
    """What XLA raises when a buffer cannot be allocated (the real exception type)."""
    return jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.\n"
        "BufferAssignment OOM Debugging.\nBufferAssignment stats: ..."
    )


def test_resource_exhausted_in_a_step_becomes_one_line_naming_the_fix():
    def step():  # A training step whose buffers do not fit.
        raise _resource_exhausted()

    fix = memory.fix(("batch_size", 1024), ("data.image_size", 224))
    with pytest.raises(memory.OutOfMemoryError) as e:
        with memory.exhaustion_is_user_error(fix, "while training"):
            step()
    message = str(e.value)
    assert "\n" not in message and isinstance(e.value, UserError)
    assert message.startswith(
        "Out of memory while training (RESOURCE_EXHAUSTED: Out of memory while trying to "
        "allocate 17179869184 bytes). Use a smaller --config.batch_size (now 1024), a smaller "
        "--config.data.image_size (now 224) or --config.data.feeding=stream"
    ), message
    # XLA:CPU's wrapped form and Python's MemoryError are the same thing.
    for error in (
        jax.errors.JaxRuntimeError(
            "INTERNAL: Error dispatching computation: Out of memory allocating 64828800 bytes."
        ),
        MemoryError("Unable to allocate 61.2 MiB for an array"),
    ):
        with pytest.raises(memory.OutOfMemoryError, match=r"\((MemoryError: )?.*llocat"):
            with memory.exhaustion_is_user_error(fix):
                raise error


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("INTERNAL: something else"),
        ValueError("RESOURCE_EXHAUSTED: no"),  # Not XLA's runtime error type.
        # A full disk under a checkpoint (tensorstore): exit 4 elsewhere, never "memory".
        RuntimeError("RESOURCE_EXHAUSTED: Error writing file: [os_error_code=28]"),
    ],
)
def test_other_errors_pass_unchanged(error):
    with pytest.raises(type(error)) as e:
        with memory.exhaustion_is_user_error("fix"):
            raise error
    assert e.value is error


def test_the_training_loop_reports_resource_exhausted_from_its_step(monkeypatch, tmp_path):
    """The conversion is where the loop compiles and steps: a fake fused step raising XLA's
    error gives the run's one line, with the run's batch and image size."""
    from cnnjax.train import feeds, loop

    def run(self, state, sums, step, n):
        raise _resource_exhausted()

    monkeypatch.setattr(feeds.DeviceTrainFeed, "compile", lambda self, state, sums: None)
    monkeypatch.setattr(feeds.DeviceEvaluator, "compile", lambda self, state: None)
    monkeypatch.setattr(feeds.DeviceTrainFeed, "run", run)
    config = _quickstart(batch_size=32)
    with pytest.raises(memory.OutOfMemoryError) as e:
        loop.train_and_evaluate(config, str(tmp_path / "run"), write_report=False)
    assert str(e.value).startswith("Out of memory while training (RESOURCE_EXHAUSTED: ")
    assert "--config.batch_size (now 32)" in str(e.value)
    assert "--config.data.image_size (now 32)" in str(e.value)


def test_xla_plan_of_a_compiled_step_is_checked_before_it_first_runs(monkeypatch):
    """vgg11 at batch 1024 used to abort (std::bad_alloc) in its first step: the plan XLA makes
    when compiling says how much the step will allocate, before it runs."""
    from cnnjax.train import experiment, feeds

    config = _quickstart(batch_size=32)
    exp = experiment.build(config)
    feed, evaluator = feeds.make_feeds(
        config, exp.data, exp.mesh, exp.state_shardings, exp.task, exp.abstract_state
    )
    state, sums = experiment.initialize(exp), exp.task.zero_train_sums()
    evaluator.compile(state)
    monkeypatch.setattr(memory, "host_budget", lambda: memory.Budget(10**5, "a tiny machine"))
    with pytest.raises(memory.OutOfMemoryError) as e:
        feed.compile(state, sums)
    assert str(e.value).startswith("Not enough memory: the training step: XLA's temporaries")
    # LeNet-5's 62,558 parameters and Adam's two moments of them, in float32.
    assert "a checkpoint's copy of the state (750.7 kB)" in str(e.value)
    assert "--config.batch_size (now 32)" in str(e.value)
    with pytest.raises(memory.OutOfMemoryError, match="the evaluation: XLA's temporaries"):
        evaluator(state)


def test_the_command_line_maps_running_out_anywhere_to_exit_2_and_one_line(monkeypatch, capsys):
    from absl import logging

    monkeypatch.setattr(logging, "set_verbosity", lambda level: None)  # Leave pytest's logs be.
    monkeypatch.setattr(cli, "run", lambda argv: (_ for _ in ()).throw(_resource_exhausted()))
    with pytest.raises(SystemExit) as e:
        cli.main(["launch.py"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Out of memory (RESOURCE_EXHAUSTED")
    monkeypatch.setattr(cli, "run", lambda argv: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # Anything else keeps its traceback.
        cli.main(["launch.py"])


# ---- What the estimates let through: every run that fits.


def test_resizing_in_chunks_gives_the_same_pixels(monkeypatch):
    from cnnjax import data

    images = np.random.default_rng(0).integers(0, 256, (37, 9, 11, 3), dtype=np.uint8)
    whole = data.resize(images, 20)
    monkeypatch.setattr(memory, "RESIZE_CHUNK_BYTES", 4 * 3 * (9 * 11 + 20 * 20) * 5)
    assert memory.resize_chunk((9, 11), 20, 3) == 5
    np.testing.assert_array_equal(data.resize(images, 20), whole)
