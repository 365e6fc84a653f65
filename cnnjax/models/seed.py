"""The small "seed" CNNs of the curriculum, in Keras conventions (conv with bias, ReLU).

One family class, `SimpleCNN`: blocks of convolutions, each block optionally followed by a 2×2
max-pool, then flatten and dense layers. The registered networks are partials of it:

- `cifar_conv64_dense32`: conv 64@3×3 valid -> flatten -> dense 32 -> dense 10 (32×32×3)
- `cifar_conv64_pool_dense32`: the same with a 2×2 max-pool after the conv
- `cifar_2conv_pool_dense128`: 2 × (conv 64@3×3 same -> 2×2 pool) -> dense 128 -> dense 10
- `mnist_conv64`: conv 64@3×3 valid -> flatten -> dense 10 (28×28×1)
- `fashion_mnist_cnn`: conv 64@7×7 -> pool -> 2 × conv 128 -> pool -> 2 × conv 256 -> pool ->
  dense 128 -> dropout 0.5 -> dense 64 -> dropout 0.5 -> dense 10 (same padding, 28×28×1)

Layer names: `conv1`, `conv2`, ... (numbered across blocks), `fc1`, `fc2`, ..., `head`.
Initializers are Keras' defaults (glorot-uniform kernels, zero biases).
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.models.layers import KERAS_KERNEL_INIT, max_pool_2x2


def conv_blocks(m, x):
    """The conv blocks of a SimpleCNN-shaped module `m` (its blocks, kernel sizes, padding,
    pool, activation, dtype), named `conv1`, `conv2`, ... in the calling module's scope: shared
    by `SimpleCNN` and its convolutionalized trunk so both read the same parameters."""
    n = 0
    for block in m.blocks:
        for f in block:
            k = m.kernel_size if n > 0 or m.first_kernel_size is None else m.first_kernel_size
            n += 1
            conv = nn.Conv(
                f,
                (k, k),
                padding=m.padding,
                kernel_init=KERAS_KERNEL_INIT,
                dtype=m.dtype,
                name=f"conv{n}",
            )
            x = m.activation(conv(x))
        if m.pool:
            x = max_pool_2x2(x)
    return x


class SimpleCNN(nn.Module):
    """Conv blocks (+ optional 2×2 max-pool after each), flatten, dense layers, classifier.

    `blocks[i]` lists the filters of block i's convolutions. The first convolution uses
    `first_kernel_size`, all others `kernel_size`. With `num_classes=None` returns the features
    before the classifier, shape (N, dense[-1]) (or the flattened conv features if `dense` is
    empty).
    """

    num_classes: int | None = 10
    blocks: Sequence[Sequence[int]] = ((64,),)
    kernel_size: int = 3
    first_kernel_size: int | None = None
    padding: str = "VALID"
    pool: bool = False
    dense: Sequence[int] = (32,)
    dropout_rate: float = 0.0
    activation: Any = nn.relu
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, C) -> logits (N, num_classes)."""
        x = conv_blocks(self, x.astype(self.dtype))
        x = x.reshape((x.shape[0], -1))
        for i, d in enumerate(self.dense):
            x = nn.Dense(d, kernel_init=KERAS_KERNEL_INIT, dtype=self.dtype, name=f"fc{i + 1}")(x)
            x = self.activation(x)
            if self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        if self.num_classes is None:
            return x
        return nn.Dense(
            self.num_classes, kernel_init=KERAS_KERNEL_INIT, dtype=self.dtype, name="head"
        )(x)


cifar_conv64_dense32 = functools.partial(SimpleCNN, blocks=((64,),), pool=False, dense=(32,))
cifar_conv64_pool_dense32 = functools.partial(SimpleCNN, blocks=((64,),), pool=True, dense=(32,))
cifar_2conv_pool_dense128 = functools.partial(
    SimpleCNN, blocks=((64,), (64,)), padding="SAME", pool=True, dense=(128,)
)
mnist_conv64 = functools.partial(SimpleCNN, blocks=((64,),), pool=False, dense=())
fashion_mnist_cnn = functools.partial(
    SimpleCNN,
    blocks=((64,), (128, 128), (256, 256)),
    first_kernel_size=7,
    padding="SAME",
    pool=True,
    dense=(128, 64),
    dropout_rate=0.5,
)
