"""Throughput measurements: the training step, the input pipelines, the whole loop.

`python launch.py --experiment=X --mode=benchmark` times, after warm-up and with device-side
synchronization (`block_until_ready`), the exact fused step the training loop runs (batch cut +
augmentation + forward + backward + optimizer update) on device-resident synthetic data of the
experiment's shape, and reports images/s, ms/step, compile time and model FLOP utilisation:
3 x the analytic forward FLOPs per image (forward + backward ~ 3 forwards) x images/s over the
device's peak dense bf16/fp32 rate.
"""

import dataclasses
import time

import jax
import numpy as np

from cnnjax import data as data_lib
from cnnjax.train import feeds
from cnnjax.train.experiment import build, compute_dtype

# Peak dense matrix throughput per device in TFLOP/s (bf16; fp32 where noted), vendor figures.
# H100/H200 SXM: ~790 TFLOP/s bf16 measured on this project's lent GPUs (989 nominal).
PEAK_TFLOPS = {
    "h100": 790.0,
    "h200": 790.0,
    "a100": 312.0,
    "v100": 125.0,
    "l4": 121.0,
    "tpu v4": 275.0,
    "tpu v5 lite": 197.0,  # v5e
    "tpu v5e": 197.0,
    "tpu v5p": 459.0,
    "tpu v6 lite": 918.0,  # Trillium
}


def device_peak_tflops(device=None) -> float | None:
    """The table's peak for `device` (default: the first device), or None when unknown (CPU)."""
    kind = (device or jax.devices()[0]).device_kind.lower()
    for key, peak in PEAK_TFLOPS.items():
        if key in kind:
            return peak
    return None


def mfu_peak(config) -> tuple[float | None, str]:
    """(peak TFLOP/s per device that MFU divides by, or None; why there is none).

    `benchmark.peak_tflops` > 0 wins. Otherwise the bf16 table, for bf16 compute only: a
    float32 step measured against a bf16 peak would understate it by a device-dependent factor.
    """
    given = float(config.get("benchmark", {}).get("peak_tflops", 0.0) or 0.0)
    if given > 0:
        return given, ""

    peak = device_peak_tflops()
    if peak is None:
        return None, "no peak known for this device; give --config.benchmark.peak_tflops"
    if compute_dtype(str(config.dtype)) != np.dtype("bfloat16"):
        return None, (
            "the table holds bf16 peaks and this step computes in "
            f"{np.dtype(compute_dtype(str(config.dtype))).name}; give "
            "--config.benchmark.peak_tflops"
        )
    return peak, ""


@dataclasses.dataclass
class StepTiming:
    images_per_sec: float
    ms_per_step: float
    compile_s: float
    steps: int
    batch_size: int
    train_flops_per_image: float
    mfu: float | None
    peak_tflops: float | None = None  # What MFU is relative to, per device.
    no_mfu_reason: str = ""  # Why there is no MFU (when `mfu` is None).
    steps_per_execution: int = 1  # Steps per device call (`config.steps_per_execution`).


def synthetic_like(dataset: data_lib.Dataset, num_examples: int, seed: int = 0):
    """Random uint8 data with `dataset`'s image shape, classes and normalization, in memory.
    Tasks' targets (boxes, masks, ...) are the real ones, cycled to `num_examples` rows."""
    rng = np.random.default_rng(seed)
    shape = (num_examples, *dataset.image_shape)
    rows = lambda targets, n: {k: v[np.arange(n) % len(v)] for k, v in targets.items()}
    return dataclasses.replace(
        dataset,
        train_targets=rows(dataset.train_targets, num_examples),
        test_targets=rows(dataset.test_targets, 8),
        train_images=rng.integers(0, 256, shape, dtype=np.uint8),
        train_labels=rng.integers(0, dataset.num_classes, num_examples).astype(np.int32),
        test_images=rng.integers(0, 256, (8, *shape[1:]), dtype=np.uint8),
        test_labels=np.zeros(8, np.int32),
        train_source=None,
        test_source=None,
    )


