"""`--mode=train` (the default): train the experiment in its workdir, resuming if it has one."""

import datetime
import os

from cnnjax.train import loop


def default_workdir(name: str) -> str:
    """A fresh `runs/<experiment>-<date>-<time>`."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{name}-{stamp}")


def run(config, args) -> int:
    workdir = args.workdir or default_workdir(args.experiment)
    outcome = loop.train_and_evaluate(config, workdir, experiment_name=args.experiment)
    if outcome.status == "completed" and outcome.eval_metrics:
        m, metric = outcome.eval_metrics, config.best_metric
        print(
            f"done: test {metric} {m[metric]:.4f}, loss {m['loss']:.4f} after "
            f"{outcome.step:,} steps; outputs in {workdir}",
            flush=True,
        )
    return 0
