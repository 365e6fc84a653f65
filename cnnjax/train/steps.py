"""Pure training and evaluation steps for any task (`cnnjax.tasks`).

`train_step(state, batch, rng) -> (state, metrics)` and `eval_step(state, batch) -> sums` are
plain functions of arrays; the loop jits them once (with donation and shardings).
batch: {"image": float (B, H, W, C) normalized, the task's targets ("label": int32 (B,), ...),
"weight": float (B,) for eval (0 marks padding)}. What is learned and measured is the task's
(`loss`, `eval_sums`); these functions know nothing about labels.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cnnjax.errors import UserError
from cnnjax.train.state import TrainState


def make_train_step(task, *, freeze_pattern: str = ""):
    """Returns `train_step(state, batch, rng) -> (new_state, metric sums)`.

    task: a `cnnjax.tasks.Task` whose `loss(outputs, batch)` is minimized.
    freeze_pattern: BatchNorm layers whose parameters match it run on their running statistics
    (`cnnjax.train.transfer.frozen_batchnorm`); the optimizer freezes the parameters themselves.
    """
    interceptor = None
    if freeze_pattern:
        from cnnjax.train.transfer import frozen_batchnorm

        interceptor = frozen_batchnorm(freeze_pattern)

    def apply(state, variables, x, rng):
        kwargs = dict(train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
        if interceptor is None:
            return state.apply_fn(variables, x, **kwargs)
        with nn.intercept_methods(interceptor):
            return state.apply_fn(variables, x, **kwargs)

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        def loss_fn(params):
            variables = {"params": params}
            if state.batch_stats:
                variables["batch_stats"] = state.batch_stats
            outputs, mutated = apply(state, variables, batch["image"], rng)
            loss, sums = task.loss(outputs, batch)
            return loss, (mutated, sums)

        grads, (mutated, sums) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=mutated.get("batch_stats", state.batch_stats),
            opt_state=opt_state,
        )
        return new_state, sums

    return train_step


def flip_averaged_logits(apply, images):
    """Flip test-time augmentation: the log of the class probabilities averaged over `images`
    and their mirror images (a valid logits array: its softmax is that average)."""
    both = apply(jnp.concatenate([images, images[:, :, ::-1]], axis=0))
    probs = jax.nn.softmax(both.astype(jnp.float32), axis=-1)
    n = images.shape[0]
    return jnp.log((probs[:n] + probs[n:]) / 2)


def make_eval_step(task, *, flip_tta: bool = False):
    """Returns `eval_step(state, batch) -> metric sums` of `task.eval_sums` (padding rows have
    batch["weight"] 0; for classification the loss is the plain cross-entropy, the test NLL).

    flip_tta: classify each image and its mirror image in one batch and average the class
    probabilities (`augment.test_flip`; classification only).
    """
    if flip_tta and not task.outputs_class_scores:
        raise UserError(
            f"augment.test_flip averages class probabilities, which task={task.name!r} does "
            "not output; leave it off for this task."
        )

    def eval_step(state: TrainState, batch: dict):
        if flip_tta:
            apply = lambda x: state.apply_fn(state.variables, x, train=False)  # noqa: E731
            outputs = flip_averaged_logits(apply, batch["image"])
        else:
            outputs = state.apply_fn(state.variables, batch["image"], train=False)
        return task.eval_sums(outputs, batch)

    return eval_step
