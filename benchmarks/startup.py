"""Start-up: from `python launch.py --experiment=E` to its first training step, cold and warm.

    python benchmarks/startup.py [--experiment=quickstart] [--repeats=3] [--out=FILE]

Each run is a fresh process in a fresh workdir with a short `num_train_steps`. "First step"
is the `compile` event in metrics.jsonl: the loop writes it when the train step is compiled
(or loaded from the cache) and about to run, so its `wall_time` minus the moment the process
was started is the whole wait a user has before training begins: interpreter, imports, data,
model build, compilation. Three settings, interleaved:
- `cache off`: `--compilation_cache=off`;
- `cold cache`: a new, empty cache directory (compiles and writes it);
- `warm cache`: the same directory again (the step and eval come from the cache).
Also timed: `python -c "import cnnjax.modes.train"` alone (the import floor).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def first_step_s(experiment: str, workdir: str, cache: str, steps: int) -> dict:
    cmd = [
        sys.executable,
        os.path.join(ROOT, "launch.py"),
        f"--experiment={experiment}",
        f"--workdir={workdir}",
        f"--compilation_cache={cache}",
        f"--config.num_train_steps={steps}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-400:]}")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        events = [json.loads(line) for line in f]
    compiled = next(e for e in events if e["kind"] == "compile")
    return {
        "first_step_s": compiled["wall_time"] - t0,
        "compile_s": compiled["seconds"],
        "whole_s": wall,
    }


def import_s() -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-c", "import cnnjax.modes.train"], cwd=ROOT, check=True)
    return time.time() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="quickstart")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="training steps per run")
    p.add_argument("--out", default="")
    args = p.parse_args()
    rows = {"cache off": [], "cold cache": [], "warm cache": []}
    imports = []
    with tempfile.TemporaryDirectory(prefix="cnnjax-startup-") as tmp:
        for r in range(args.repeats):
            imports.append(import_s())
            cache = os.path.join(tmp, f"cache{r}")
            for name, where in (("cache off", "off"), ("cold cache", cache), ("warm cache", cache)):
                workdir = os.path.join(tmp, f"r{r}-{name.replace(' ', '-')}")
                res = first_step_s(args.experiment, workdir, where, args.steps)
                rows[name].append(res)
                print(
                    f"[r{r}] {name:<10}  first step after {res['first_step_s']:5.2f} s "
                    f"(compile event {res['compile_s']:.2f} s; whole run {res['whole_s']:.1f} s)",
                    flush=True,
                )
    print(
        f"\n{args.experiment}: process start -> first training step, median [min-max] of "
        f"{args.repeats}"
    )
    med = lambda xs: f"{statistics.median(xs):.2f} s [{min(xs):.2f}-{max(xs):.2f}]"
    print(f"  import cnnjax.modes.train alone: {med(imports)}")
    for name, res in rows.items():
        print(f"  {name:<10}: {med([x['first_step_s'] for x in res])}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"imports_s": imports, **rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
