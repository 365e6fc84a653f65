"""What `launch.py --mode=MODE` does: one module per mode, each with `run(config, args) -> int`
(the exit code), and the table that maps mode names to them.

To add a mode: a module here with `run(config, args)`, and one entry in `MODES`. The CLI
(`cnnjax.cli`) resolves the experiment and its overrides (`resolve`) and calls `MODES[mode]`.
"""

import dataclasses

from cnnjax import workdir as workdir_lib
from cnnjax.errors import UserError, did_you_mean
from cnnjax.modes import benchmark, eval, export, predict, summary, train, visualize
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

    experiment: str  # The experiment's name.
    workdir: str | None = None  # --workdir, None when not given.
    images: tuple[str, ...] = ()  # --images, for predict.


def resolve(name: str, mode: str, workdir: str | None, overrides: list[tuple[str, str]]):
    """The config of experiment `name` for `mode`: its defaults, then (for modes that read a
    run) the run's saved settings, then the command's --config overrides, which always win."""
    import experiments  # Only here: no package below the modes imports the experiments.

    if name not in experiments.EXPERIMENTS:
        raise UserError(
            f"Unknown experiment {name!r}.{did_you_mean(name, experiments.EXPERIMENTS)}"
            " --list shows them all."
        )
    defaults = experiments.EXPERIMENTS[name].get_config()
    if mode in READS_A_RUN and workdir:
        defaults = workdir_lib.with_run_settings(defaults, workdir)
    return apply_overrides(defaults, overrides)


def run(mode: str, config, args: Args) -> int:
    return MODES[mode](config, args)
