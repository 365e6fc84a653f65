"""The training loop: the one place that knows data, model, steps, writers and checkpoints.

config -> dataset (on device) -> jitted fused step (batch cut + augment + train step) -> metric
sums on device -> host at log steps -> metrics.jsonl / TensorBoard / progress bar; eval with one
jitted scan over the padded test split; orbax checkpoints; SIGTERM -> save and exit 0.
"""

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax import data as data_lib
from cnnjax import parallel, tasks
from cnnjax.errors import UserError, did_you_mean
from cnnjax.train import checkpoint, feeds, optim, transfer, writers
from cnnjax.train.progress import Progress
from cnnjax.train.state import TrainState, count_params, create_train_state

INIT_STREAM = 0  # fold_in tag of the initialization RNG (training uses feeds.TRAIN_STREAM).
# Fault injection for the resume tests: SIGKILL this process before training step N (0: off).
_FAULT_KILL_AT_STEP = int(os.environ.get("CNNJAX_FAULT_KILL_AT_STEP", "0") or 0)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step."""


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


@dataclasses.dataclass
class Outcome:
    """What a training run ended with. `status`: "completed" or "preempted"."""

    status: str
    step: int
    eval_metrics: dict | None


def compute_dtype(name: str):
    """ "auto" is bfloat16 on GPU/TPU and float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    if name in ("float32", "bfloat16", "float16"):
        return jnp.dtype(name)
    raise UserError(f"Unknown dtype {name!r}; choose auto, float32 or bfloat16.")


