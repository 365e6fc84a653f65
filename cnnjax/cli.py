"""The command line: flags, parsing with one-line errors, and exit codes.

    cnnjax --experiment=NAME [--workdir=DIR] [--mode=MODE] [--config.KEY=VALUE ...]
    cnnjax --experiment=path/to/my_exp.py[:ARG] ...    # an experiment file anywhere
    cnnjax --mode=eval|predict|export|visualize --workdir=RUN    # the run's own experiment
    cnnjax --list

`cnnjax` (the installed command), `python -m cnnjax` and the checkout's `python launch.py`
are the same command: `entry`. Importing this module defines no flag: `define_flags` does,
when the command starts.

User mistakes exit with code 2 and one line; a non-finite loss exits with code 3; a checkpoint
or a log (metrics.jsonl, TensorBoard, the report) that could not be written (disk full, ...)
exits with code 4, the previous checkpoints intact. The heavy imports (JAX, the modes) happen
only after the flags parse, so a typo fails in a moment.
"""

import contextlib
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

FLAGS = flags.FLAGS  # The flags are defined on it when the command runs (`define_flags`).


def define_flags(flag_values: flags.FlagValues = FLAGS) -> flags.FlagValues:
    """Defines the command line's flags on `flag_values` (absl's global FLAGS by default), once.

    Importing cnnjax defines no flag: a research script with its own `--workdir` or `--mode`
    imports any cnnjax module. The command defines them when it starts (`parse_flags`)."""
    if flag_values.find_module_defining_flag("experiment") == __name__:
        return flag_values
    fv = flag_values
    flags.DEFINE_string(
        "experiment",
        None,
        "Experiment name (see --list), or an experiment file path/to/my_exp.py (:ARG calls "
        "its get_config(ARG)). Modes that read a run default to the run's own experiment.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "workdir",
        None,
        "Run directory; default: a fresh folder under runs/. Re-running with the same workdir "
        "resumes.",
        flag_values=fv,
    )
    flags.DEFINE_enum("mode", "train", MODES, "What to do with the experiment.", flag_values=fv)
    flags.DEFINE_bool("list", False, "List the experiments and exit.", flag_values=fv)
    flags.DEFINE_list("images", [], "Image files for --mode=predict.", flag_values=fv)
    flags.DEFINE_string(
        "coordinator_address",
        None,
        "Multi-process runs outside TPU VMs: host:port "
        "of process 0 (with --num_processes and --process_id).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "compilation_cache",
        os.environ.get("CNNJAX_COMPILATION_CACHE", "~/.cache/cnnjax/xla"),
        "Directory of JAX's persistent compilation cache: a re-run with the same shapes skips "
        "compilation and GPU autotuning. 'off' disables it; JAX_COMPILATION_CACHE_DIR wins.",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "xla_cpu_tuning",
        True,
        "Limit XLA:CPU's YNNPACK fusions to config.xla_cpu_ynn_fusions (default none: its "
        "convolutions train slower on x86 CPUs; cnnjax.runtime). The flag in XLA_FLAGS wins.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_processes", None, "Multi-process runs: how many processes.", flag_values=fv
    )
    flags.DEFINE_integer(
        "process_id", None, "Multi-process runs: this process's index.", flag_values=fv
    )
    flags.DEFINE_enum(
        "distributed",
        "auto",
        ("auto", "on", "off"),  # cnnjax.parallel.DISTRIBUTED_MODES
        "Multi-process runs: auto joins the cluster JAX detects (SLURM, Open MPI, a TPU slice, "
        "a Kubernetes Job) or --coordinator_address; on: must join one; off: one process.",
        flag_values=fv,
    )
    return flag_values


_USAGE = """cnnjax: train, evaluate and draw the experiments of cnnjax.

    cnnjax --list
    cnnjax --experiment=NAME [--workdir=DIR] [--mode=MODE] [--config.KEY=VALUE ...]
    cnnjax --experiment=path/to/my_exp.py[:ARG] ...
    cnnjax --mode=eval|predict|export|visualize --workdir=RUN

Exit codes: 2 a mistake in the command (one line says what to fix), 3 a non-finite loss,
4 a checkpoint or log that could not be written.
"""
_OVERRIDES: list[tuple[str, str]] = []  # The --config.KEY=VALUE pairs, split off before absl.


