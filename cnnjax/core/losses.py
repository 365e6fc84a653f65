"""Losses, computed in float32 whatever the compute dtype."""

import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(logits, labels, *, num_classes: int, label_smoothing: float = 0.0):
    """Per-example cross-entropy with optional label smoothing.

    logits: (N, num_classes) any float dtype; labels: int (N,). Returns float32 (N,).
    """
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing > 0:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
