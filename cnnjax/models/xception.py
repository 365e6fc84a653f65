"""Xception (Chollet 2017), layer for layer as `keras.applications.Xception`.

Entry flow: block1 (3×3/2 valid conv 32, 3×3 valid conv 64, each + BN + ReLU), blocks 2-4
(two separable convs 128/256/728 + BN, 3×3/2 same max-pool, added to a strided 1×1 conv + BN
shortcut; blocks 3-4 start with a ReLU). Middle flow: blocks 5-12, three (ReLU, separable conv
728, BN) each with an identity shortcut. Exit flow: block13 (separable 728 and 1024, max-pool,
1×1 conv shortcut), block14 (separable 1536 and 2048, each + BN + ReLU), global average pool,
`predictions`. Separable convs have no bias; BatchNorm is Keras' (epsilon 1e-3, momentum 0.99).
Input at least 71×71 (Keras' minimum).

Names are Keras': `block1_conv1`, `block1_conv1_bn`, `block2_sepconv1` (a `SeparableConvBN`
holding `sepconv/depthwise`, `sepconv/pointwise` and `bn`, i.e. Keras' `block2_sepconv1` and
`block2_sepconv1_bn`), ..., `block14_sepconv2`, `predictions`. The residual convs Keras leaves
unnamed (`conv2d`, `batch_normalization`, ...) are `block{b}_residual_conv` / `_residual_bn`.

Trainable 22,855,952 and 54,528 BatchNorm statistics (total 22,910,480) with 1000 classes.

With `num_classes=None` returns {"stem": block1 (stride 2, 64 ch), "stage1": block2 (stride 4,
128), "stage2": block3 (8, 256), "stage3": end of the middle flow (16, 728), "stage4": block14
after its last ReLU (32, 2048)}; transfer learning pools "stage4".
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.models.layers import KERAS_KERNEL_INIT, SeparableConv, batch_norm, conv_no_bias


class SeparableConvBN(nn.Module):
    """Keras `SeparableConv2D(use_bias=False)` followed by `BatchNormalization`.

    x: (N, H, W, C) -> (N, H', W', features). Children: `sepconv` (depthwise + pointwise), `bn`.
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = SeparableConv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding="SAME",
            use_bias=False,
            dtype=self.dtype,
            name="sepconv",
        )(x)
        return batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype)(name="bn")(x)


class Xception(nn.Module):
    """Keras' Xception; `middle_blocks` repeats of the middle flow (8 in the paper)."""

    num_classes: int | None = 1000
    middle_blocks: int = 8
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, 3), H, W >= 71 -> logits (N, num_classes), or features (module doc)."""
        norm = batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype)
        conv = conv_no_bias(KERAS_KERNEL_INIT, self.dtype)
        sep = functools.partial(
            SeparableConvBN,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            dtype=self.dtype,
        )

        def pool(y):
            return nn.max_pool(y, (3, 3), strides=(2, 2), padding="SAME")

        def residual(y, features, block):
            y = conv(
                features, (1, 1), strides=(2, 2), padding="SAME", name=f"block{block}_residual_conv"
            )(y)
            return norm(name=f"block{block}_residual_bn")(y)

        x = x.astype(self.dtype)
        # Entry flow.
        x = conv(32, (3, 3), strides=(2, 2), padding="VALID", name="block1_conv1")(x)
        x = nn.relu(norm(name="block1_conv1_bn")(x))
        x = conv(64, (3, 3), padding="VALID", name="block1_conv2")(x)
        x = nn.relu(norm(name="block1_conv2_bn")(x))
        features = {"stem": x}

        for block, f in ((2, 128), (3, 256), (4, 728)):
            shortcut = residual(x, f, block)
            if block > 2:  # block2 follows block1's ReLU directly.
                x = nn.relu(x)
            x = sep(f, name=f"block{block}_sepconv1")(x, train=train)
            x = nn.relu(x)
            x = sep(f, name=f"block{block}_sepconv2")(x, train=train)
            x = pool(x) + shortcut
            if block < 4:
                features[f"stage{block - 1}"] = x

        # Middle flow.
        for block in range(5, 5 + self.middle_blocks):
            shortcut = x
            for i in (1, 2, 3):
                x = sep(728, name=f"block{block}_sepconv{i}")(nn.relu(x), train=train)
            x = x + shortcut
        features["stage3"] = x

        # Exit flow.
        b = 5 + self.middle_blocks
        shortcut = residual(x, 1024, b)
        x = sep(728, name=f"block{b}_sepconv1")(nn.relu(x), train=train)
        x = sep(1024, name=f"block{b}_sepconv2")(nn.relu(x), train=train)
        x = pool(x) + shortcut
        x = nn.relu(sep(1536, name=f"block{b + 1}_sepconv1")(x, train=train))
        x = nn.relu(sep(2048, name=f"block{b + 1}_sepconv2")(x, train=train))
        features["stage4"] = x
        if self.num_classes is None:
            return features
        x = x.mean(axis=(1, 2))
        return nn.Dense(
            self.num_classes, kernel_init=KERAS_KERNEL_INIT, dtype=self.dtype, name="predictions"
        )(x)


xception = Xception
