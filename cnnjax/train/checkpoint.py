"""Checkpoints with orbax: background saves, last N plus the best, corrupt-checkpoint fallback.

What is saved is one pytree `{"state": TrainState, "train_sums": ...}`; restoring takes an
abstract target (`jax.eval_shape` output with shardings) so arrays land sharded on the current
mesh, whatever device count wrote them.

Saving costs the training loop one on-device copy of the tree. Even orbax's asynchronous save
blocks its caller while it copies every array to the host and prepares the metadata (0.1-0.3 s
for ResNet-18's 22M numbers, once per epoch): that part runs on one worker thread here, on a
copy the next (donating) step cannot delete, while the devices go on training. With several
processes the save stays on the calling thread: orbax's barriers are device collectives there,
and collectives must start in the same order on every process.
"""

import concurrent.futures
import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from cnnjax.errors import UserError


class CheckpointMismatch(UserError):
    """A readable checkpoint whose arrays do not fit the model the config builds."""


class Checkpoints:
    """Keeps the last `keep` checkpoints and the best one by eval `best_metric` (higher is
    better, except for losses and errors: `lower_is_better`).

    Orbax's `max_to_keep` with `best_fn` alone can delete the newest checkpoint when it is not
    among the best (orbax#526), so retention is an explicit union: LatestN | BestN.
    """

    def __init__(
        self, directory: str, *, keep: int, best_metric: str = "accuracy", read_only: bool = False
    ):
        self.directory = os.path.abspath(directory)
        self.best_metric = best_metric
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=True,
            best_fn=self._metric,
            best_mode="min" if lower_is_better(best_metric) else "max",
            preservation_policy=policies.AnyPreservationPolicy(
                [
                    policies.LatestN(n=max(1, keep)),
                    policies.BestN(
                        get_metric_fn=self._metric,
                        reverse=lower_is_better(best_metric),
                        n=1,
                        keep_checkpoints_without_metrics=False,
                    ),
                ]
            ),
            cleanup_tmp_directories=True,
            create=not read_only,
            read_only=read_only,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        # One worker: saves start in the order they were asked for, never two at once.
        self._background = jax.process_count() == 1
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ckpt")
        self._pending: list[concurrent.futures.Future] = []
        # Steps saved or being saved. Read here, not from the manager, while a save may run.
        self._asked: set[int] = set(self.manager.all_steps())

    def _metric(self, metrics) -> float:
        return float(metrics[self.best_metric])

    def save(self, step: int, tree, metrics: dict | None = None) -> None:
        """Starts saving `tree` at `step` in the background; `metrics` rank it for "best".

        Returns once the arrays are copied on their devices: the caller may then donate or
        overwrite `tree`. `wait` (or `close`) makes the save durable and raises its error.
        """
        self._raise_failed()
        if step in self._asked:
            return  # Already saved (e.g. an eval step that is also a checkpoint step).
        self._asked.add(step)
        if not self._background:
            self._save_now(step, tree, metrics)
            return
        snapshot = _device_copy(tree)
        self._pending.append(self._worker.submit(self._save_now, step, snapshot, metrics))

    def _save_now(self, step: int, tree, metrics) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(tree), metrics=metrics, force=True)

    def _raise_failed(self) -> None:
        """Re-raises the error of a finished background save, if any."""
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for f in done:
            f.result()

    def wait(self) -> None:
        """Blocks until every save asked for is on disk; raises the first one's error."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def restore(self, step: int, target):
        """The tree saved at `step`, restored into `target`'s shapes and shardings.

        Raises `CheckpointMismatch` (a `UserError`) when the checkpoint is readable but holds
        other shapes than `target`: a different model or config, not a corrupt file.
        """
        difference = self._difference(step, target)  # Before orbax starts reading arrays.
        if difference:
            raise CheckpointMismatch(
                f"The checkpoint at step {step} in {self.directory} holds a different "
                f"model than this config builds ({difference}). Use the settings the run "
                "was trained with (its config.json lists them), or train in a new --workdir."
            )
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

    def _difference(self, step: int, target) -> str:
        """How the arrays saved at `step` differ from `target` ("" if they match or the
        checkpoint's metadata cannot be read, i.e. it is corrupt rather than different)."""
        try:
            path = os.path.join(self.directory, str(step), "default")
            saved = ocp.StandardCheckpointer().metadata(path).item_metadata.tree
        except Exception:  # noqa: BLE001 - unreadable metadata: corrupt, not different.
            return ""
        saved_shapes = sorted(
            tuple(x.shape) for x in jax.tree.leaves(saved) if getattr(x, "shape", None) is not None
        )
        wanted_shapes = sorted(tuple(x.shape) for x in jax.tree.leaves(target))
        if saved_shapes == wanted_shapes:
            return ""
        if len(saved_shapes) != len(wanted_shapes):
            return f"{len(saved_shapes)} arrays saved, {len(wanted_shapes)} expected"
        only_saved = sorted(set(saved_shapes) - set(wanted_shapes))
        only_wanted = sorted(set(wanted_shapes) - set(saved_shapes))
        return (
            f"saved shapes such as {only_saved[:2] or saved_shapes[:2]}, expected "
            f"{only_wanted[:2] or wanted_shapes[:2]}"
        )

    def restore_latest(self, target, *, delete_corrupt: bool = True):
        """Restores the newest readable checkpoint: (step, tree), or (None, None) if none.

        target: the abstract tree, or a function step -> abstract tree (when the tree's
        structure depends on the step, e.g. the optimizer state of a training phase).

        A checkpoint that fails to restore (truncated, corrupt) gets a warning and, when
        `delete_corrupt`, is deleted so training can overwrite its step; the previous one is
        tried next.
        """
        target_for = target if callable(target) else (lambda _: target)
        for step in reversed(self.steps()):
            try:
                return step, self.restore(step, target_for(step))
            except CheckpointMismatch:
                raise  # Readable, but not this config's: deleting it would lose the run.
            except Exception as e:  # noqa: BLE001 - any failure to read means "not usable".
                first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                msg = (
                    f"checkpoint at step {step} in {self.directory} is unreadable "
                    f"({type(e).__name__}: {first_line}); falling back to the previous one"
                )
                logging.warning(msg)
                print(f"warning: {msg}", flush=True)
                if delete_corrupt:
                    self.manager.delete(step)
                    self._asked.discard(step)
        return None, None

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
