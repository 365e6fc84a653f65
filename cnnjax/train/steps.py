"""Pure training and evaluation steps for classifiers.

`train_step(state, batch, rng) -> (state, metrics)` and `eval_step(state, batch) -> sums` are
plain functions of arrays; the loop jits them once (with donation and shardings).
batch: {"image": float (B, H, W, C) normalized, "label": int32 (B,), "mask": float (B,) for eval}.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cnnjax.train import losses, metrics
from cnnjax.train.state import TrainState


def make_train_step(*, num_classes: int, label_smoothing: float = 0.0, freeze_pattern: str = ""):
    """Returns `train_step(state, batch, rng) -> (new_state, metric sums)`.

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
            logits, mutated = apply(state, variables, batch["image"], rng)
            per_example = losses.softmax_cross_entropy(
                logits, batch["label"], num_classes=num_classes, label_smoothing=label_smoothing
            )
            return jnp.mean(per_example), (logits, mutated, per_example)

        grads, (logits, mutated, per_example) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=mutated.get("batch_stats", state.batch_stats),
            opt_state=opt_state,
        )
        pred = jnp.argmax(logits, axis=-1)
        sums = {
            "loss_sum": jnp.sum(per_example),
            "correct": jnp.sum(pred == batch["label"]).astype(jnp.float32),
            "count": jnp.asarray(per_example.shape[0], jnp.float32),
        }
        return new_state, sums

    return train_step


def make_eval_step(*, num_classes: int):
    """Returns `eval_step(state, batch) -> metric sums` (see `cnnjax.train.metrics`).

    The evaluation loss is the plain cross-entropy (no label smoothing): the test NLL.
    """

    def eval_step(state: TrainState, batch: dict):
        logits = state.apply_fn(state.variables, batch["image"], train=False)
        per_example = losses.softmax_cross_entropy(logits, batch["label"], num_classes=num_classes)
        return metrics.classification_sums(
            logits, batch["label"], per_example, batch["mask"], num_classes
        )

    return eval_step


def zero_train_sums() -> dict:
    return {k: jnp.zeros((), jnp.float32) for k in ("loss_sum", "correct", "count")}
