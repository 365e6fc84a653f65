"""Checkpoints with orbax: background saves, last N plus the best, damaged steps detected and set
aside.

What is saved is one pytree `{"state": TrainState, "train_sums": ...}`; restoring takes an
abstract target (`jax.eval_shape` output with shardings) so arrays land sharded on the current
mesh, whatever device count wrote them.

Saving costs the training loop one on-device copy of the tree. Even orbax's asynchronous save
blocks its caller while it copies every array to the host and prepares the metadata (0.1-0.3 s
for ResNet-18's 22M numbers, once per epoch): that part runs on one worker thread here, on a
copy the next (donating) step cannot delete, while the devices go on training. With several
processes the save stays on the calling thread: orbax's barriers are device collectives there,
and collectives must start in the same order on every process.

Orbax stores the arrays; this module keeps the rest, because orbax's per-step extras are where
one damaged file became a crash: given metrics, `CheckpointManager(...)` reads every step's
metrics JSON while it starts, and 7 random bytes there raised `UnicodeDecodeError` from inside
orbax before any fallback could run. So the manager starts with `lightweight_initialize=True`
(it reads no per-step file, only the directory listing), gets no metrics and no retention
policy, and keeps every step; this module ranks and deletes steps itself: the last `keep` plus
the best, a union (orbax's `max_to_keep` with `best_fn` can delete the newest, orbax#526).

Manifest: once orbax has committed a step, `<step>/cnnjax_manifest.json` records the step's
metrics and the size and sha256 of every other file of the step, written under a temporary
name, fsynced and renamed, so a crash leaves no half-written manifest. Orbax 0.12.8 ignores the
extra file (step discovery, restore and delete checked), and it moves and goes with its step.
Every read checks the manifest first: a file that is missing, has another size or another
sha256, or a manifest that cannot be parsed makes the step unreadable. Hashing costs about
0.06 s per 90 MB (ResNet-18's step; sha256 on one AMD EPYC core with SHA-NI, warm page cache,
`hashlib`), once on the save thread after each save and once per step read on resume. With
several processes, process 0 writes it on a thread of its own once orbax has committed the step
(when the next save starts, or in `wait`), so the training thread does not hash; on restore,
every process checks every file's size, hashes its share of the files (about 1/N of the bytes)
and the processes agree on the verdict (docs/decisions.md, "Multi-host behaves like one host").
Steps without a manifest were written by older versions of this module: they are read without
verification as long as they are older than every step that has one. A newer step without one
is a save that did not finish (the process died between orbax's commit and the manifest) and
is unreadable.

Unreadable steps: one warning line each, then the next older step. When training resumes from
an older step, the newer unreadable ones are renamed `corrupt-<step>-<UTC time>`, a name orbax
neither lists as a step nor cleans up as a temporary directory, so the step can be saved again
and no file is lost. If steps exist but none is readable, restoring raises a `UserError` and
moves nothing, rather than letting training start afresh over the run.
"""

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from cnnjax import files
from cnnjax.errors import UserError
from cnnjax.train import background

