"""What `launch.py --mode=MODE` does: one module per mode, each with `run(config, args) -> int`
(the exit code), and the table that maps mode names to them.

To add a mode: a module here with `run(config, args)`, and one entry in `MODES`. The CLI
(`cnnjax.cli`) finds the experiment (`origin_of`: a name, a file, or the one a run recorded),
resolves it and its overrides (`resolve`) and calls `MODES[mode]`.
"""

import dataclasses

from cnnjax import workdir as workdir_lib
from cnnjax.errors import UserError
from cnnjax.modes import benchmark, eval, export, origin, predict, summary, train, visualize
from cnnjax.modes.origin import Origin
from cnnjax.overrides import apply_overrides

MODES = {
    "train": train.run,
    "eval": eval.run,
    "summary": summary.run,
    "visualize": visualize.run,
    "benchmark": benchmark.run,
    "predict": predict.run,
    "export": export.run,
}
# Modes that read a finished run: they take the settings it was trained with (config.json).
READS_A_RUN = ("eval", "predict", "visualize", "export")


@dataclasses.dataclass(frozen=True)
class Args:
    """What a mode gets from the command line besides the config."""

    experiment: str  # The experiment's label: its name, or a file's stem (and `:ARG`).
    workdir: str | None = None  # --workdir, None when not given.
    images: tuple[str, ...] = ()  # --images, for predict.
    origin: Origin | None = None  # Where the experiment came from (train records it).


def origin_of(experiment: str | None, mode: str, workdir: str | None) -> Origin:
    """The experiment a command runs: the one `--experiment` names (a name, `path.py` or
    `path.py:ARG`), else, for a mode that reads a run, the one the run recorded (run.json)."""
    if experiment:
        return origin.parse(experiment)
    if mode in READS_A_RUN and workdir:
        return origin.of_run(workdir)
    raise UserError(
        "Which experiment? Pass --experiment=NAME (--list shows them all; start with "
        "--experiment=quickstart) or --experiment=path/to/my_exp.py."
    )


def resolve(
    experiment: str | Origin, mode: str, workdir: str | None, overrides: list[tuple[str, str]]
):
    """The config of `experiment` (an --experiment value or an Origin) for `mode`: its defaults,
    then (for modes that read a run) the run's saved settings, then the command's --config
    overrides, which always win."""
    if isinstance(experiment, str):
        experiment = origin.parse(experiment)
    # Only through `origin`: no package below the modes imports the experiments.
    defaults = origin.get_config(experiment)
    if mode in READS_A_RUN and workdir:
        defaults = workdir_lib.with_run_settings(defaults, workdir)
    return apply_overrides(defaults, overrides)


def run(mode: str, config, args: Args) -> int:
    return MODES[mode](config, args)
