"""`--mode=eval`: the best (else the latest readable) checkpoint of a run, on the test split."""

from cnnjax import runs
from cnnjax.errors import UserError


def run(config, args) -> int:
    if not args.workdir:
        raise UserError("--mode=eval needs the run to evaluate: pass --workdir=RUN_DIR.")
    task, result = runs.evaluate_checkpoint(config, args.workdir)
    print(f"{args.experiment} @ step {result['step']}: {task.test_line(result)}")
    return 0
