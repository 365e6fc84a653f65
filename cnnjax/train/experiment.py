"""An experiment built from a config: dataset, task, model, mesh, training phases.

`build(config)` resolves everything a run needs before its first step, and fails with a
`UserError` before the workdir exists when the config cannot describe a run. The loop
(`cnnjax.train.loop`), the benchmark and "open a finished run" (`cnnjax.runs`) all start here.
"""

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax import data as data_lib
from cnnjax import parallel, tasks
from cnnjax.data import record as data_record
from cnnjax.errors import UserError, did_you_mean
from cnnjax.train import checkpoint, optim, transfer
from cnnjax.train.state import TrainState, create_train_state

INIT_STREAM = 0  # fold_in tag of the initialization RNG (training uses feeds.TRAIN_STREAM).


def compute_dtype(name: str):
    """ "auto" is bfloat16 on GPU/TPU and float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    if name in ("float32", "bfloat16", "float16"):
        return jnp.dtype(name)
    raise UserError(f"Unknown dtype {name!r}; choose auto, float32 or bfloat16.")


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
    """Everything built from a config before the first step. `phases` has one entry, or two
    for a transfer run (frozen, then fine-tuned); the first phase's optimizer, schedule and
    state shapes are the experiment's own."""

    config: object
    data: data_lib.Dataset
    model: object
    mesh: object
    steps_per_epoch: int
    total_steps: int
    phases: list[Phase]
    task: tasks.Task  # What is learned and measured (`config.task`).

    @property
    def tx(self) -> optax.GradientTransformation:
        return self.phases[0].tx

    @property
    def schedule(self) -> optax.Schedule:
        return self.phases[0].schedule

    @property
    def abstract_state(self) -> TrainState:
        return self.phases[0].abstract_state

    @property
    def state_shardings(self):
        return self.phases[0].state_shardings

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


def build(
    config,
    data: data_lib.Dataset | None = None,
    *,
    recorded: dict | None = None,
    training: bool = True,
) -> Experiment:
    """Resolves the dataset (unless given), model, mesh and optimizer of `config`.

    recorded: what the run was trained on (`data.record`, from its `data.json`): the dataset
    then takes the recorded classes and statistics, or a UserError names what changed.
    training: False for what only runs the model (predict, export, pictures), which does not
    need the training batch to divide among the devices."""
    check_numbers(config)  # Before loading data: a typo fails in a second.
    data = data_lib.load(config.data) if data is None else data
    if recorded is not None:
        data = data_record.matched(recorded, data, accept_changes=bool(config.data.accept_changes))
    mesh = parallel.make_mesh()
    num_devices = mesh.devices.size
    if training and config.batch_size % num_devices:
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
    return Experiment(config, data, model, mesh, steps_per_epoch, total_steps, phases, task)


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
    if int(config.num_train_steps) == 0 or int(config.num_train_steps) < -1:
        raise UserError(
            f"--config.num_train_steps={config.num_train_steps}: give a number of steps, or -1 "
            "to train --config.num_epochs."
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


@contextlib.contextmanager
def model_must_fit_task(exp: Experiment):
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


def check_best_metric(exp: Experiment, abstract_sums) -> None:
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


def checkpoint_target(exp: Experiment, phase: Phase | None = None) -> dict:
    """The abstract tree a checkpoint restores into, sharded for the current mesh."""
    phase = phase or exp.phases[0]
    repl = parallel.replicated(exp.mesh)
    sums = jax.eval_shape(exp.task.zero_train_sums)
    return {
        "state": checkpoint.abstract_like(phase.abstract_state, phase.state_shardings),
        "train_sums": checkpoint.abstract_like(sums, jax.tree.map(lambda _: repl, sums)),
    }


def restored_state(exp: Experiment, restored: dict, phase: Phase | None = None) -> TrainState:
    """A TrainState (with its static apply_fn/tx) from a restored checkpoint tree."""
    phase = phase or exp.phases[0]
    return phase.abstract_state.replace(
        **{
            f.name: getattr(restored["state"], f.name)
            for f in dataclasses.fields(TrainState)
            if f.name not in ("apply_fn", "tx")
        }
    )


def initialize(exp: Experiment) -> TrainState:
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


def start_phase(exp: Experiment, phase: Phase, state: TrainState) -> TrainState:
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


def with_fresh_optimizer(exp: Experiment, phase: Phase, saved: dict):
    """(state, train sums) from a checkpoint read as arrays (`Checkpoints.read_arrays`): its
    step, parameters, statistics and sums, placed like `phase`'s state, and a fresh optimizer
    state of `phase` (`resume.fresh_optimizer`)."""
    target = checkpoint_target(exp, phase)
    abstract = target["state"]
    state = TrainState(
        step=checkpoint.arrays_like(abstract.step, saved["state"]["step"]),
        params=checkpoint.arrays_like(abstract.params, saved["state"]["params"]),
        batch_stats=checkpoint.arrays_like(
            abstract.batch_stats, saved["state"].get("batch_stats") or {}
        ),
        opt_state=None,
        apply_fn=abstract.apply_fn,
        tx=phase.tx,
    )
    sums = checkpoint.arrays_like(target["train_sums"], saved["train_sums"])
    return start_phase(exp, phase, state), sums
