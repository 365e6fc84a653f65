"""The training loop: the one place that knows data, model, steps, writers and checkpoints.

config -> experiment (`cnnjax.train.experiment.build`) -> jitted fused step (batch cut + augment
+ train step) -> metric sums on device -> host at log steps -> metrics.jsonl / TensorBoard /
progress bar; eval with one jitted scan over the padded test split; orbax checkpoints;
SIGTERM -> save and exit 0.

`train_and_evaluate` reads as one recipe: set up (build, feeds, resume, compile), then the loop,
whose body is four named steps (`_log`, `_preempt`, `_evaluate`, `_checkpoint`) over one
`_Loop` that holds what changes from step to step.
"""

import concurrent.futures
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import data as data_lib
from cnnjax import files, memory, parallel
from cnnjax import workdir as workdir_lib
from cnnjax.core.params import count_params
from cnnjax.data import record as data_record
from cnnjax.errors import MetricsWriteError, NonFiniteLossError, UserError
from cnnjax.train import background, checkpoint, feeds, writers
from cnnjax.train.experiment import (
    Experiment,
    Phase,
    build,
    check_best_metric,
    checkpoint_target,
    initialize,
    model_must_fit_task,
    restored_state,
    start_phase,
    with_fresh_optimizer,
)
from cnnjax.train.progress import Progress

# Fault injection for the resume tests: SIGKILL this process before training step N (0: off).
_FAULT_KILL_AT_STEP = int(os.environ.get("CNNJAX_FAULT_KILL_AT_STEP", "0") or 0)
# Fault injection for the multi-process stop tests: this process alone gets a real SIGTERM at the
# first step boundary at or past step N (0: off).
_FAULT_SIGTERM_AT_STEP = int(os.environ.get("CNNJAX_FAULT_SIGTERM_AT_STEP", "0") or 0)


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


@dataclasses.dataclass
class Outcome:
    """What a training run ended with. `status`: "completed" or "preempted"."""

    status: str
    step: int
    eval_metrics: dict | None


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


