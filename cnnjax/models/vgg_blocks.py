"""Small VGG-style networks: blocks of two 3×3 same convolutions and a 2×2 max-pool.

`vgg_blocks` uses regular convolutions, `separable_vgg_blocks` Keras `SeparableConv2D`
(depthwise without bias, pointwise with bias); everything else is identical, so the two can be
compared side by side. Keras conventions: ReLU, glorot-uniform kernels, zero biases.

On 32×32×3 with 10 classes (the plain structure, no hidden dense layer):
- vgg_blocks: convs 1,145,408 + dense 4·4·256·10 + 10 = 40,970 -> 1,186,378 trainable.
- separable_vgg_blocks: convs 133,851 + dense 40,970 -> 174,821 trainable.

Layer names follow Keras' VGG: `block{b}_conv{i}`, then `predictions`.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.models.layers import KERAS_KERNEL_INIT, SeparableConv, max_pool_2x2


class VGGBlocks(nn.Module):
    """Blocks of `convs_per_block` 3×3 same convs (+ReLU), 2×2 max-pool; flatten; dense.

    `conv` is the convolution constructor (`nn.Conv` or `SeparableConv`), called as
    `conv(features, (3, 3), padding="SAME", kernel_init=..., dtype=..., name=...)`.
    With `num_classes=None` returns {"block1": ..., "block2": ..., "block3": ...}: each block's
    pooled output, (N, H/2^b, W/2^b, filters[b-1]).
    """

    num_classes: int | None = 10
    filters: Sequence[int] = (64, 128, 256)
    convs_per_block: int = 2
    conv: Callable[..., nn.Module] = nn.Conv
    activation: Any = nn.relu
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, C) -> logits (N, num_classes)."""
        x = x.astype(self.dtype)
        features = {}
        for b, f in enumerate(self.filters, start=1):
            for i in range(1, self.convs_per_block + 1):
                x = self.conv(
                    f,
                    (3, 3),
                    padding="SAME",
                    kernel_init=KERAS_KERNEL_INIT,
                    dtype=self.dtype,
                    name=f"block{b}_conv{i}",
                )(x)
                x = self.activation(x)
            x = max_pool_2x2(x)
            features[f"block{b}"] = x
        if self.num_classes is None:
            return features
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(
            self.num_classes, kernel_init=KERAS_KERNEL_INIT, dtype=self.dtype, name="predictions"
        )(x)


vgg_blocks = functools.partial(VGGBlocks, conv=nn.Conv)
separable_vgg_blocks = functools.partial(VGGBlocks, conv=SeparableConv)