def _fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _own_flags(flag_values: flags.FlagValues = FLAGS) -> list[str]:
    """The names of the flags this module defines (not absl's own), for did-you-mean."""
    return sorted(f.name for f in flag_values.get_flags_for_module(__name__))


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing with `--config.*` split off first and one-line errors (exit 2). Defines
    the flags first (`define_flags`)."""
    from cnnjax.errors import UserError, did_you_mean
    from cnnjax.overrides import split_argv

    define_flags(FLAGS)
    for name in _own_flags():  # --help lists the key flags of sys.argv[0]'s module: these.
        FLAGS.register_key_flag_for_module(argv[0], FLAGS[name])
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
    from cnnjax.modes import origin

    experiments = origin.registry()  # cnnjax's own, whatever the working directory holds.
    width = max(map(len, experiments.EXPERIMENTS))
    try:
        for name in sorted(experiments.EXPERIMENTS):
            print(f"{name:<{width}}  {experiments.describe(name)}")
        sys.stdout.flush()
    except BrokenPipeError:  # `cnnjax --list | head`: the reader has read enough.
        # Python's own flush at exit would fail again (a traceback): it writes nowhere now.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


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
    from cnnjax import modes, parallel, runtime

    # --experiment (a name or a file), else the run's own for the modes that read one.
    origin = modes.origin_of(FLAGS.experiment, FLAGS.mode, FLAGS.workdir)
    config = modes.resolve(origin, FLAGS.mode, FLAGS.workdir, _OVERRIDES)
    enable_compilation_cache(FLAGS.compilation_cache)
    if FLAGS.xla_cpu_tuning:
        runtime.tune_xla_cpu(config.get("xla_cpu_ynn_fusions", ""))
    if config.get("deterministic", False):
        # Deterministic GPU kernels: no atomics in reductions, fixed algorithm choices.
        runtime.add_xla_flag("--xla_gpu_deterministic_ops=true")
    parallel.initialize_distributed(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, mode=FLAGS.distributed
    )
    args = modes.Args(
        experiment=origin.label,
        workdir=FLAGS.workdir,
        images=tuple(FLAGS.images),
        origin=origin,
    )
    return modes.run(FLAGS.mode, config, args)


def enable_compilation_cache(directory: str) -> None:
    """Points JAX's persistent compilation cache at `directory` (unless disabled or set by
    the user through JAX_COMPILATION_CACHE_DIR). Compilations over 0.2 s are kept (JAX's
    default is 1 s): the epoch permutation's ~1 s compile is then loaded on a warm start too.
    A damaged entry is replaced by the fresh compile (`_replace_damaged_cache_entries`)."""
    if directory.lower() in ("", "off", "none"):
        return
    _replace_damaged_cache_entries()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _replace_damaged_cache_entries() -> None:
    """Makes a damaged entry of the compilation cache (a torn write, flipped bytes) be replaced.

    JAX 0.10 warns (two lines) and compiles again when an entry cannot be read, but never
    replaces it: its cache does not overwrite an existing entry, so every later run warns and
    compiles again. This wraps the one function that reads an entry,
    `jax._src.compilation_cache.get_executable_and_time` (private; a JAX without it keeps its
    own behaviour): an entry that fails to read is deleted, the read counts as a miss, and JAX's
    write of the fresh compile then succeeds. One warning line per process, whatever the number
    of entries (docs/decisions.md, "Damaged compilation cache entries")."""
    import jax

    try:
        from jax._src import compilation_cache
    except ImportError:
        return
    read = compilation_cache.__dict__.get("get_executable_and_time")
    if read is None or getattr(read, "replaces_damaged_entries", False):
        return
    warned = []

    def get_executable_and_time(cache_key, *args, **kwargs):
        try:
            return read(cache_key, *args, **kwargs)
        except Exception as e:
            verification = getattr(compilation_cache, "CacheVerificationError", ())
            if jax.config.jax_raise_persistent_cache_errors or isinstance(e, verification):
                raise  # What JAX's own read does with these.
            folder = jax.config.jax_compilation_cache_dir or ""
            for suffix in ("-cache", "-atime"):  # jax._src.lru_cache's file names.
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, f"{cache_key}{suffix}"))
            if not warned:
                warned.append(cache_key)
                reason = (str(e).splitlines() or [""])[0][:200]
                print(
                    f"warning: the compilation cache entry {cache_key.split('-')[0]!r} in "
                    f"{folder} was unreadable ({type(e).__name__}: {reason}); damaged entries "
                    "are compiled again and replaced.",
                    file=sys.stderr,
                    flush=True,
                )
            return None, None

    get_executable_and_time.replaces_damaged_entries = True
    compilation_cache.get_executable_and_time = get_executable_and_time


def entry() -> None:
    """The command: `cnnjax` (the installed script), `python -m cnnjax`, `python launch.py`."""
    from absl import app

    script = sys.modules.get("__main__")
    if script is not None and not script.__doc__:  # --help's text: the console script has none.
        script.__doc__ = _USAGE
    app.run(main, flags_parser=parse_flags)


def main(argv):
    from absl import logging

    from cnnjax.errors import MetricsWriteError, NonFiniteLossError, UserError
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
    except MetricsWriteError as e:  # The message says what the checkpoints hold.
        _fail(f"{e}. Free space, then run the same command to resume.", 4)
    except (MemoryError, RuntimeError) as e:  # Out of memory outside training's own guard.
        from cnnjax import memory

        if not memory.is_exhausted(e):
            raise
        _fail(memory.exhausted_line(e, memory.fix(("batch_size", 0), ("data.image_size", 0))), 2)
