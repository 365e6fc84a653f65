"""Where the training step's time goes: the fused step under the JAX profiler, summed by op.

    python benchmarks/profile_step.py --experiment=resnet18_cifar [--steps=20] [--top=25] \
        [--out=DIR] [KEY=VALUE ...]

Runs `cnnjax.modes.benchmark.time_train_step` (the loop's own fused step on synthetic data of the
experiment's shape; KEY=VALUE are config overrides, e.g. batch_size=512) with a Perfetto trace,
then prints:
- how busy the device was: the union of its op intervals per step against the wall time per
  step (the rest is idle: host dispatch, syncs, gaps between kernels);
- the ops with the most device time, grouped by name, with their share.
On a GPU the ops are its kernels; on a CPU, XLA's thunks on its worker threads (ops it runs on
the calling thread are not counted there, so "busy" is a lower bound on a CPU). The trace stays
in --out for ui.perfetto.dev or TensorBoard.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import experiments  # noqa: E402
from cnnjax import runtime  # noqa: E402
from cnnjax.modes import benchmark  # noqa: E402
from cnnjax.overrides import apply_overrides  # noqa: E402

# Events of XLA:CPU's threads that are not ops: waiting, and the executor's wrapper around a
# whole program's ops (its children are counted instead).
_NOT_OPS = ("Await", "Wait", "Barrier", "ThunkExecutor::")


def device_events(trace: dict) -> tuple[list[dict], str]:
    """(complete events of the device's ops, what they are): the "/device:" processes'
    events on an accelerator; else XLA's CPU worker threads' ("tf_XLA...")."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    meta = [e for e in events if e.get("ph") == "M"]
    processes = {e["pid"]: e["args"]["name"] for e in meta if e.get("name") == "process_name"}
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in meta if e.get("name") == "thread_name"
    }
    complete = [e for e in events if e.get("ph") == "X" and e.get("dur", 0) > 0]
    devices = {pid for pid, name in processes.items() if name.startswith("/device:")}
    if devices:
        return [e for e in complete if e["pid"] in devices], "device kernels"
    xla = [
        e
        for e in complete
        if threads.get((e["pid"], e["tid"]), "").startswith("tf_XLA")
        and not any(word in e["name"] for word in _NOT_OPS)
    ]
    return xla, "XLA:CPU thunks"


def busy_us(events: list[dict]) -> float:
    """Microseconds covered by at least one event (overlapping streams or threads count once)."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
        if start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def summarize(events: list[dict], steps: int, wall_ms_per_step: float, top: int, what: str):
    busy_ms = busy_us(events) / 1e3 / steps
    lines = [
        f"device busy {busy_ms:.3f} ms per step of {wall_ms_per_step:.3f} ms wall "
        f"({100 * busy_ms / wall_ms_per_step:.0f}% busy; {what})",
        "",
        "| op | calls/step | ms/step | share of busy |",
        "| --- | --- | --- | --- |",
    ]
    by_name = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        by_name[e["name"]][0] += 1
        by_name[e["name"]][1] += e["dur"]
    total = sum(us for _, us in by_name.values()) or 1.0
    ranked = sorted(by_name.items(), key=lambda item: -item[1][1])
    for name, (calls, us) in ranked[:top]:
        share = 100 * us / total
        lines.append(
            f"| `{name[:70]}` | {calls / steps:g} | {us / 1e3 / steps:.3f} | {share:.1f}% |"
        )
    rest = sum(us for _, (_, us) in ranked[top:])
    if rest:
        share = 100 * rest / total
        lines.append(f"| ({len(ranked) - top} more) | | {rest / 1e3 / steps:.3f} | {share:.1f}% |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="resnet18_cifar")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default="/tmp/cnnjax-profile")
    p.add_argument(
        "overrides", nargs="*", help="config KEY=VALUE (data.name=synthetic is the default)"
    )
    args = p.parse_args()

    pairs = [("data.name", "synthetic")] + [tuple(kv.split("=", 1)) for kv in args.overrides]
    config = apply_overrides(experiments.EXPERIMENTS[args.experiment].get_config(), pairs)
    # As launch.py does, before JAX starts its backend; XLA_FLAGS can say otherwise.
    runtime.tune_xla_cpu(config.get("xla_cpu_ynn_fusions", ""))
    timing = benchmark.time_train_step(
        config, steps_per_run=args.steps, warmup=args.warmup, profile_dir=args.out
    )
    print(benchmark.format_timing(args.experiment, timing))
    traces = sorted(
        glob.glob(os.path.join(args.out, "**", "perfetto_trace.json.gz"), recursive=True)
    )
    with gzip.open(traces[-1]) as f:
        events, what = device_events(json.load(f))
    print(summarize(events, timing.steps, timing.ms_per_step, args.top, what))
    print(f"\ntrace: {traces[-1]}")


if __name__ == "__main__":
    main()
