"""Class probabilities of a trained classifier over many images: one jitted function, run in
fixed-size batches (the last one padded) so that one compile serves any number of images.

Used by `--mode=predict` (top-k per image file) and by the classification pictures (confusion
matrix, most confident mistakes).
"""

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.data import pipeline

BATCH_SIZE = 64  # Images per forward pass.


def softmax_fn(model, *, top_k: int | None = None, transform=None):
    """A jitted (variables, inputs) -> softmax probabilities (N, classes) in float32, or with
    `top_k` the (indices (N, k), probs (N, k)) of the k most probable classes, best first.
    transform: applied to the inputs first (e.g. normalization of uint8 images)."""

    def fn(variables, x):
        if transform is not None:
            x = transform(x)
        logits = model.apply(variables, x, train=False)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        if top_k is None:
            return probs
        probs, indices = jax.lax.top_k(probs, min(top_k, probs.shape[-1]))
        return indices, probs

    return jax.jit(fn)


def in_batches(fn, variables, inputs, batch_size: int = BATCH_SIZE):
    """`fn(variables, batch)` over `inputs` in batches of `batch_size` (the last one padded with
    zeros and its padding dropped): the outputs, any pytree of (N, ...) arrays, concatenated."""
    n = len(inputs)
    batch = max(1, min(n, batch_size))
    outs = []
    for start in range(0, n, batch):
        chunk = inputs[start : start + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        outs.append(
            jax.tree.map(lambda a, keep=batch - pad: np.asarray(a)[:keep], fn(variables, chunk))
        )
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outs)


def class_probabilities(model, variables, images_uint8, mean, std, *, batch_size: int = 256):
    """Softmax probabilities float32 (N, classes) of uint8 (N, H, W, C) images normalized as the
    dataset was for training: (x / 255 - mean) / std."""
    fn = softmax_fn(model, transform=lambda x: pipeline.normalize(x, mean, std))
    return in_batches(fn, variables, np.asarray(images_uint8), batch_size).astype(np.float32)
