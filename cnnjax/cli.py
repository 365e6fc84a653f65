"""The command line: flags, parsing with one-line errors, and exit codes.

    python launch.py --experiment=NAME [--workdir=DIR] [--mode=MODE] [--config.KEY=VALUE ...]
    python launch.py --list

User mistakes exit with code 2 and one line; a non-finite loss exits with code 3; a checkpoint
that could not be written (disk full, ...) exits with code 4, the previous ones intact. The heavy
imports (JAX, the modes) happen only after the flags parse, so a typo fails in a moment.
"""

import os
import sys

from absl import flags

MODES = (
    "train",
    "eval",
    "summary",
    "visualize",
    "benchmark",
    "predict",
    "export",
)  # cnnjax.modes.MODES

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", None, "Experiment name (see --list).")
flags.DEFINE_string(
    "workdir",
    None,
    "Run directory; default: a fresh folder under runs/. Re-running with the same workdir resumes.",
)
flags.DEFINE_enum("mode", "train", MODES, "What to do with the experiment.")
flags.DEFINE_bool("list", False, "List the experiments and exit.")
flags.DEFINE_list("images", [], "Image files for --mode=predict.")
flags.DEFINE_string(
    "coordinator_address",
    None,
    "Multi-process runs outside TPU VMs: host:port "
    "of process 0 (with --num_processes and --process_id).",
)
flags.DEFINE_string(
    "compilation_cache",
    os.environ.get("CNNJAX_COMPILATION_CACHE", "~/.cache/cnnjax/xla"),
    "Directory of JAX's persistent compilation cache: a re-run with the same shapes skips "
    "compilation and GPU autotuning. 'off' disables it; JAX_COMPILATION_CACHE_DIR wins.",
)
flags.DEFINE_bool(
    "xla_cpu_tuning",
    True,
    "Limit XLA:CPU's YNNPACK fusions to config.xla_cpu_ynn_fusions (default none: its "
    "convolutions train slower on x86 CPUs; cnnjax.runtime). The flag in XLA_FLAGS wins.",
)
flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes.")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index.")

_OVERRIDES: list[tuple[str, str]] = []  # The --config.KEY=VALUE pairs, split off before absl.


def _fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _own_flags() -> list[str]:
    """The names of the flags this module defines (not absl's own), for did-you-mean."""
    return sorted(f.name for f in FLAGS.get_flags_for_module(__name__))


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing with `--config.*` split off first and one-line errors (exit 2)."""
    from cnnjax.errors import UserError, did_you_mean
    from cnnjax.overrides import split_argv

    try:
        rest, overrides = split_argv(argv)
    except UserError as e:
        _fail(str(e))
    try:
        remaining = FLAGS(rest)
    except flags.Error as e:
        message = str(e)
        for arg in rest[1:]:
            if arg.startswith("--"):
                name = arg[2:].split("=", 1)[0]
                if name not in FLAGS and name.removeprefix("no") not in FLAGS:
                    message = (
                        f"Unknown flag --{name}.{did_you_mean(name, _own_flags())} "
                        "Config values are set with --config.KEY=VALUE."
                    )
                    break
        _fail(message)
    _OVERRIDES[:] = overrides  # Read by run().
    return remaining


def _list_experiments() -> None:
    import experiments

    width = max(map(len, experiments.EXPERIMENTS))
    for name in sorted(experiments.EXPERIMENTS):
        print(f"{name:<{width}}  {experiments.describe(name)}")


def run(argv) -> int:
    from cnnjax.errors import UserError

    if len(argv) > 1:
        raise UserError(
            f"Unexpected arguments {argv[1:]}; flags look like --experiment=NAME "
            "and config values like --config.KEY=VALUE."
        )
    if FLAGS.list:
        _list_experiments()
        return 0
    name = FLAGS.experiment
    if not name:
        raise UserError(
            "Which experiment? Pass --experiment=NAME; --list shows them all "
            "(start with --experiment=quickstart)."
        )
    from cnnjax import modes, parallel, runtime

    config = modes.resolve(name, FLAGS.mode, FLAGS.workdir, _OVERRIDES)
    enable_compilation_cache(FLAGS.compilation_cache)
    if FLAGS.xla_cpu_tuning:
        runtime.tune_xla_cpu(config.get("xla_cpu_ynn_fusions", ""))
    if config.get("deterministic", False):
        # Deterministic GPU kernels: no atomics in reductions, fixed algorithm choices.
        runtime.add_xla_flag("--xla_gpu_deterministic_ops=true")
    parallel.initialize_distributed(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
    )
    args = modes.Args(experiment=name, workdir=FLAGS.workdir, images=tuple(FLAGS.images))
    return modes.run(FLAGS.mode, config, args)


def enable_compilation_cache(directory: str) -> None:
    """Points JAX's persistent compilation cache at `directory` (unless disabled or set by
    the user through JAX_COMPILATION_CACHE_DIR). Compilations over 0.2 s are kept (JAX's
    default is 1 s): the epoch permutation's ~1 s compile is then loaded on a warm start too."""
    if directory.lower() in ("", "off", "none") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def main(argv):
    from absl import logging

    from cnnjax.errors import NonFiniteLossError, UserError
    from cnnjax.train.checkpoint import CheckpointWriteError

    if not FLAGS["verbosity"].present:
        # orbax logs every save at INFO, warns about routine things and logs a failed save at
        # ERROR before cnnjax reports it in one line; `-v 0` shows it all.
        logging.set_verbosity(logging.FATAL)
    try:
        return run(argv)
    except UserError as e:
        _fail(str(e), 2)
    except NonFiniteLossError as e:
        _fail(str(e), 3)
    except KeyboardInterrupt:  # Ctrl-C before training installed its handler, or in a mode.
        _fail("interrupted (Ctrl-C); the run's checkpoints are as they were.", 130)
    except CheckpointWriteError as e:
        _fail(
            f"{e}. The earlier checkpoints are intact: free space, then run the same command "
            "to resume.",
            4,
        )
