"""Helpers for the picture tests: small models with stand-in weights, PNG checks.

A plain module (not a conftest.py: several conftest modules would shadow each other's
`from conftest import ...`), imported by the tests next to it.

Weights come from NumPy (`stand_in_variables`), not `model.init`: drawing them with JAX
compiles one random-number kernel per parameter, seconds per model on a 2-core CPU.
"""

import functools
import math

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np

from cnnjax.models import get_model


def stand_in_variables(model, input_shape, seed=0):
    """The model's variables with the right shapes: kernels N(0, 1 / fan_in) from NumPy,
    biases and means N(0, 0.05), BatchNorm scales and variances 1."""
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = getattr(path[-1], "key", "")
        if name in ("scale", "var"):
            return jnp.ones(leaf.shape, leaf.dtype)
        fan_in = math.prod(leaf.shape[:-1]) if len(leaf.shape) > 1 else 1
        scale = 1.0 / math.sqrt(fan_in) if len(leaf.shape) > 1 else 0.05
        return jnp.asarray(rng.normal(0.0, scale, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


@functools.cache
def lenet(channels=1):
    """(model, variables) of lenet5 with 10 classes on 32x32 input with `channels` channels."""
    model = get_model("lenet5", num_classes=10)
    return model, stand_in_variables(model, (1, 32, 32, channels), seed=channels)


def check_png(path, min_bytes=5_000, min_width=300):
    """The PNG at `path` exists, is not tiny, and reads back as an image."""
    assert path.exists(), path
    assert path.stat().st_size > min_bytes
    assert matplotlib.image.imread(path).shape[1] >= min_width


def digit_images(n=4, channels=1):
    """n embedded 8x8 digits upsampled to 32x32 (uint8 (n, 32, 32, channels)) and labels."""
    from cnnjax.data import digits

    data = digits.load()
    images = np.kron(data["test_images"][:n], np.ones((1, 4, 4, 1), np.uint8))
    return np.repeat(images, channels, axis=-1), data["test_labels"][:n]
