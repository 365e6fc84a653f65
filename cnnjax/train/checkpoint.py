"""Checkpoints with orbax: asynchronous saves, last N plus the best, corrupt-checkpoint fallback.

What is saved is one pytree `{"state": TrainState, "train_sums": ...}`; restoring takes an
abstract target (`jax.eval_shape` output with shardings) so arrays land sharded on the current
mesh, whatever device count wrote them.
"""

import os

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies


class Checkpoints:
    """Keeps the last `keep` checkpoints and the best one by eval `best_metric` (higher is better).

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
            best_mode="max",
            preservation_policy=policies.AnyPreservationPolicy(
                [
                    policies.LatestN(n=max(1, keep)),
                    policies.BestN(
                        get_metric_fn=self._metric,
                        reverse=False,
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

    def _metric(self, metrics) -> float:
        return float(metrics[self.best_metric])

    def save(self, step: int, tree, metrics: dict | None = None) -> None:
        """Starts an asynchronous save of `tree` at `step`; `metrics` rank it for "best"."""
        if step in self.manager.all_steps():
            return  # Already saved (e.g. an eval step that is also a checkpoint step).
        self.manager.save(step, args=ocp.args.StandardSave(tree), metrics=metrics, force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def restore(self, step: int, target):
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

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
        return None, None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree, shardings):
    """An abstract restore target: shapes/dtypes of `tree` with `shardings` attached."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
