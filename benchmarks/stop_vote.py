"""What agreeing on a stop costs a multi-process run: the all-reduce the training loop's
`_StopFlag` runs every `_AGREE_EVERY_STEPS` steps, timed alone and inside training.

    python benchmarks/stop_vote.py [--processes=2] [--votes=300] [--steps=300] [--repeats=3]

`--processes` CPU processes (jax.distributed over gloo, one device each, on this machine):

- vote: the median time of one `_StopFlag._max_over_processes` call (dispatch, all-reduce,
  host read), `--votes` of them after a warm-up;
- training: the tiny quickstart (batch 32, `--steps` steps, no evaluation or checkpoint until
  the end) with the vote at every step, every 10 steps, and never, `--repeats` runs each,
  interleaved; the median ms/step of the train events (log every 50 steps; the first interval,
  with the compile, left out), median over the runs.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import processes


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--votes", type=int, default=300)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--process_id", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--dir", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.process_id >= 0:
        return worker(args)
    processes.run_workers(
        __file__, args.processes, extra=[f"--dir={tempfile.mkdtemp(prefix='stop-vote-')}"]
    )


def worker(args):
    processes.one_device_per_process()
    import jax

    import experiments
    from cnnjax import parallel
    from cnnjax.overrides import apply_overrides
    from cnnjax.train import loop

    parallel.initialize_distributed(
        f"localhost:{args.port}", args.processes, args.process_id, mode="on"
    )
    flag = loop._StopFlag()
    for _ in range(20):
        flag._max_over_processes(0)
    times = []
    for _ in range(args.votes):
        t0 = time.perf_counter()
        flag._max_over_processes(0)
        times.append(time.perf_counter() - t0)
    vote_ms = statistics.median(times) * 1e3

    per_step = {1: [], 10: [], 10**9: []}
    for repeat, every in [(r, k) for r in range(args.repeats) for k in per_step]:
        loop._AGREE_EVERY_STEPS = every
        config = apply_overrides(
            experiments.EXPERIMENTS["quickstart"].get_config(),
            [
                ("num_train_steps", str(args.steps)),
                ("batch_size", "32"),
                ("log_every_steps", "50"),
                ("eval_every_steps", "0"),
                ("checkpoint_every_steps", "0"),
            ],
        )
        workdir = os.path.join(args.dir, f"every_{every}_{repeat}")
        loop.train_and_evaluate(config, workdir, write_report=False)
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "metrics.jsonl")) as f:
                events = [e for e in map(json.loads, f) if e["kind"] == "train"]
            ms = [32 / e["images_per_sec"] * 1e3 for e in events[1:] if e["images_per_sec"]]
            per_step[every].append(statistics.median(ms))
    if jax.process_index() == 0:
        never, one, ten = (statistics.median(per_step[k]) for k in (10**9, 1, 10))
        print(
            f"{args.processes} processes: one vote {vote_ms:.2f} ms (median of {args.votes}); "
            f"tiny quickstart {never:.2f} ms/step without votes, {one:.2f} with one every "
            f"step (+{(one - never) / never:.0%}), {ten:.2f} every 10 steps "
            f"(+{(ten - never) / never:.0%}); medians of {args.repeats} runs each",
            flush=True,
        )


if __name__ == "__main__":
    main()