def steps_until_boundary(step: int, *, per_call: int, total: int, intervals=(), marks=()) -> int:
    """How many training steps the next device call runs from `step` (steps done so far):
    `per_call`, or fewer so that it ends exactly on the next multiple of an interval (log,
    eval, checkpoint, epoch; 0 is none) or mark (a phase start), or at `total`."""
    end = min(total, step + per_call)
    for n in intervals:
        if n > 0:
            end = min(end, (step // n + 1) * n)
    for mark in marks:
        if mark > step:
            end = min(end, mark)
    return end - step


def _every(n: int, steps_per_epoch: int) -> int:
    """-1 -> once per epoch, 0 -> never (only at the end), n > 0 -> every n steps."""
    return steps_per_epoch if n < 0 else n


@dataclasses.dataclass
class Phase:
    """A stretch of training with one optimizer: steps [start, end), 1-based `index`.

    Transfer learning has two (the fastai `fine_tune` convention): phase 1 trains with the
    parameters matching `freeze_pattern` frozen, phase 2 trains everything at
    `transfer.finetune_lr` with its own schedule and a fresh optimizer state.
    """

    index: int
    start: int
    end: int
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    freeze_pattern: str
    abstract_state: TrainState
    state_shardings: object


@dataclasses.dataclass
class Experiment:
    """Everything built from a config before the first step."""

    config: object
    data: data_lib.Dataset
    model: object
    mesh: object
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    steps_per_epoch: int
    total_steps: int
    state_shardings: object
    abstract_state: TrainState
    phases: list[Phase] = dataclasses.field(default_factory=list)
    task: tasks.Task | None = None  # What is learned and measured (`config.task`).

    def phase_at(self, step: int) -> Phase:
        """The phase that runs training step `step` (0-based)."""
        return next((p for p in self.phases if p.start <= step < p.end), self.phases[-1])

    def phase_of_state(self, step: int) -> Phase:
        """The phase whose optimizer produced the state after `step` steps."""
        return self.phase_at(max(step - 1, 0))

    def init_state(self) -> TrainState:
        rng = jax.random.fold_in(jax.random.key(self.config.seed), INIT_STREAM)
        init = jax.jit(
            create_train_state, static_argnums=(0, 1, 3), out_shardings=self.state_shardings
        )
        return init(self.model, self.tx, rng, self.data.image_shape)


def build(config, data: data_lib.Dataset | None = None) -> Experiment:
    """Resolves the dataset (unless given), model, mesh and optimizer of `config`."""
    check_numbers(config)  # Before loading data: a typo fails in a second.
    data = data_lib.load(config.data) if data is None else data
    mesh = parallel.make_mesh()
    num_devices = mesh.devices.size
    if config.batch_size % num_devices:
        raise UserError(
            f"batch_size={config.batch_size} is not divisible by the {num_devices} "
            "devices; choose a multiple of the device count."
        )
    task = tasks.get_task(config, data)
    model = task.build_model(compute_dtype(config.dtype))
    steps_per_epoch, total_steps = optim.steps_for(config, data.num_train)
    specs = _phase_specs(config, total_steps, steps_per_epoch)
    rng = jax.random.key(0)
    try:
        phases = []
        for index, (start, end, peak_lr, pattern) in enumerate(specs, start=1):
            schedule = optim.create_schedule(config, end - start, steps_per_epoch, peak_lr)
            # Phases after the first may change optim's settings (transfer.finetune_optim).
            changes = config.transfer.get("finetune_optim") if index > 1 else None
            tx = optim.create_optimizer(config, schedule, changes)
            if pattern:
                tx = transfer.freeze(tx, pattern)
            abstract = jax.eval_shape(
                lambda r, tx=tx: create_train_state(model, tx, r, data.image_shape), rng
            )
            shardings = jax.tree.map(lambda _: parallel.replicated(mesh), abstract)
            phases.append(Phase(index, start, end, tx, schedule, pattern, abstract, shardings))
        abstract_state = phases[0].abstract_state
    except (ValueError, TypeError, ZeroDivisionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        settings = ", ".join(f"{k}={v!r}" for k, v in config.model.items() if k != "name")
        raise UserError(
            f"Model {config.model.name!r} cannot be built"
            + (f" with {settings}" if settings else "")
            + f" for {data.name!r} images of shape {data.image_shape}: {first}. Check the "
            "--config.model.* values (experiments/base.py and the model's docstring list "
            "them), resize with --config.data.image_size=N, or pick another model."
        ) from e
    first = phases[0]
    return Experiment(
        config,
        data,
        model,
        mesh,
        first.schedule,
        first.tx,
        steps_per_epoch,
        total_steps,
        first.state_shardings,
        abstract_state,
        phases,
        task,
    )


def check_numbers(config) -> None:
    """UserError for counts and intervals that cannot describe a run (batch_size=0, ...)."""
    positive = ["batch_size", "log_every_steps", "steps_per_execution"]
    at_least_zero = ["eval_batch_size", "keep_checkpoints"]
    for key in positive:
        if int(config.get(key, 1)) < 1:
            raise UserError(f"--config.{key}={config[key]}: it must be at least 1.")
    for key in at_least_zero:
        if int(config[key]) < 0:
            raise UserError(f"--config.{key}={config[key]}: it must be 0 or more.")
    for key in ("eval_every_steps", "checkpoint_every_steps"):
        if int(config[key]) < -1:
            raise UserError(
                f"--config.{key}={config[key]}: use -1 (every epoch), 0 (only at the end) "
                "or a number of steps."
            )
    if int(config.num_train_steps) <= 0 and not float(config.num_epochs) > 0:
        raise UserError(
            f"--config.num_epochs={config.num_epochs} trains nothing: give a positive "
            "num_epochs, or num_train_steps > 0."
        )


def _phase_specs(config, total_steps: int, steps_per_epoch: int):
    """[(start, end, peak lr, freeze pattern)] of the training phases of `config`."""
    tc = config.get("transfer")
    pattern = tc.freeze_pattern if tc is not None else ""
    if not pattern:
        return [(0, total_steps, None, "")]
    frozen = int(tc.freeze_steps) or int(round(float(tc.freeze_epochs) * steps_per_epoch))
    if frozen <= 0 or frozen >= total_steps:
        return [(0, total_steps, None, pattern)]  # Frozen for the whole run.
    if float(tc.finetune_lr) <= 0:
        raise UserError(
            "transfer.freeze_epochs/freeze_steps set a second, unfrozen phase: "
            "give its learning rate with --config.transfer.finetune_lr=LR."
        )
    return [(0, frozen, None, pattern), (frozen, total_steps, float(tc.finetune_lr), "")]


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it after every step and saves before exiting."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _note_config_changes(config, workdir: str) -> None:
    """On resume, says which keys differ from the run's saved config.json."""
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        changed = _diff_keys(old, json.loads(config.to_json_best_effort()))
        if changed:
            print(
                f"note: resuming with a config that differs from {path} in: {', '.join(changed)}",
                flush=True,
            )


def _write_config(config, workdir: str) -> None:
    """Writes config.json (process 0), once the run's checkpoints are known to fit it."""
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(json.loads(config.to_json_best_effort()), f, indent=2, sort_keys=True)


def _diff_keys(old, new, prefix=""):
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def train_and_evaluate(
    config,
    workdir: str,
    *,
    experiment_name: str = "",
    data: data_lib.Dataset | None = None,
    write_report: bool = True,
) -> Outcome:
    """Trains `config` in `workdir`, resuming from its latest good checkpoint if any.

    data: the dataset, when already loaded (default: `config.data`'s). write_report: the
    summary.txt and plots at the end (`--mode=benchmark` times the loop without them).
    SIGTERM/SIGINT from the start on (data loading and compilation included) stop the run at
    the next step boundary with a checkpoint."""
    with _StopFlag() as stop:
        return _train_and_evaluate(config, workdir, experiment_name, data, write_report, stop)


def _train_and_evaluate(
    config, workdir: str, experiment_name: str, data, write_report: bool, stop: _StopFlag
) -> Outcome:
    t_start = time.perf_counter()
    # Before touching the workdir: a config mistake leaves nothing behind.
    exp = build(config, data)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir} is a file; give a directory (new or a run's).")
    feed, evaluator = feeds.make_feeds(config, exp.data, exp.mesh, exp.state_shardings, exp.task)
    # What compiling needs of the state (the evaluation ignores the optimizer state, so the
    # first phase's shapes serve every phase); safe from the train step's donation.
    abstract = checkpoint.abstract_like(exp.abstract_state, exp.state_shardings)
    with _model_must_fit_task(exp):  # Traces the evaluation: a wrong kind of model fails here.
        eval_sums_shape = evaluator.abstract_sums(abstract)
    _check_best_metric(exp, eval_sums_shape)
    print(f"workdir: {workdir}  (re-run with --workdir={workdir} to resume)", flush=True)
    os.makedirs(workdir, exist_ok=True)
    _note_config_changes(config, workdir)
    cfg = exp.config
    ckpts = checkpoint.Checkpoints(
        os.path.join(workdir, "checkpoints"),
        keep=int(cfg.keep_checkpoints),
        best_metric=cfg.best_metric,
    )
    repl = parallel.replicated(exp.mesh)
    # Created by a jitted function so the zeros are a global array on every process.
    new_sums = jax.jit(exp.task.zero_train_sums, out_shardings=repl)
    start_step, restored = ckpts.restore_latest(
        lambda step: _checkpoint_target(exp, exp.phase_of_state(step))
    )
    if restored is None:
        state = _initialize(exp)
        sums = new_sums()
        start_step = 0
    else:
        state = _restored_state(exp, restored, exp.phase_of_state(start_step))
        sums = restored["train_sums"]
        print(f"Resuming from the checkpoint at step {start_step} in {ckpts.directory}", flush=True)

    n_train = exp.data.num_train
    phase = exp.phase_of_state(start_step)
    feed.set_phase(phase.state_shardings, phase.freeze_pattern)
    # The evaluation compiles on a worker thread while the training step compiles and the first
    # epoch trains: it is first needed at the end of that epoch.
    eval_compiled = _in_background(evaluator.compile, abstract)
    if write_report and jax.process_index() == 0:
        # matplotlib's import (~1 s) happens while XLA compiles, not after training.
        _in_background(_import_report_modules)
    t_compile = time.perf_counter()
    with _model_must_fit_task(exp):
        feed.compile(state, sums)
    compile_s = time.perf_counter() - t_compile
    # Only now: a run whose checkpoints or settings do not fit keeps its own config.json.
    _write_config(config, workdir)
    writer = writers.MetricWriter(workdir, resume_step=start_step or None)

    spe, total = exp.steps_per_epoch, exp.total_steps
    log_every = max(1, int(cfg.log_every_steps))
    eval_every = _every(int(cfg.eval_every_steps), spe)
    ckpt_every = _every(int(cfg.checkpoint_every_steps), spe)
    n_params = count_params(exp.abstract_state.params)
    name = experiment_name or cfg.model.name
    print(
        f"{name}: {cfg.model.name} ({n_params:,} params) on {exp.data.name} "
        f"({n_train:,} train / {exp.data.num_test:,} test), "
        f"{total:,} steps of {cfg.batch_size} ({total / spe:.1f} epochs) on "
        f"{exp.mesh.devices.size} {jax.default_backend()} device(s); compiled in "
        f"{compile_s:.1f}s",
        flush=True,
    )
    if start_step == 0:
        writer.write({"step": 0, "kind": "compile", "seconds": compile_s, "wall_time": time.time()})

    progress = Progress(total=total, initial=start_step, desc=name)
    # Where a device call of several steps must end, besides the intervals: phase starts, and
    # the fault-injection step of the resume tests.
    marks = (*(p.start for p in exp.phases), _FAULT_KILL_AT_STEP)
    if feeds.steps_per_execution(cfg) > 1 and isinstance(feed, feeds.StreamTrainFeed):
        print(
            f"note: steps_per_execution={cfg.steps_per_execution} applies to the on-device "
            "feed; this run reads its batches from the host, one step per call.",
            flush=True,
        )
    phased = len(exp.phases) > 1 or bool(exp.phases[0].freeze_pattern)

    def emit(event: dict) -> None:
        """Writes an event; runs with transfer phases say which phase it belongs to."""
        writer.write({**event, "phase": phase.index} if phased else event)

    last_eval = None
    last_checked = start_step  # Loss is known finite up to here.

    def check_finite(step, *, params_too=False, host_sums=None):
        """Raises if the loss since the last check (or, before a save, any parameter) is
        not finite: a checkpoint is only ever written from a finite state."""
        nonlocal last_checked
        fetched = host_sums if host_sums is not None else jax.device_get(sums)
        loss_sum = float(fetched["loss_sum"])
        if params_too and np.isfinite(loss_sum) and not bool(_all_finite(state.params)):
            loss_sum = float("nan")  # The last update overflowed although its loss did not.
        if not np.isfinite(loss_sum):
            ckpts.wait()
            good = ckpts.steps()
            where = (
                f"the last good checkpoint (step {good[-1]}) stays in {ckpts.directory}"
                if good
                else "no checkpoint was written"
            )
            first = feed.first_nonfinite_step()
            when = (
                f"at step {first}"
                if last_checked < first <= step
                else f"between step {last_checked + 1} and step {step}"  # An update overflowed.
            )
            raise NonFiniteLossError(
                f"loss became {loss_sum} {when}; training stopped and {where}. Lower "
                "--config.optim.lr or clip gradients with --config.optim.grad_clip_norm=1.0."
            )
        last_checked = step

    def run_eval(step):
        nonlocal last_eval
        eval_compiled.result()  # Raises the compilation's error, if any.
        result, arrays = exp.task.finalize(evaluator(state))
        last_eval = {**result, **arrays}
        emit(
            {"step": step, "epoch": step / spe, "kind": "eval", "wall_time": time.time(), **result}
        )
        progress.write(f"eval @ step {step}: {exp.task.eval_line(result)}")
        return result

    step = start_step
    t_last, step_last = time.perf_counter(), start_step
    status = "completed"
    while step < total:
        if exp.phase_at(step) is not phase:
            phase = exp.phase_at(step)
            state = _start_phase(exp, phase, state)
            feed.set_phase(phase.state_shardings, phase.freeze_pattern)
            feed.compile(state, sums)
            # The images/s of the next log line: from here, not counting the compile.
            t_last, step_last = time.perf_counter(), step
            emit({"step": step, "kind": "phase", "wall_time": time.time()})
            progress.write(
                f"phase {phase.index} from step {step}: everything trainable, "
                f"lr {float(phase.schedule(0)):.3g} -> peak "
                f"{cfg.transfer.finetune_lr}, fresh optimizer state" + _optim_changes(cfg)
            )
        if _FAULT_KILL_AT_STEP and step == _FAULT_KILL_AT_STEP:
            os.kill(os.getpid(), signal.SIGKILL)  # Test hook: a real kill -9, mid-run.
        n = steps_until_boundary(
            step,
            per_call=feed.per_call,
            total=total,
            intervals=(log_every, eval_every, ckpt_every, spe),
            marks=marks,
        )
        state, sums = feed.run(state, sums, step, n)
        step += n
        is_last = step == total
        if step % log_every == 0 or is_last or stop.signum:
            host = jax.device_get(sums)  # The one host sync of a log step.
            check_finite(step, host_sums=host)
            now = time.perf_counter()
            ips = (step - step_last) * cfg.batch_size / max(now - t_last, 1e-9)
            train_metrics = exp.task.train_metrics(host)
            loss = train_metrics["loss"]
            acc = train_metrics.get(exp.task.progress_metric, float("nan"))
            emit(
                {
                    "step": step,
                    "epoch": step / spe,
                    "kind": "train",
                    **train_metrics,
                    "lr": float(phase.schedule(step - 1 - phase.start)),
                    "images_per_sec": ips,
                    "wall_time": time.time(),
                    "elapsed_s": time.perf_counter() - t_start,
                }
            )
            progress.update(
                step,
                loss=loss,
                accuracy=acc,
                images_per_sec=ips,
                extra=f"epoch {step / spe:.1f}"
                + (f" phase {phase.index}/{len(exp.phases)}" if phased else ""),
            )
            sums = new_sums()
            t_last, step_last = time.perf_counter(), step
        if stop.signum:
            check_finite(step, params_too=True)
            ckpts.save(step, {"state": state, "train_sums": sums})
            ckpts.wait()
            emit(
                {
                    "step": step,
                    "kind": "preempted",
                    "signal": int(stop.signum),
                    "wall_time": time.time(),
                }
            )
            progress.close()
            progress.write(
                f"Stopped by signal {stop.signum} at step {step}; checkpoint "
                f"saved. Re-run the same command with --workdir={workdir} to "
                "resume."
            )
            status = "preempted"
            break
        eval_metrics = None
        if (eval_every and step % eval_every == 0) or is_last:
            eval_metrics = run_eval(step)
        if (ckpt_every and step % ckpt_every == 0) or eval_metrics or is_last:
            check_finite(step, params_too=True)
            ckpts.save(
                step,
                {"state": state, "train_sums": sums},
                metrics={cfg.best_metric: eval_metrics[cfg.best_metric]} if eval_metrics else None,
            )
    progress.close()

    if status == "completed" and last_eval is None:
        # Resumed a finished run: evaluate the final state again for the report and pictures.
        eval_compiled.result()
        result, arrays = exp.task.finalize(evaluator(state))
        last_eval = {**result, **arrays}
    feed.close()
    ckpts.close()
    writer.close()
    if status == "completed" and write_report and jax.process_index() == 0:
        from cnnjax.train import report  # Local: matplotlib only when there is a report.

        report.write_run_report(
            workdir,
            exp,
            last_eval,
            n_params=n_params,
            elapsed_s=time.perf_counter() - t_start,
            name=name,
        )
    return Outcome(status=status, step=step, eval_metrics=last_eval)


@contextlib.contextmanager
def _model_must_fit_task(exp: Experiment):
    """Turns the shape errors of tracing a step into a UserError: a model of another kind
    (e.g. a segmentation network under task=classification) meets the task's loss."""
    try:
        yield
    except (TypeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UserError(
            f"Model {exp.config.model.name!r} does not fit task {exp.task.name!r} on "
            f"{exp.data.name}: {first}. Pick a model made for this task (--list shows each "
            "experiment's model and task; docs/ describes them)."
        ) from e


def _check_best_metric(exp: Experiment, abstract_sums) -> None:
    """UserError, before any training, unless the task reports `config.best_metric`."""
    ones = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), abstract_sums)  # No 0/0.
    with np.errstate(all="ignore"):
        names = sorted(exp.task.finalize(ones)[0])
    metric = exp.config.best_metric
    if metric not in names:
        raise UserError(
            f"--config.best_metric={metric!r} is not a metric of task {exp.task.name!r}."
            f"{did_you_mean(metric, names)} Its metrics: {', '.join(names)}."
        )


def _in_background(fn, *args) -> concurrent.futures.Future:
    """Runs `fn(*args)` on a new daemon thread; the future gives its result or error."""
    future = concurrent.futures.Future()

    def run():
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future.
            future.set_exception(e)

    threading.Thread(target=run, name="compile", daemon=True).start()
    return future


def _import_report_modules() -> None:
    from cnnjax.train import report  # noqa: F401
    from cnnjax.viz import confusion, curves  # noqa: F401


def restore_best(config, workdir: str, exp: Experiment | None = None):
    """(experiment, state, step) from the best (else the latest readable) checkpoint of the run
    in `workdir`; step is None, with a freshly initialized state, when there is none."""
    exp = build(config) if exp is None else exp
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return exp, exp.init_state(), None
    ckpts = checkpoint.Checkpoints(
        directory, keep=int(config.keep_checkpoints), best_metric=config.best_metric, read_only=True
    )

    def target(step):
        return _checkpoint_target(exp, exp.phase_of_state(step))

    best = ckpts.best_step()
    step, restored = None, None
    if best is not None:
        try:
            step, restored = best, ckpts.restore(best, target(best))
        except checkpoint.CheckpointMismatch:
            raise  # Another config's run: the message says which settings to use.
        except Exception as e:  # noqa: BLE001 - fall back to the newest readable one.
            print(
                f"warning: best checkpoint (step {best}) is unreadable ({type(e).__name__}); "
                "using the latest readable one",
                flush=True,
            )
    if restored is None:
        step, restored = ckpts.restore_latest(target, delete_corrupt=False)
    ckpts.close()
    if restored is None:
        return exp, exp.init_state(), None
    return exp, _restored_state(exp, restored, exp.phase_of_state(step)), step


def evaluate_checkpoint(config, workdir: str) -> dict:
    """Evaluates the best (else the latest) checkpoint of the run in `workdir` on the test split.

    Returns the summarized metrics plus "step" and "confusion".
    """
    exp, state, step = restore_best(config, workdir)
    if step is None:
        raise UserError(
            f"No readable checkpoint in {os.path.join(workdir, 'checkpoints')}: train first "
            f"with the same --experiment and --workdir={workdir}."
        )
    _, evaluator = feeds.make_feeds(config, exp.data, exp.mesh, exp.state_shardings, exp.task)
    result, arrays = exp.task.finalize(evaluator(state))
    return {**result, "step": step, **arrays}


def _checkpoint_target(exp: Experiment, phase: Phase | None = None) -> dict:
    """The abstract tree a checkpoint restores into, sharded for the current mesh."""
    phase = phase or exp.phases[0]
    repl = parallel.replicated(exp.mesh)
    sums = jax.eval_shape(exp.task.zero_train_sums)
    return {
        "state": checkpoint.abstract_like(phase.abstract_state, phase.state_shardings),
        "train_sums": checkpoint.abstract_like(sums, jax.tree.map(lambda _: repl, sums)),
    }


def _restored_state(exp: Experiment, restored: dict, phase: Phase | None = None) -> TrainState:
    """A TrainState (with its static apply_fn/tx) from a restored checkpoint tree."""
    phase = phase or exp.phases[0]
    return phase.abstract_state.replace(
        **{
            f.name: getattr(restored["state"], f.name)
            for f in dataclasses.fields(TrainState)
            if f.name not in ("apply_fn", "tx")
        }
    )


def _initialize(exp: Experiment) -> TrainState:
    """A fresh state, initialized from `init.checkpoint` / `init.keras_weights` if set."""
    state = exp.init_state()
    source = transfer.source_variables(exp.config.init) if "init" in exp.config else None
    if source is None:
        if note := transfer.fresh_start_note(exp.config):
            print(note, flush=True)
        return state
    merged, report = transfer.merge(
        {"params": state.params, "batch_stats": state.batch_stats},
        source,
        exp.config.init.skip_pattern,
    )
    print(transfer.format_report(report), flush=True)
    place = lambda tree: jax.device_put(tree, parallel.replicated(exp.mesh))
    params = place(merged["params"])
    return state.replace(
        params=params,
        batch_stats=place(merged["batch_stats"]),
        opt_state=jax.jit(state.tx.init)(params),
    )


def _optim_changes(config) -> str:
    """The phase-2 message's ", optim changes nesterov=True, ..." part, or "" without any."""
    changes = config.transfer.get("finetune_optim")
    if not changes:
        return ""
    return ", optim changes " + ", ".join(f"{k}={v}" for k, v in changes.items())


def _start_phase(exp: Experiment, phase: Phase, state: TrainState) -> TrainState:
    """The state for `phase`: same step, parameters and statistics; its own fresh optimizer."""

    def make(step, params, batch_stats):
        return TrainState(
            step=step,
            params=params,
            batch_stats=batch_stats,
            opt_state=phase.tx.init(params),
            apply_fn=state.apply_fn,
            tx=phase.tx,
        )

    return jax.jit(make, out_shardings=phase.state_shardings)(
        state.step, state.params, state.batch_stats
    )
