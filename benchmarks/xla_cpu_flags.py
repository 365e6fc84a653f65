"""The training step under several XLA_FLAGS settings, one fresh process each, interleaved.

    python benchmarks/xla_cpu_flags.py --experiment=resnet18_cifar --steps=4 --repeats=2 \
        --flags="|--xla_cpu_experimental_ynn_fusion_type=" [KEY=VALUE ...]

`--flags` is a '|'-separated list of XLA_FLAGS values ('' is jaxlib's defaults). Each
measurement is `cnnjax.modes.benchmark.time_train_step` (the loop's fused step on synthetic data
of the experiment's shape; KEY=VALUE are config overrides, e.g. batch_size=128) in its own
process, because XLA reads its flags once per process. launch.py's own tuning
(`cnnjax.runtime`) is not applied: the flags given are the whole setting.
"""

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(experiment: str, steps: int, overrides: list[str]) -> str:
    sys.path.insert(0, ROOT)
    import experiments
    from cnnjax.modes import benchmark
    from cnnjax.overrides import apply_overrides

    pairs = [("data.name", "synthetic")] + [tuple(kv.split("=", 1)) for kv in overrides]
    config = apply_overrides(experiments.EXPERIMENTS[experiment].get_config(), pairs)
    t = benchmark.time_train_step(config, steps_per_run=steps, warmup=2)
    return f"{t.images_per_sec:,.1f} img/s, {t.ms_per_step:,.1f} ms/step"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="resnet18_cifar")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--flags", default="|--xla_cpu_experimental_ynn_fusion_type=")
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="config KEY=VALUE")
    args = p.parse_args()
    if args.measure:
        print(measure(args.experiment, args.steps, args.overrides))
        return 0
    settings = args.flags.split("|")
    for repeat in range(args.repeats):
        for flags in settings:
            env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
            cmd = [sys.executable, __file__, "--measure", f"--experiment={args.experiment}"]
            cmd += [f"--steps={args.steps}", *args.overrides]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = (proc.stdout if proc.returncode == 0 else proc.stderr).strip().splitlines()
            print(f"[r{repeat}] XLA_FLAGS='{flags}': {lines[-1] if lines else '(no output)'}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