# With several processes, how many training steps apart they agree whether to stop: each time
# costs an all-reduce and a host sync (docs/decisions.md, "Multi-host behaves like one host").
_AGREE_EVERY_STEPS = 10


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop asks `stops_at(step)` after every device call, and saves
    before exiting when it says so.

    One process: a signal stops the run at the next step boundary. Several: the signal reaches
    one process, or reaches them steps apart, and a save is collective (one process saving while
    another trains on is a hang), so they agree first. At the first boundary at or past every
    `_AGREE_EVERY_STEPS`-th step, the signal numbers go through an all-reduce (max): every
    process sees the same answer at the same step, and all stop there with the agreed signal."""

    def __init__(self):
        self.signum = None
        self._previous = {}
        self._next_vote = 0  # Several processes: the first step whose boundary votes again.
        self._vote = None  # Several processes: (input sharding, jitted max), at the first vote.

    def stops_at(self, step: int) -> bool:
        """Whether the run stops at the boundary after `step`: the same on every process, which
        must all ask at every boundary."""
        if _FAULT_SIGTERM_AT_STEP and step >= _FAULT_SIGTERM_AT_STEP and self.signum is None:
            signal.raise_signal(signal.SIGTERM)  # Test hook; the handler runs before the next line.
        if jax.process_count() == 1:
            return self.signum is not None
        if step < self._next_vote:
            return False
        self._next_vote = (step // _AGREE_EVERY_STEPS + 1) * _AGREE_EVERY_STEPS
        agreed = self._max_over_processes(self.signum or 0)
        if agreed:
            self.signum = agreed  # SIGTERM (15) wins over SIGINT (2); the same everywhere.
        return bool(agreed)

    def _max_over_processes(self, value: int) -> int:
        """The largest `value` of all processes: a collective, called by all at one point."""
        if self._vote is None:
            mesh = parallel.make_mesh()
            vote = jax.jit(jnp.max, out_shardings=parallel.replicated(mesh))
            self._vote = (parallel.data_sharded(mesh), vote)
        sharding, vote = self._vote
        local = np.full((jax.local_device_count(),), value, np.int32)
        return int(vote(jax.make_array_from_process_local_data(sharding, local)))

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        if self.signum is not None and signum == signal.SIGINT:
            # A second Ctrl-C: the user will not wait for the save. A half-written checkpoint
            # has no manifest, so the next run sets it aside and resumes from the one before.
            sys.stderr.write(
                "error: interrupted again: exiting without waiting for the checkpoint; the "
                "earlier ones are intact. Re-run the same command to resume.\n"
            )
            sys.stderr.flush()
            os._exit(130)
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _fault_kill_before(step: int) -> None:
    """Test hook (`CNNJAX_FAULT_KILL_AT_STEP`): a real kill -9 before training step `step`."""
    if _FAULT_KILL_AT_STEP and step == _FAULT_KILL_AT_STEP:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclasses.dataclass
class _Loop:
    """The training loop's context: what is fixed for the run (top), and what changes from one
    device call to the next (bottom)."""

    exp: Experiment
    workdir: str
    feed: object
    evaluator: object
    eval_compiled: concurrent.futures.Future
    ckpts: checkpoint.Checkpoints
    writer: writers.MetricWriter
    progress: Progress
    stop: _StopFlag
    new_sums: object  # Jitted: fresh zero train sums, replicated.
    log_every: int
    eval_every: int
    ckpt_every: int
    phased: bool  # More than one phase, or a frozen one: events and the bar name the phase.
    t_start: float
    # What changes:
    state: object
    sums: object
    step: int
    phase: Phase
    last_checked: int  # The loss is known finite up to this step.
    t_last: float  # Images/s of the next log line count from (t_last, step_last).
    step_last: int
    last_eval: dict | None = None

    def emit(self, event: dict) -> None:
        """Writes an event; runs with transfer phases say which phase it belongs to. A log
        that cannot be written stops the run, with a checkpoint of this step if it fits."""
        try:
            self.writer.write({**event, "phase": self.phase.index} if self.phased else event)
        except MetricsWriteError as e:
            saved = _save_after_log_failure(self, event)
            raise MetricsWriteError(f"{e}, at step {self.step}; {saved}") from None


def train_and_evaluate(
    config,
    workdir: str,
    *,
    experiment_name: str = "",
    run_record: dict | None = None,
    data: data_lib.Dataset | None = None,
    write_report: bool = True,
) -> Outcome:
    """Trains `config` in `workdir`, resuming from its latest good checkpoint if any.

    run_record: where the experiment came from (`WORKDIR/run.json`, written with config.json).
    data: the dataset, when already loaded (default: `config.data`'s). write_report: the
    summary.txt and plots at the end (`--mode=benchmark` times the loop without them).
    SIGTERM/SIGINT from the start on (data loading and compilation included) stop the run at
    the next step boundary with a checkpoint."""
    # XLA's RESOURCE_EXHAUSTED (compiling, a step, an evaluation) as one line, not a traceback.
    with (
        memory.exhaustion_is_user_error(memory.fix_for(config), "while training"),
        _StopFlag() as stop,
        contextlib.ExitStack() as held,
    ):
        return _train_and_evaluate(
            config, workdir, experiment_name, data, write_report, stop, held, run_record
        )


def _train_and_evaluate(
    config,
    workdir: str,
    experiment_name: str,
    data,
    write_report: bool,
    stop: _StopFlag,
    held: contextlib.ExitStack,
    run_record: dict | None = None,
) -> Outcome:
    t_start = time.perf_counter()
    # ---- Build: before touching the workdir, so a config mistake leaves nothing behind.
    recorded = workdir_lib.read_data_record(workdir)  # What a resumed run was trained on.
    exp = build(config, data, recorded=recorded)
    if files.exists(workdir) and not files.isdir(workdir):
        raise UserError(f"--workdir={workdir} is a file; give a directory (new or a run's).")
    feed, evaluator = feeds.make_feeds(
        config, exp.data, exp.mesh, exp.state_shardings, exp.task, exp.abstract_state
    )
    # What compiling needs of the state (the evaluation ignores the optimizer state, so the
    # first phase's shapes serve every phase); safe from the train step's donation.
    abstract = checkpoint.abstract_like(exp.abstract_state, exp.state_shardings)
    with model_must_fit_task(exp):  # Traces the evaluation: a wrong kind of model fails here.
        eval_sums_shape = evaluator.abstract_sums(abstract)
    check_best_metric(exp, eval_sums_shape)

    # ---- Resume or start.
    print(f"workdir: {workdir}  (re-run with --workdir={workdir} to resume)", flush=True)
    workdir_lib.make(workdir)
    held.enter_context(workdir_lib.exclusive(workdir))  # Until the run ends: one writer.
    workdir_lib.note_changes(config, workdir)
    cfg = exp.config
    ckpts = checkpoint.Checkpoints(
        os.path.join(workdir, "checkpoints"),
        keep=int(cfg.keep_checkpoints),
        best_metric=cfg.best_metric,
    )
    # Created by a jitted function so the zeros are a global array on every process.
    new_sums = jax.jit(exp.task.zero_train_sums, out_shardings=parallel.replicated(exp.mesh))
    try:
        start_step, restored = ckpts.restore_latest(
            lambda step: checkpoint_target(exp, exp.phase_of_state(step)),
            fresh_optimizer=bool(cfg.resume.fresh_optimizer),
        )
    except checkpoint.CheckpointMismatch as e:  # A changed setting: say which.
        changes = workdir_lib.describe_changes(config, workdir)
        where = f" Changed since {workdir_lib.CONFIG_FILE}: {changes}." if changes else ""
        raise checkpoint.CheckpointMismatch(f"{e}{where}", step=e.step, part=e.part) from None
    if restored is None:
        state, sums, start_step = initialize(exp), new_sums(), 0
    elif isinstance(restored["state"], dict):  # resume.fresh_optimizer: arrays as saved.
        state, sums = with_fresh_optimizer(exp, exp.phase_of_state(start_step), restored)
        print(
            f"Resuming from the parameters at step {start_step} in {ckpts.directory} with a "
            "fresh optimizer state (resume.fresh_optimizer: the saved one does not fit the "
            "optimizer settings)",
            flush=True,
        )
    else:
        state = restored_state(exp, restored, exp.phase_of_state(start_step))
        sums = restored["train_sums"]
        print(f"Resuming from the checkpoint at step {start_step} in {ckpts.directory}", flush=True)
    phase = exp.phase_of_state(start_step)
    feed.set_phase(phase.state_shardings, phase.freeze_pattern)

    # ---- Compile. The evaluation compiles on a worker thread while the training step compiles
    # and the first epoch trains: it is first needed at the end of that epoch.
    eval_compiled = background.run_on_thread(
        evaluator.compile, abstract, name="compile", daemon=True
    )
    if write_report and jax.process_index() == 0:
        # matplotlib's import (~1 s) happens while XLA compiles, not after training.
        background.run_on_thread(_import_report_modules, name="import", daemon=True)
    t_compile = time.perf_counter()
    with model_must_fit_task(exp):
        feed.compile(state, sums)
    compile_s = time.perf_counter() - t_compile
    # Only now: a run whose checkpoints or settings do not fit keeps its own config.json.
    workdir_lib.write_config(config, workdir)
    if run_record is not None:  # Each training command: the code that trained it last.
        workdir_lib.write_run_record(workdir, run_record)
    if recorded is None:  # Once, at the start: a resume keeps what the run learned.
        workdir_lib.write_data_record(workdir, data_record.of(exp.data, cfg.data))
    writer = writers.MetricWriter(workdir, resume_step=start_step or None)
    n_params = count_params(exp.abstract_state.params)
    name = experiment_name or cfg.model.name
    _print_banner(exp, name, n_params, compile_s)
    if start_step == 0:
        writer.write({"step": 0, "kind": "compile", "seconds": compile_s, "wall_time": time.time()})
    if feeds.steps_per_execution(cfg) > 1 and isinstance(feed, feeds.StreamTrainFeed):
        print(
            f"note: steps_per_execution={cfg.steps_per_execution} applies to the on-device "
            "feed; this run reads its batches from the host, one step per call.",
            flush=True,
        )

    spe = exp.steps_per_epoch
    run = _Loop(
        exp=exp,
        workdir=workdir,
        feed=feed,
        evaluator=evaluator,
        eval_compiled=eval_compiled,
        ckpts=ckpts,
        writer=writer,
        progress=Progress(total=exp.total_steps, initial=start_step, desc=name),
        stop=stop,
        new_sums=new_sums,
        log_every=max(1, int(cfg.log_every_steps)),
        eval_every=_every(int(cfg.eval_every_steps), spe),
        ckpt_every=_every(int(cfg.checkpoint_every_steps), spe),
        phased=len(exp.phases) > 1 or bool(exp.phases[0].freeze_pattern),
        t_start=t_start,
        state=state,
        sums=sums,
        step=start_step,
        phase=phase,
        last_checked=start_step,
        t_last=time.perf_counter(),
        step_last=start_step,
    )
    # Where a device call of several steps must end, besides the intervals: phase starts, and
    # the fault-injection step of the resume tests.
    marks = (*(p.start for p in exp.phases), _FAULT_KILL_AT_STEP)

    # ---- Train.
    status = "completed"
    while run.step < exp.total_steps:
        if exp.phase_at(run.step) is not run.phase:
            _next_phase(run)
        _fault_kill_before(run.step)
        n = steps_until_boundary(
            run.step,
            per_call=feed.per_call,
            total=exp.total_steps,
            intervals=(run.log_every, run.eval_every, run.ckpt_every, spe),
            marks=marks,
        )
        run.state, run.sums = feed.run(run.state, run.sums, run.step, n)
        run.step += n
        is_last = run.step == exp.total_steps
        stopping = stop.stops_at(run.step)
        if run.step % run.log_every == 0 or is_last or stopping:
            _log(run)
        if stopping:
            _preempt(run)
            status = "preempted"
            break
        eval_metrics = None
        if (run.eval_every and run.step % run.eval_every == 0) or is_last:
            eval_metrics = _evaluate(run)
        if (run.ckpt_every and run.step % run.ckpt_every == 0) or eval_metrics or is_last:
            _checkpoint(run, eval_metrics)
    run.progress.close()

    # ---- Finish.
    if status == "completed" and run.last_eval is None:
        # Resumed a finished run: evaluate the final state again for the report and pictures.
        eval_compiled.result()
        result, arrays = exp.task.finalize(evaluator(run.state))
        run.last_eval = {**result, **arrays}
    feed.close()
    ckpts.close()
    try:
        writer.close()
    except MetricsWriteError as e:
        raise MetricsWriteError(f"{e}; the checkpoints up to step {run.step} are saved") from None
    if status == "completed" and write_report and jax.process_index() == 0:
        from cnnjax.train import report  # Local: matplotlib only when there is a report.

        report.write_run_report(
            workdir,
            exp,
            run.last_eval,
            n_params=n_params,
            elapsed_s=time.perf_counter() - t_start,
            name=name,
        )
    return Outcome(status=status, step=run.step, eval_metrics=run.last_eval)


def _print_banner(exp: Experiment, name: str, n_params: int, compile_s: float) -> None:
    cfg, total, spe = exp.config, exp.total_steps, exp.steps_per_epoch
    print(
        f"{name}: {cfg.model.name} ({n_params:,} params) on {exp.data.name} "
        f"({exp.data.num_train:,} train / {exp.data.num_test:,} test), "
        f"{total:,} steps of {cfg.batch_size} ({total / spe:.1f} epochs) on "
        f"{exp.mesh.devices.size} {jax.default_backend()} device(s); compiled in "
        f"{compile_s:.1f}s",
        flush=True,
    )


def _next_phase(run: _Loop) -> None:
    """Switches to the phase of `run.step`: its optimizer, freezing and compiled step."""
    exp, cfg = run.exp, run.exp.config
    run.phase = phase = exp.phase_at(run.step)
    run.state = start_phase(exp, phase, run.state)
    run.feed.set_phase(phase.state_shardings, phase.freeze_pattern)
    run.feed.compile(run.state, run.sums)
    # The images/s of the next log line: from here, not counting the compile.
    run.t_last, run.step_last = time.perf_counter(), run.step
    run.emit({"step": run.step, "kind": "phase", "wall_time": time.time()})
    run.progress.write(
        f"phase {phase.index} from step {run.step}: everything trainable, "
        f"lr {float(phase.schedule(0)):.3g} -> peak "
        f"{cfg.transfer.finetune_lr}, fresh optimizer state" + _optim_changes(cfg)
    )


def _optim_changes(config) -> str:
    """The phase-2 message's ", optim changes nesterov=True, ..." part, or "" without any."""
    changes = config.transfer.get("finetune_optim")
    if not changes:
        return ""
    return ", optim changes " + ", ".join(f"{k}={v}" for k, v in changes.items())


def _log(run: _Loop) -> None:
    """A log step: the one host sync, the finite check, the train event and the progress bar;
    then the train sums start again from zero."""
    exp, step = run.exp, run.step
    host = jax.device_get(run.sums)
    _check_finite(run, host_sums=host)
    now = time.perf_counter()
    ips = (step - run.step_last) * exp.config.batch_size / max(now - run.t_last, 1e-9)
    train_metrics = exp.task.train_metrics(host)
    spe, phase = exp.steps_per_epoch, run.phase
    run.emit(
        {
            "step": step,
            "epoch": step / spe,
            "kind": "train",
            **train_metrics,
            "lr": float(phase.schedule(step - 1 - phase.start)),
            "images_per_sec": ips,
            "wall_time": time.time(),
            "elapsed_s": time.perf_counter() - run.t_start,
        }
    )
    run.progress.update(
        step,
        loss=train_metrics["loss"],
        accuracy=train_metrics.get(exp.task.progress_metric, float("nan")),
        images_per_sec=ips,
        extra=f"epoch {step / spe:.1f}"
        + (f" phase {phase.index}/{len(exp.phases)}" if run.phased else ""),
    )
    run.sums = run.new_sums()
    run.t_last, run.step_last = time.perf_counter(), step


def _check_finite(run: _Loop, *, params_too: bool = False, host_sums=None) -> None:
    """Raises if the loss since the last check (or, before a save, any parameter) is not
    finite: a checkpoint is only ever written from a finite state."""
    step, ckpts = run.step, run.ckpts
    fetched = host_sums if host_sums is not None else jax.device_get(run.sums)
    loss_sum = float(fetched["loss_sum"])
    if params_too and np.isfinite(loss_sum) and not bool(_all_finite(run.state.params)):
        loss_sum = float("nan")  # The last update overflowed although its loss did not.
    if not np.isfinite(loss_sum):
        ckpts.wait()
        good = ckpts.steps()
        where = (
            f"the last good checkpoint (step {good[-1]}) stays in {ckpts.directory}"
            if good
            else "no checkpoint was written"
        )
        first = run.feed.first_nonfinite_step()
        when = (
            f"at step {first}"
            if run.last_checked < first <= step
            else f"between step {run.last_checked + 1} and step {step}"  # An update overflowed.
        )
        raise NonFiniteLossError(
            f"loss became {loss_sum} {when}; training stopped and {where}. Lower "
            "--config.optim.lr or clip gradients with --config.optim.grad_clip_norm=1.0."
        )
    run.last_checked = step


def _preempt(run: _Loop) -> None:
    """SIGTERM/SIGINT: a checkpoint of the current state, then the loop ends."""
    step, signum = run.step, run.stop.signum
    _check_finite(run, params_too=True)
    run.ckpts.save(step, {"state": run.state, "train_sums": run.sums})
    run.ckpts.wait()
    run.emit({"step": step, "kind": "preempted", "signal": int(signum), "wall_time": time.time()})
    run.progress.close()
    run.progress.write(
        f"Stopped by signal {signum} at step {step}; checkpoint "
        f"saved. Re-run the same command with --workdir={run.workdir} to "
        "resume."
    )


def _save_after_log_failure(run: _Loop, event: dict) -> str:
    """After a failed metrics write: saves the current step as SIGTERM would, unless it is
    saved already or its state is mid-switch to a new phase; says what the checkpoints hold.
    Only in a one-process run: a save is collective, and only process 0 writes the log."""
    step, ckpts, failed = run.step, run.ckpts, ""
    fits = step > 0 and run.exp.phase_of_state(step) is run.phase
    try:
        if jax.process_count() == 1:
            ckpts.wait()
        if fits and jax.process_count() == 1 and step not in ckpts.steps():
            _check_finite(run, params_too=True)
            # A train event is written after its sums were taken: the next ones start at zero.
            sums = run.new_sums() if event.get("kind") == "train" else run.sums
            ckpts.save(step, {"state": run.state, "train_sums": sums})
            ckpts.wait()
    except checkpoint.CheckpointWriteError as e:
        failed = f"the checkpoint could not be saved either ({e}); "
    saved = ckpts.steps()
    if not saved:
        return f"{failed}no checkpoint is saved yet"
    if saved[-1] == step:
        return f"the checkpoint of step {step} is saved in {ckpts.directory}"
    return f"{failed}the newest checkpoint, step {saved[-1]}, is intact in {ckpts.directory}"


def _evaluate(run: _Loop) -> dict:
    """The test-split metrics of the current state, written as an eval event."""
    exp, step = run.exp, run.step
    run.eval_compiled.result()  # Raises the compilation's error, if any.
    result, arrays = exp.task.finalize(run.evaluator(run.state))
    run.last_eval = {**result, **arrays}
    run.emit(
        {
            "step": step,
            "epoch": step / exp.steps_per_epoch,
            "kind": "eval",
            "wall_time": time.time(),
            **result,
        }
    )
    run.progress.write(f"eval @ step {step}: {exp.task.eval_line(result)}")
    return result


def _checkpoint(run: _Loop, eval_metrics: dict | None) -> None:
    """A checkpoint of a finite state; with eval metrics it competes for "best"."""
    metric = run.exp.config.best_metric
    _check_finite(run, params_too=True)
    run.ckpts.save(
        run.step,
        {"state": run.state, "train_sums": run.sums},
        metrics={metric: eval_metrics[metric]} if eval_metrics else None,
    )


def _import_report_modules() -> None:
    from cnnjax.train import report  # noqa: F401
    from cnnjax.viz import confusion, curves  # noqa: F401