MANIFEST = "cnnjax_manifest.json"
_MANIFEST_FORMAT = 1
# Status codes tensorstore gives the errors of a storage that refused a write.
_WRITE_STATUSES = ("RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "UNAVAILABLE", "DATA_LOSS")


class CheckpointMismatch(UserError):
    """A readable, intact checkpoint whose tree does not fit the state the config builds: a
    changed setting, never damage (nothing is moved aside for it).

    part: "optimizer" when only the optimizer state differs (the parameters fit: e.g.
    `optim.grad_clip_norm` or `transfer.finetune_optim` changed), else "model"."""

    def __init__(self, message: str, *, step: int | None = None, part: str = "model"):
        super().__init__(message)
        self.step = step
        self.part = part


class CheckpointWriteError(Exception):
    """A save did not reach the disk (full, refused); the checkpoints before it are intact."""


class IntegrityError(Exception):
    """A step's files are not the ones its manifest recorded when it was saved."""


class ChangedFile(IntegrityError):
    """A file of a step whose sha256 is not the one recorded: `rel` is its path in the step."""

    def __init__(self, rel: str):
        super().__init__(f"{rel} differs from the sha256 recorded when it was saved")
        self.rel = rel


class _NoOrbaxTracebacks(logging.Filter):
    """Orbax logs a failed save with its traceback (`logging.exception`), then raises it; this
    module raises it as one line (`CheckpointWriteError`), so orbax's log line stays and its
    traceback goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and f"{os.sep}orbax{os.sep}" in record.pathname:
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("absl").addFilter(_NoOrbaxTracebacks())


class Checkpoints:
    """Keeps the last `keep` checkpoints and the best one by eval `best_metric` (higher is
    better, except for losses and errors: `lower_is_better`); steps saved without metrics count
    for "last" only."""

    def __init__(
        self, directory: str, *, keep: int, best_metric: str = "accuracy", read_only: bool = False
    ):
        self.directory = files.absolute(directory)
        if files.exists(self.directory) and not files.isdir(self.directory):
            raise UserError(
                f"{self.directory} should be the run's checkpoint folder but is a file: move it "
                "aside, or train in a fresh --workdir."
            )
        self.keep = max(1, keep)
        self.best_metric = best_metric
        self.read_only = read_only
        self.manager = self._open_manager()
        # One worker: saves start in the order they were asked for, never two at once.
        self._background = jax.process_count() == 1
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ckpt")
        self._pending: list[concurrent.futures.Future] = []
        self._uncommitted: int | None = None  # The step orbax may still be writing.
        # Several processes: (step, future) of the manifest process 0 writes on its own thread.
        self._manifest: tuple[int, concurrent.futures.Future] | None = None
        # Steps saved or being saved. Read here, not from the manager, while a save may run.
        self._asked: set[int] = set(self.manager.all_steps())
        self._metrics = {s: _recorded_metrics(self._step_dir(s)) for s in self._asked}

    def _open_manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=True,
            lightweight_initialize=True,  # Reads no step's files: none can crash the start.
            cleanup_tmp_directories=not self.read_only,
            create=not self.read_only,
            read_only=self.read_only,
        )
        return ocp.CheckpointManager(self.directory, options=options)

    def _reopen(self) -> None:
        """A fresh manager: one that lists the directory as it is now, and does not re-raise
        an earlier failed save (orbax's does, on every later wait, once per thread)."""
        with contextlib.suppress(Exception):  # Its failure is being reported already.
            self.manager.close()
        self.manager = self._open_manager()

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, tree, metrics: dict | None = None) -> None:
        """Starts saving `tree` at `step` in the background; `metrics` rank it for "best".

        Returns once the arrays are copied on their devices: the caller may then donate or
        overwrite `tree`. `wait` (or `close`) makes the save durable and raises its error
        (`CheckpointWriteError` when the disk refused it).
        """
        self._raise_failed()
        if step in self._asked:
            return  # Already saved (e.g. an eval step that is also a checkpoint step).
        self._asked.add(step)
        self._metrics[step] = _json_metrics(metrics)
        if not self._background:
            self._save_now(step, tree)
            return
        snapshot = _device_copy(tree)
        self._pending.append(self._worker.submit(self._save_now, step, snapshot))

    def _save_now(self, step: int, tree) -> None:
        """Commits the previous save (orbax would wait for it anyway), then starts this one; in
        the background, also waits for this one's commit, so the manifest follows at once."""
        self._commit()
        with self._writing(step):
            self.manager.save(step, args=ocp.args.StandardSave(tree), force=True)
        self._uncommitted = step
        if self._background:
            self._commit()

    def _commit(self) -> None:
        """Waits for the save in flight, has its manifest written, then deletes what is not
        kept. With several processes (the save on the training thread), process 0 writes the
        manifest on a thread of its own while training goes on: the next commit, `wait` and
        `close` wait for it."""
        self._join_manifest()
        step, self._uncommitted = self._uncommitted, None
        if step is None:
            return
        with self._writing(step):
            self.manager.wait_until_finished()
            if jax.process_index() == 0:
                args = (self._step_dir(step), step, self._metrics.get(step))
                if self._background:  # One process: this is the save's worker thread.
                    _write_manifest(*args)
                else:
                    self._manifest = (
                        step,
                        background.run_on_thread(
                            _write_manifest, *args, name="ckpt-manifest", daemon=False
                        ),
                    )
        self._retain()

    def _join_manifest(self) -> None:
        """Waits for the manifest written on its own thread, if any; raises its error."""
        if self._manifest is None:
            return
        (step, future), self._manifest = self._manifest, None
        with self._writing(step):
            future.result()

    @contextlib.contextmanager
    def _writing(self, step: int):
        """Turns a storage failure while writing `step` into one `CheckpointWriteError` line;
        other errors (bugs) pass with their traceback."""
        try:
            yield
        except Exception as e:
            if not _is_write_failure(e):
                raise
            self._asked.discard(step)
            self._reopen()  # Also cleans up orbax's partial directory of `step`.
            raise CheckpointWriteError(
                f"could not write the checkpoint at step {step} to {self.directory}: "
                f"{_os_reason(e)}"
            ) from e

    def _retain(self) -> None:
        """Deletes the steps that are neither among the last `keep` nor the best."""
        steps = self.steps()
        kept = set(steps[-self.keep :]) | {self.best_step()}
        for step in steps:
            if step not in kept:
                self.manager.delete(step)
                self._metrics.pop(step, None)

    def _raise_failed(self) -> None:
        """Re-raises the error of a finished background save, if any."""
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for f in done:
            f.result()

    def wait(self) -> None:
        """Blocks until every save asked for is on disk; raises the first one's error."""
        pending, self._pending = self._pending, []
        errors = [e for e in (f.exception() for f in pending) if e is not None]
        self._commit()
        self._join_manifest()  # The manifest of the step just committed, too.
        if errors:
            raise errors[0]

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        """The step with the best recorded `best_metric` (the newest among equals), or None."""
        sign = -1.0 if lower_is_better(self.best_metric) else 1.0
        scored = [
            (sign * value, step)
            for step in self.steps()
            if (value := _metric_value(self._metrics.get(step), self.best_metric)) is not None
        ]
        return max(scored)[1] if scored else None

    def restore(self, step: int, target):
        """The tree saved at `step`, restored into `target`'s shapes and shardings.

        Raises `CheckpointMismatch` (a `UserError`) when the checkpoint is readable but holds
        other shapes than `target`: a different model or config, not a damaged file. Any other
        error means the step is unreadable.
        """
        return self._read(step, target)

    def _read(self, step: int, target):
        """The one way a step is read: its manifest, then its metadata (shapes), then orbax."""
        step_dir = self._step_dir(step)
        self._verify(step)
        part, difference = _tree_difference(_saved_leaves(step_dir), target)
        if part == "optimizer":
            raise CheckpointMismatch(
                f"The checkpoint at step {step} in {self.directory} holds another optimizer "
                f"state than this config builds ({difference}): an optimizer setting changed "
                "since it was saved. Resume with the run's settings (its config.json lists "
                "them), or keep its parameters and start a fresh optimizer state with "
                "--config.resume.fresh_optimizer=true.",
                step=step,
                part=part,
            )
        if part:
            raise CheckpointMismatch(
                f"The checkpoint at step {step} in {self.directory} holds a different "
                f"model than this config builds ({difference}). Use the settings the run "
                "was trained with (its config.json lists them), or train in a new --workdir.",
                step=step,
                part=part,
            )
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

    def read_arrays(self, step: int) -> dict:
        """The tree saved at `step` as host NumPy arrays in the saved structure (dicts and
        lists), whatever model or device count wrote it; the manifest is checked first
        (`IntegrityError`). For reading what the current config cannot restore into: another
        run's parameters (`init.checkpoint`), or parameters under a fresh optimizer state."""
        self._verify(step)
        path = epath.Path(self._step_dir(step)) / "default"
        handler = ocp.StandardCheckpointHandler()
        try:
            saved = handler.metadata(path).tree
        finally:
            handler.close()
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), saved)
        with ocp.PyTreeCheckpointer() as reader, warnings.catch_warnings():
            # Host arrays need no sharding: orbax's warning about reading it from the files
            # would be a stray line on the user's stderr.
            warnings.filterwarnings("ignore", message="Sharding info not provided")
            return reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))

    def _verify(self, step: int) -> None:
        """Raises `IntegrityError` unless `step`'s files are those its manifest lists (or it
        is a step of an older version, older than every step with a manifest).

        Every process checks that each file is there with its size; the sha256s are divided
        among the processes (`_hash_share`), and with several the verdict is agreed
        (`_agreed`, a collective: all processes verify the same steps in the same order), so
        each hashes about 1/N of the step and all set the same steps aside."""
        step_dir = self._step_dir(step)
        listed, error = {}, None
        try:
            manifest = _load_manifest(step_dir)
            if manifest is not None:
                listed = manifest["files"]
                mine = _hash_share(listed, jax.process_index(), jax.process_count())
                _check_files(step_dir, listed, hashed=mine)
            elif any(
                files.exists(os.path.join(self._step_dir(s), MANIFEST)) for s in self._older(step)
            ):
                raise IntegrityError(f"no {MANIFEST}: its save did not finish")
        except Exception as e:  # noqa: BLE001 - raised below, after the other processes heard.
            error = e
        if jax.process_count() > 1:
            error = _agreed(error, sorted(listed))
        if error is not None:
            raise error

    def _older(self, step: int) -> list[int]:
        return [s for s in self.steps() if s < step]

    def restore_latest(self, target, *, delete_corrupt: bool = True, fresh_optimizer=False):
        """Restores the newest readable checkpoint: (step, tree), or (None, None) if there is no
        checkpoint at all.

        target: the abstract tree, or a function step -> abstract tree (when the tree's
        structure depends on the step, e.g. the optimizer state of a training phase).

        An unreadable checkpoint gets a warning and the previous one is tried next. When one
        restores and `delete_corrupt` (unless read-only), the newer unreadable ones are moved
        aside, so training can save their steps again. Raises `UserError` if checkpoints exist
        but none is readable, and `CheckpointMismatch` for another config's checkpoint.

        fresh_optimizer: a step whose optimizer state alone does not fit `target` is returned
        as `read_arrays` gives it (its "state" a dict of NumPy arrays), for the caller to give
        its parameters a fresh optimizer state; otherwise that is a `CheckpointMismatch`.
        """
        set_aside = delete_corrupt and not self.read_only
        return self._first_readable(
            list(reversed(self.steps())),
            target,
            set_aside=set_aside,
            fresh_optimizer=fresh_optimizer,
        )

    def restore_best(self, target):
        """Restores the best checkpoint, else the newest readable one: (step, tree), or
        (None, None) if there is no checkpoint at all. For readers (eval, predict): moves
        nothing aside. Raises like `restore_latest`."""
        return self._first_readable(self._best_first(), target, set_aside=False)

    def read_best_arrays(self):
        """(step, tree) of the best (else the newest readable) step as `read_arrays` gives it,
        or (None, None) without any checkpoint: another run's parameters, whatever its model
        (`init.checkpoint`). Unreadable steps are warned about and skipped, like restoring."""
        return self._first_readable(self._best_first(), None, set_aside=False)

    def _best_first(self) -> list[int]:
        """The steps in the order readers try them: the best, then the newest first."""
        best = self.best_step()
        newest_first = [s for s in reversed(self.steps()) if s != best]
        return ([best] if best is not None else []) + newest_first

    def _first_readable(
        self, order: list[int], target, *, set_aside: bool, fresh_optimizer: bool = False
    ):
        """(step, tree) of the first readable step of `order`; one warning per unreadable one
        before it, printed once it is known whether they are moved aside."""
        target_for = target if callable(target) else (lambda _: target)
        unreadable: list[tuple[int, str]] = []
        for step in order:
            wanted = target_for(step)  # Outside the `try`: its errors are the caller's bugs.
            try:
                tree = self._read_as(step, wanted, fresh_optimizer=fresh_optimizer)
            except CheckpointMismatch:  # Readable, but not this config's: moving it would
                self._warn(unreadable, order, {})  # hide the run.
                raise
            except Exception as e:  # noqa: BLE001 - any failure to read means "not usable".
                unreadable.append((step, _cause(e)))
                continue
            moved = self._set_aside([s for s, _ in unreadable]) if set_aside else {}
            self._warn(unreadable, order, moved)
            return step, tree
        self._warn(unreadable, order, {})
        if order:
            raise UserError(
                f"No readable checkpoint among steps {sorted(order)} in {self.directory} (see "
                f"the warnings above). Move the folder aside (mv {self.directory} "
                f"{self.directory}.damaged) to train from scratch, or use a fresh --workdir."
            )
        return None, None

    def _read_as(self, step: int, target, *, fresh_optimizer: bool):
        """`_read` into `target`; with no target, or an optimizer state that does not fit
        under `fresh_optimizer`, the arrays as saved (`read_arrays`)."""
        if target is None:
            return self.read_arrays(step)
        try:
            return self._read(step, target)
        except CheckpointMismatch as e:
            if not (fresh_optimizer and e.part == "optimizer"):
                raise
            return self.read_arrays(step)

    def _warn(self, unreadable: list[tuple[int, str]], order: list[int], moved: dict) -> None:
        for step, cause in unreadable:
            where = f"; moved aside to {moved[step]}" if step in moved else ""
            then = "falling back to the previous one"
            if step == order[-1]:
                then = "no other checkpoint is left"
            elif step == order[0] and order[1] > step:  # restore_best's best, not the newest.
                then = "falling back to the newest one"
            print(
                f"warning: checkpoint at step {step} in {self.directory} is unreadable "
                f"({cause}){where}; {then}",
                flush=True,
            )

    def _set_aside(self, steps: list[int]) -> dict[int, str]:
        """Renames the directories of `steps` to names orbax ignores, so the steps can be saved
        again and their files stay for inspection: {step: new path}."""
        if not steps:
            return {}
        self.wait()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = {}
        for step in steps:
            dest = os.path.join(self.directory, f"corrupt-{step}-{stamp}")
            if jax.process_index() == 0:
                try:
                    files.rename(self._step_dir(step), dest)
                except OSError as e:
                    raise UserError(
                        f"could not move the unreadable checkpoint {self._step_dir(step)} aside "
                        f"({e}); move or delete it yourself, then run again."
                    ) from e
            moved[step] = dest
            self._asked.discard(step)
            self._metrics.pop(step, None)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("cnnjax: checkpoints set aside")
        self._reopen()
        return moved

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._worker.shutdown(wait=True)
            self.manager.close()


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of eval metric `metric` is better ("loss", "error_rate")."""
    return "loss" in metric or "error" in metric


@jax.jit
def _device_copy(tree):
    """A copy of `tree` in new device buffers (same shardings), dispatched asynchronously."""
    return jax.tree.map(jnp.copy, tree)


def abstract_like(tree, shardings):
    """An abstract restore target: shapes/dtypes of `tree` with `shardings` attached."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def arrays_like(target, saved):
    """`target`'s tree (abstract arrays with shardings) filled with the arrays of `saved` (a
    tree as `Checkpoints.read_arrays` gives it) at the same paths, placed on the devices."""
    by_path = {
        leaf_path(p): x
        for p, x in jax.tree_util.tree_flatten_with_path(saved)[0]
        if getattr(x, "shape", None) is not None
    }

    def place(path, leaf):
        value = np.asarray(by_path[leaf_path(path)], leaf.dtype)
        # From a callback: a global array on every process, also when not fully addressable.
        return jax.make_array_from_callback(value.shape, leaf.sharding, lambda i: value[i])

    return jax.tree_util.tree_map_with_path(place, target)


