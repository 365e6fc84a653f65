"""Open a finished run: its experiment and best state, for eval, predict and visualize.

A run is a workdir written by training (`cnnjax.train.loop`): checkpoints under
`checkpoints/`, settings in `config.json` (`cnnjax.workdir`). Nothing here writes into it.
"""

import os

from cnnjax import files, tasks
from cnnjax import workdir as workdir_lib
from cnnjax.data import record as data_record
from cnnjax.errors import UserError
from cnnjax.train import checkpoint, feeds
from cnnjax.train.experiment import Experiment, build, checkpoint_target, restored_state


def open_experiment(
    config, workdir: str, *, needs_data: bool = True, feeds: bool = False
) -> Experiment:
    """The experiment of the run in `workdir`, with the classes and normalization it was
    trained on (its data.json): a UserError names what changed when the data no longer
    matches. needs_data=False (predict, export): a run that recorded its data is opened without
    loading any (the training folder may be gone). feeds: the caller makes the training feeds
    (eval), which need the batch to divide among the devices; only running the model does
    not."""
    recorded = workdir_lib.read_data_record(workdir) if workdir else None
    if needs_data or recorded is None:
        return build(config, recorded=recorded, training=feeds)
    keys = tasks.task_class(config).target_keys
    return build(config, data_record.stand_in(recorded, keys), training=False)


def restore_best(config, workdir: str, exp: Experiment | None = None, *, latest: bool = False):
    """(experiment, state, step) from the best (else the latest readable) checkpoint of the run
    in `workdir` (with `latest`, the newest readable one); step is None, with a freshly
    initialized state, when there is none. `exp`: the run's experiment when already open
    (default: `open_experiment`, with its data)."""
    exp = open_experiment(config, workdir) if exp is None else exp
    directory = os.path.join(workdir, "checkpoints")
    if not files.exists(directory):  # A file there is Checkpoints' UserError.
        return exp, exp.init_state(), None
    ckpts = checkpoint.Checkpoints(
        directory, keep=int(config.keep_checkpoints), best_metric=config.best_metric, read_only=True
    )

    def target(step):
        return checkpoint_target(exp, exp.phase_of_state(step))

    try:
        if latest:
            step, restored = ckpts.restore_latest(target, delete_corrupt=False)
        else:
            step, restored = ckpts.restore_best(target)
    finally:
        ckpts.close()
    if restored is None:
        return exp, exp.init_state(), None
    return exp, restored_state(exp, restored, exp.phase_of_state(step)), step


def evaluate_checkpoint(config, workdir: str):
    """Evaluates the best (else the latest) checkpoint of the run in `workdir` on the test split.

    Returns (the run's task, its summarized metrics plus "step" and its arrays ("confusion",
    ...)).
    """
    exp, state, step = restore_best(config, workdir, open_experiment(config, workdir, feeds=True))
    if step is None:
        raise UserError(
            f"No readable checkpoint in {os.path.join(workdir, 'checkpoints')}: train first "
            f"with the same --experiment and --workdir={workdir}."
        )
    _, evaluator = feeds.make_feeds(config, exp.data, exp.mesh, exp.state_shardings, exp.task)
    result, arrays = exp.task.finalize(evaluator(state))
    return exp.task, {**result, "step": step, **arrays}
