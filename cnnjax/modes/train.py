"""`--mode=train` (the default): train the experiment in its workdir, resuming if it has one."""

import datetime
import os
import re

from cnnjax.modes import origin
from cnnjax.train import loop


def default_workdir(name: str) -> str:
    """A fresh `runs/<experiment>-<date>-<time>` (`my_exp:7` gives `runs/my_exp_7-...`)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^\w.-]+", "_", name)  # No colon or slash in a folder's name.
    return os.path.join("runs", f"{safe}-{stamp}")


def run(config, args) -> int:
    workdir = args.workdir or default_workdir(args.experiment)
    record = origin.record(args.origin) if args.origin is not None else None
    outcome = loop.train_and_evaluate(
        config, workdir, experiment_name=args.experiment, run_record=record
    )
    if outcome.status == "completed" and outcome.eval_metrics:
        m, metric = outcome.eval_metrics, config.best_metric
        print(
            f"done: test {metric} {m[metric]:.4f}, loss {m['loss']:.4f} after "
            f"{outcome.step:,} steps; outputs in {workdir}",
            flush=True,
        )
    return 0
