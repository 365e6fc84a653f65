"""cnnjax launcher: flags in, one call out.

    python launch.py --experiment=NAME [--workdir=DIR] [--mode=MODE] [--config.KEY=VALUE ...]
    python launch.py --list

User mistakes exit with code 2 and one line; a non-finite loss exits with code 3.
"""

import datetime
import os
import sys

from absl import app, flags

MODES = ("train", "eval", "summary", "visualize", "benchmark", "predict")

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
flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes.")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index.")

_OVERRIDES: list[tuple[str, str]] = []  # The --config.KEY=VALUE pairs, split off before absl.


def _fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


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
                    known = [
                        "experiment",
                        "workdir",
                        "mode",
                        "list",
                        "images",
                        "coordinator_address",
                        "num_processes",
                        "process_id",
                    ]
                    message = (
                        f"Unknown flag --{name}.{did_you_mean(name, known)} "
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


def _default_workdir(name: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{name}-{stamp}")


def run(argv) -> int:
    import experiments
    from cnnjax import workdir as workdir_lib
    from cnnjax.errors import UserError, did_you_mean
    from cnnjax.overrides import apply_overrides

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
    if name not in experiments.EXPERIMENTS:
        raise UserError(
            f"Unknown experiment {name!r}.{did_you_mean(name, experiments.EXPERIMENTS)}"
            " --list shows them all."
        )
    mode = FLAGS.mode
    defaults = experiments.EXPERIMENTS[name].get_config()
    if mode in ("eval", "predict", "visualize") and FLAGS.workdir:
        # A trained run is read with the settings it was trained with; the command's own
        # --config overrides still win.
        defaults = workdir_lib.with_run_settings(defaults, FLAGS.workdir)
    config = apply_overrides(defaults, _OVERRIDES)

    from cnnjax import parallel, runs
    from cnnjax.train import experiment, loop

    _enable_compilation_cache(FLAGS.compilation_cache)
    if config.get("deterministic", False):
        _deterministic_gpu_kernels()
    parallel.initialize_distributed(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
    )
    if mode == "summary":
        from cnnjax import data as data_lib
        from cnnjax import tasks
        from cnnjax.summary import format_summary, summarize

        try:
            exp, described = experiment.build(config), False
        except UserError as unavailable:  # Not prepared here: the shapes still tell the model.
            try:
                task = tasks.TASKS.get(str(config.get("task", "classification")))
                keys = task.target_keys if task else ("label",)
                stand_in = data_lib.describe(config.data, keys, config.batch_size)
                exp, described = experiment.build(config, stand_in), True
            except Exception:  # noqa: BLE001 - no description either: the first error says why.
                raise unavailable from None
        print(format_summary(summarize(exp.model, exp.data.image_shape)))
        d = exp.data
        if described:
            print(
                f"data: {d.name}, images of {d.image_shape}, {d.num_classes} classes (shapes "
                "from the TFDS description; the dataset is not prepared here, so training "
                "would first need it)"
            )
        else:
            print(
                f"data: {d.name}, {d.num_train:,} train / {d.num_test:,} test images of "
                f"{d.image_shape}, {d.num_classes} classes; {exp.total_steps:,} training steps "
                f"of {config.batch_size}"
            )
        return 0
    if mode == "predict":
        from cnnjax import predict

        if not FLAGS.images:
            raise UserError("--mode=predict needs images: --images=cat.jpg,dog.png.")
        if not FLAGS.workdir and not config.init.keras_weights:
            raise UserError(
                "--mode=predict uses a trained run (--workdir=RUN_DIR) or Keras "
                "weights (--config.init.keras_weights=FILE.h5)."
            )
        results = predict.predict_run(config, FLAGS.workdir or "", FLAGS.images)
        print(predict.format_predictions(results))
        return 0 if any("top" in r for r in results) else 2
    if mode == "visualize":
        from cnnjax.viz.run import visualize

        if not FLAGS.workdir:
            raise UserError(
                "--mode=visualize draws a run: pass --workdir=RUN_DIR (a run without "
                "checkpoints is drawn with fresh weights)."
            )
        written = visualize(config, FLAGS.workdir, name=name)
        for kind, path in written.items():
            print(f"{kind:<18} {path}")
        return 0
    if mode == "benchmark":
        from cnnjax import benchmark
        from cnnjax import data as data_lib

        dataset = data_lib.load(config.data)  # Once, for all three measurements.
        timing = benchmark.time_train_step(
            config,
            steps_per_run=int(config.benchmark.steps),
            warmup=int(config.benchmark.warmup),
            dataset=dataset,
        )
        print(benchmark.format_timing(name, timing))
        device_ips = benchmark.time_device_pipeline(config, dataset=dataset)
        stream_ips = benchmark.time_stream_pipeline(config, dataset=dataset)
        print(
            f"  input, on device  {device_ips:,.0f} images/s "
            "(batch cut + augmentation + normalization)"
        )
        print(
            f"  input, streaming  {stream_ips:,.0f} images/s "
            "(read + decode + augmentation on the host)"
        )
        if int(config.benchmark.loop_steps) > 0:
            loop_timing = benchmark.time_loop(
                config, steps=int(config.benchmark.loop_steps), dataset=dataset
            )
            print(benchmark.format_loop(loop_timing, timing))
        return 0
    if mode == "eval":
        if not FLAGS.workdir:
            raise UserError("--mode=eval needs the run to evaluate: pass --workdir=RUN_DIR.")
        result = runs.evaluate_checkpoint(config, FLAGS.workdir)
        if config.get("task", "classification") != "classification":  # All its metrics.
            scalars = [f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float)]
            print(f"{name} @ step {result['step']}: test {', '.join(scalars)}")
            return 0
        print(
            f"{name} @ step {result['step']}: test loss {result['loss']:.4f}, accuracy "
            f"{result['accuracy']:.4f}"
            + (f", top-5 {result['top5_accuracy']:.4f}" if "top5_accuracy" in result else "")
            + f", macro F1 {result['macro_f1']:.4f} on {result['num_examples']:,} images"
        )
        return 0

    workdir = FLAGS.workdir or _default_workdir(name)
    outcome = loop.train_and_evaluate(config, workdir, experiment_name=name)
    if outcome.status == "completed" and outcome.eval_metrics:
        m, metric = outcome.eval_metrics, config.best_metric
        print(
            f"done: test {metric} {m[metric]:.4f}, loss {m['loss']:.4f} after "
            f"{outcome.step:,} steps; outputs in {workdir}",
            flush=True,
        )
    return 0


def _enable_compilation_cache(directory: str) -> None:
    """Points JAX's persistent compilation cache at `directory` (unless disabled or set by
    the user through JAX_COMPILATION_CACHE_DIR). Only compilations over a second are kept."""
    if directory.lower() in ("", "off", "none") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))


def _deterministic_gpu_kernels() -> None:
    """Asks XLA for deterministic GPU kernels (no atomics in reductions, fixed algorithm
    choices); read when the backend starts, which has not happened yet here."""
    flag = "--xla_gpu_deterministic_ops=true"
    flags = os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


def main(argv):
    from absl import logging

    from cnnjax.errors import NonFiniteLossError, UserError

    if not FLAGS["verbosity"].present:
        # orbax logs every save at INFO and warns about routine things; `-v 0` shows it all.
        logging.set_verbosity(logging.ERROR)
    try:
        return run(argv)
    except UserError as e:
        _fail(str(e), 2)
    except NonFiniteLossError as e:
        _fail(str(e), 3)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