def _json_metrics(metrics: dict | None) -> dict | None:
    """`metrics` as plain floats for the manifest (entries that are not numbers are left out)."""
    if not metrics:
        return None
    plain = {}
    for name, value in metrics.items():
        with contextlib.suppress(TypeError, ValueError):
            plain[str(name)] = float(value)
    return plain or None


def _metric_value(metrics, name: str) -> float | None:
    """metrics[name] as a finite float; None when absent or not a number (damaged)."""
    try:
        value = float(metrics[name])
    except (TypeError, KeyError, IndexError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _recorded_metrics(step_dir: str):
    """The metrics saved with the step in `step_dir`: from its manifest, else from orbax's
    metrics file (steps of older versions); None when unreadable."""
    try:
        manifest = _load_manifest(step_dir)
    except IntegrityError:
        return None
    if manifest is not None:
        return manifest.get("metrics")
    try:
        return json.loads(files.read_bytes(os.path.join(step_dir, "metrics", "metrics")))
    except (OSError, ValueError):  # Absent, or damaged (UnicodeDecodeError is a ValueError).
        return None


def _write_manifest(step_dir: str, step: int, metrics: dict | None) -> None:
    """Records the size and sha256 of every file of the committed step in `step_dir`."""
    record = {
        "format": _MANIFEST_FORMAT,
        "step": step,
        "metrics": metrics,
        "files": _file_digests(step_dir),
    }
    files.write_atomic(
        os.path.join(step_dir, MANIFEST), json.dumps(record, indent=1, sort_keys=True)
    )


def _file_digests(step_dir: str) -> dict[str, dict]:
    """{path relative to `step_dir`: {"size", "sha256"}} for every file but the manifest."""
    digests = {}
    for rel in files.walk_files(step_dir):
        if rel.rsplit("/", 1)[-1].startswith(MANIFEST):
            continue
        path = os.path.join(step_dir, *rel.split("/"))
        digests[rel] = {"size": files.size(path), "sha256": _sha256(path)}
    return digests


def _sha256(path: str) -> str:
    with files.open_file(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _load_manifest(step_dir: str) -> dict | None:
    """The manifest of the step in `step_dir`; None if it has none; `IntegrityError` if it
    cannot be parsed or is not one."""
    path = os.path.join(step_dir, MANIFEST)
    if not files.exists(path):
        return None
    try:
        manifest = json.loads(files.read_bytes(path))
        listed = manifest["files"]
        if not all(
            isinstance(v["size"], int) and isinstance(v["sha256"], str) for v in listed.values()
        ):
            raise ValueError("a file entry without size and sha256")
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise IntegrityError(f"{MANIFEST} cannot be read ({_cause(e)})") from e
    return manifest


def _check_files(step_dir: str, listed: dict[str, dict], hashed=None) -> None:
    """Raises `IntegrityError` at the first of `listed` files that is missing or has another
    size, else `ChangedFile` at the first of `hashed` (default: all) whose sha256 differs."""
    for rel, want in sorted(listed.items()):
        path = os.path.join(step_dir, *rel.split("/"))
        if not files.isfile(path):
            raise IntegrityError(f"{rel} is missing")
        size = files.size(path)
        if size != want["size"]:
            raise IntegrityError(f"{rel} holds {size} bytes, {want['size']} when it was saved")
    for rel in sorted(listed if hashed is None else hashed):
        if _sha256(os.path.join(step_dir, *rel.split("/"))) != listed[rel]["sha256"]:
            raise ChangedFile(rel)


def _hash_share(listed: dict[str, dict], process: int, processes: int) -> list[str]:
    """The files of `listed` whose sha256 process `process` of `processes` checks: the biggest
    first, each to the process with the fewest bytes so far. It depends on the manifest alone,
    so the processes split a step the same way (orbax writes each process's arrays into files
    of its own, so a replicated state splits about evenly)."""
    if processes == 1:
        return sorted(listed)
    load, mine = [0] * processes, []
    for rel in sorted(listed, key=lambda r: (-listed[r]["size"], r)):
        least = load.index(min(load))
        load[least] += listed[rel]["size"]
        if least == process:
            mine.append(rel)
    return mine


def _agreed(error: Exception | None, rels: list[str]) -> Exception | None:
    """All processes' verdict on one step, the same on each (a collective): this process's
    own error unless it is about one file's sha256; else the first of `rels` whose sha256 any
    process found changed (the same file named everywhere); else, when another process could
    not check the step, that process; else None."""
    from jax.experimental import multihost_utils

    code = 0  # Fine.
    if isinstance(error, ChangedFile) and error.rel in rels:
        code = 2 + rels.index(error.rel)
    elif error is not None:
        code = 1  # Missing, another size, an unreadable manifest: every process sees it too.
    codes = np.asarray(multihost_utils.process_allgather(np.int32(code))).ravel().tolist()
    if code == 1:
        return error
    changed = [c for c in codes if c >= 2]
    if changed:
        return ChangedFile(rels[min(changed) - 2])
    if 1 in codes:
        return IntegrityError(f"unreadable on process {codes.index(1)} (see its warning)")
    return None


def _key_name(key) -> str:
    """One step of a tree path as text: a dict key, an attribute or a sequence index."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_path(path) -> str:
    """A tree path as "state/params/conv1/kernel" (saved trees and targets alike: a
    NamedTuple's field and a saved dict's key, a tuple index and a saved list's)."""
    return "/".join(_key_name(k) for k in path)


def _leaves(tree) -> dict[str, tuple]:
    """{leaf path: shape} of the arrays of `tree` (array metadata or abstract arrays)."""
    return {
        leaf_path(p): tuple(x.shape)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        if getattr(x, "shape", None) is not None
    }


def _saved_leaves(step_dir: str) -> dict[str, tuple]:
    """{leaf path: shape} of the arrays saved in `step_dir` (raises if unreadable)."""
    handler = ocp.StandardCheckpointHandler()
    try:
        saved = handler.metadata(epath.Path(step_dir) / "default").tree
    finally:
        handler.close()
    return _leaves(saved)


def _tree_difference(saved: dict[str, tuple], target) -> tuple[str, str]:
    """("", "") when the saved arrays are those of `target` (same paths, same shapes); else
    (part, how they differ), part "optimizer" when every difference is inside the optimizer
    state, else "model"."""
    wanted = _leaves(target)
    optimizer = "state/opt_state/"
    differing = sorted(
        (p for p in set(saved) | set(wanted) if saved.get(p) != wanted.get(p)),
        key=lambda p: (p.startswith(optimizer), p),  # The model's own arrays first.
    )
    if not differing:
        return "", ""
    if differing[0].startswith(optimizer):
        n_saved, n_wanted = (sum(p.startswith(optimizer) for p in t) for t in (saved, wanted))
        layout = ", in another layout" if n_saved == n_wanted else ""
        return "optimizer", f"{n_saved} optimizer arrays saved, {n_wanted} expected{layout}"
    shown = []
    for path in differing[:2]:
        if path not in wanted:
            shown.append(f"{path} {saved[path]} only in the checkpoint")
        elif path not in saved:
            shown.append(f"{path} {wanted[path]} not in the checkpoint")
        else:
            shown.append(f"{path} saved {saved[path]}, expected {wanted[path]}")
    more = f", {len(differing) - 2} more" if len(differing) > 2 else ""
    return "model", "; ".join(shown) + more


def _cause(e: BaseException) -> str:
    """`Type: first line of the message`, short enough for one warning line."""
    first_line = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{type(e).__name__}: {first_line}" if first_line else type(e).__name__


def _is_write_failure(e: BaseException) -> bool:
    """Whether `e` is the storage refusing a write (as opposed to a bug in what was saved)."""
    message = str(e)
    return (
        isinstance(e, OSError) or "os_error_code=" in message or message.startswith(_WRITE_STATUSES)
    )


def _os_reason(e: BaseException) -> str:
    """The OS error in `e` as `[Errno 28] No space left on device` (tensorstore's errors carry
    it as os_error_code='28'), else `e`'s first line."""
    if isinstance(e, OSError) and e.errno:
        return f"[Errno {e.errno}] {e.strerror or os.strerror(e.errno)}"
    match = re.search(r"os_error_code='?(\d+)", str(e))
    if match:
        code = int(match.group(1))
        return f"[Errno {code}] {os.strerror(code)}"
    return _cause(e)