def time_train_step(
    config,
    *,
    steps_per_run: int = 20,
    warmup: int = 3,
    dataset: data_lib.Dataset | None = None,
    profile_dir: str | None = None,
) -> StepTiming:
    """Times the training loop's fused step on device-resident synthetic data.

    profile_dir: also record the timed steps with the JAX profiler (a Perfetto trace) there,
    for `benchmarks/profile_step.py`; the profiler's own overhead is then in the timing."""
    import contextlib

    from cnnjax.summary import summarize

    real = dataset or data_lib.load(config.data)
    k = feeds.steps_per_execution(config)  # Steps per device call, as the loop makes them.
    batches = k * -(-4 // k)  # An "epoch" of whole calls.
    data = synthetic_like(real, batches * int(config.batch_size))
    exp = build(config, data)
    feed = feeds.DeviceTrainFeed(config, data, exp.mesh, exp.state_shardings, exp.task)
    state = exp.init_state()
    sums = jax.jit(exp.task.zero_train_sums, out_shardings=feeds.parallel.replicated(exp.mesh))()
    t0 = time.perf_counter()
    feed.compile(state, sums)
    compile_s = time.perf_counter() - t0
    calls = lambda steps: -(-steps // k)
    step = 0
    for _ in range(calls(warmup)):
        state, sums = feed.run(state, sums, step, k)
        step += k
    jax.block_until_ready((state, sums))
    profiling = (
        jax.profiler.trace(profile_dir, create_perfetto_trace=True)
        if profile_dir
        else contextlib.nullcontext()
    )
    with profiling:
        t0 = time.perf_counter()
        for _ in range(calls(steps_per_run)):
            state, sums = feed.run(state, sums, step, k)
            step += k
        jax.block_until_ready((state, sums))
        elapsed = time.perf_counter() - t0
    steps_per_run = calls(steps_per_run) * k
    ips = steps_per_run * int(config.batch_size) / elapsed
    fwd = summarize(exp.model, data.image_shape).flops
    train_flops = 3.0 * fwd
    peak, why = mfu_peak(config)
    n_dev = exp.mesh.devices.size
    mfu = train_flops * ips / (peak * 1e12 * n_dev) if peak else None
    return StepTiming(
        ips,
        1e3 * elapsed / steps_per_run,
        compile_s,
        steps_per_run,
        int(config.batch_size),
        train_flops,
        mfu,
        peak,
        why,
        k,
    )


@dataclasses.dataclass
class LoopTiming:
    steps: int
    wall_s: float  # The whole `train_and_evaluate` call: build, compile, steps, eval, save.
    compile_s: float  # The train step's compilation, as the loop reports it.
    images_per_sec: float  # Steady state between the first and the last log step.


def time_loop(config, *, steps: int, dataset: data_lib.Dataset | None = None) -> LoopTiming:
    """The real training loop for `steps` steps on the experiment's own data, in a scratch
    workdir: its input feed, a metrics sync every steps/4, one evaluation and one checkpoint at
    the end, no report. Its images/s against `time_train_step`'s is the loop's overhead."""
    import contextlib
    import io
    import json
    import os
    import tempfile

    from cnnjax.overrides import apply_overrides
    from cnnjax.train.loop import train_and_evaluate

    k = feeds.steps_per_execution(config)
    log_every = k * -(-max(1, steps // 4) // k)  # Whole device calls between syncs.
    run_config = apply_overrides(
        config,
        [
            ("num_train_steps", str(steps)),
            ("log_every_steps", str(log_every)),
            ("eval_every_steps", "0"),
            ("checkpoint_every_steps", "0"),
        ],
    )
    with tempfile.TemporaryDirectory(prefix="cnnjax-bench-") as workdir:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # Its own console lines.
            train_and_evaluate(run_config, workdir, data=dataset, write_report=False)
        wall = time.perf_counter() - t0
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            events = [json.loads(line) for line in f]
    compile_s = next(e["seconds"] for e in events if e["kind"] == "compile")
    train = [e for e in events if e["kind"] == "train"]
    first, last = train[0], train[-1]
    if last["step"] > first["step"]:
        seconds = last["elapsed_s"] - first["elapsed_s"]
        ips = (last["step"] - first["step"]) * int(config.batch_size) / max(seconds, 1e-9)
    else:  # A single log step: its own figure (it includes the first steps' dispatch).
        ips = first["images_per_sec"]
    return LoopTiming(steps, wall, compile_s, ips)


def time_device_pipeline(
    config, *, steps_per_run: int = 50, dataset: data_lib.Dataset | None = None
) -> float:
    """images/s of the on-device input pipeline alone (batch cut + augment + normalize)."""
    from cnnjax import parallel
    from cnnjax.data import pipeline

    real = dataset or data_lib.load(config.data)
    data = synthetic_like(real, 8 * int(config.batch_size)) if not real.in_memory else real
    mesh = parallel.make_mesh()
    images = parallel.replicate(data.train_images, mesh)
    bs = int(config.batch_size)
    perm = pipeline.epoch_permutation(np.int32(0), 0, data.num_train)

    @jax.jit
    def batch(images, perm, i, rng):
        x = pipeline.take_batch({"image": images}, perm, i, bs)["image"]
        x = jax.lax.with_sharding_constraint(x, parallel.data_sharded(mesh))
        x = pipeline.augment(x, rng, config.augment)
        return pipeline.normalize(x, data.mean, data.std)

    n_steps = data.num_train // bs
    jax.block_until_ready(batch(images, perm, 0, jax.random.key(0)))
    t0 = time.perf_counter()
    out = None
    for i in range(steps_per_run):
        out = batch(images, perm, i % n_steps, jax.random.key(i))
    jax.block_until_ready(out)
    return steps_per_run * bs / (time.perf_counter() - t0)


def time_stream_pipeline(
    config, *, batches: int = 20, dataset: data_lib.Dataset | None = None
) -> float:
    """images/s of the streaming pipeline alone (read + decode + augment on the host)."""
    from cnnjax.data import streaming, transforms
    from cnnjax.data.records import Records

    data = dataset or data_lib.load(config.data)
    source = (
        Records.of_arrays(data.train_images, data.train_labels)
        if data.in_memory
        else data.train_source
    )
    stream = streaming.IndexedStream(
        source,
        global_batch=int(config.batch_size),
        seed=0,
        transform=transforms.make_train_transform(config.augment, int(config.data.image_size)),
        num_threads=int(config.data.get("num_threads", 16)),
        process_index=0,
        process_count=1,
    )
    it = stream.batches(0)
    next(it)  # Thread start-up and the first decode outside the timing.
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * int(config.batch_size) / (time.perf_counter() - t0)


def format_timing(name: str, t: StepTiming) -> str:
    dev = jax.devices()[0]
    mfu = (
        f"{100 * t.mfu:.1f}% of {t.peak_tflops:g} TFLOP/s per device"
        if t.mfu is not None
        else f"n/a ({t.no_mfu_reason})"
    )
    return "\n".join(
        [
            f"{name}: train step on {jax.device_count()} x {dev.device_kind} ({dev.platform})",
            f"  batch {t.batch_size}, {t.steps} timed steps after warm-up"
            + (f", {t.steps_per_execution} per device call" if t.steps_per_execution > 1 else ""),
            f"  images/s        {t.images_per_sec:,.0f}",
            f"  ms/step         {t.ms_per_step:.2f}",
            f"  compile         {t.compile_s:.1f} s",
            f"  train GFLOPs/img {t.train_flops_per_image / 1e9:.3f} (3 x analytic forward)",
            f"  MFU             {mfu}",
        ]
    )


def format_loop(t: LoopTiming, step: StepTiming) -> str:
    """The loop's lines of the benchmark report, its images/s against the bare step's."""
    share = t.images_per_sec / step.images_per_sec if step.images_per_sec else float("nan")
    return "\n".join(
        [
            f"  loop            {t.images_per_sec:,.0f} images/s over {t.steps} steps "
            f"({100 * share:.0f}% of the bare step: real feed, metric syncs)",
            f"  loop wall       {t.wall_s:.1f} s (build, compile {t.compile_s:.1f} s, steps, "
            "one evaluation and checkpoint)",
        ]
    )


def run(config, args) -> int:
    dataset = data_lib.load(config.data)  # Once, for all three measurements.
    timing = time_train_step(
        config,
        steps_per_run=int(config.benchmark.steps),
        warmup=int(config.benchmark.warmup),
        dataset=dataset,
    )
    print(format_timing(args.experiment, timing))
    device_ips = time_device_pipeline(config, dataset=dataset)
    stream_ips = time_stream_pipeline(config, dataset=dataset)
    print(
        f"  input, on device  {device_ips:,.0f} images/s (batch cut + augmentation + normalization)"
    )
    print(
        f"  input, streaming  {stream_ips:,.0f} images/s (read + decode + augmentation on the host)"
    )
    if int(config.benchmark.loop_steps) > 0:
        loop_timing = time_loop(config, steps=int(config.benchmark.loop_steps), dataset=dataset)
        print(format_loop(loop_timing, timing))
    return 0
