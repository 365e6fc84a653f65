"""MobileNet v1 (Howard et al. 2017), layer for layer as `keras.applications.MobileNet`.

`conv1` 3×3/2 same conv + BN + ReLU6, then 13 depthwise-separable blocks: 3×3 depthwise conv
(`conv_dw_{i}`) + BN + ReLU6, 1×1 pointwise conv (`conv_pw_{i}`) + BN + ReLU6. A stride-2
depthwise conv is preceded by a ((0, 1), (0, 1)) zero padding and is VALID (Keras' `conv_pad_{i}`);
stride-1 ones are SAME. No conv biases; BatchNorm is Keras' (epsilon 1e-3, momentum 0.99).
Classifier as Keras: global average pool -> dropout (1e-3) -> 1×1 conv `conv_preds` with bias ->
reshape; logits are returned (Keras applies the softmax afterwards).

With alpha=1, depth_multiplier=1 and 1000 classes: 4,231,976 trainable, 21,888 BatchNorm
statistics (total 4,253,864), as Keras.

With `num_classes=None` returns {"stem": conv_pw_1 output (stride 2, 64 ch), "stage1": block 3
(stride 4, 128), "stage2": block 5 (8, 256), "stage3": block 11 (16, 512), "stage4": block 13
(32, 1024)}; channels scale with alpha.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.models.layers import KERAS_KERNEL_INIT, batch_norm, conv_no_bias

# (pointwise filters, stride) of the 13 depthwise-separable blocks.
BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
# Block index -> feature key (the last block at each stride).
FEATURE_KEYS = {1: "stem", 3: "stage1", 5: "stage2", 11: "stage3", 13: "stage4"}


def relu6(x):
    return jnp.minimum(nn.relu(x), 6.0)


class MobileNetV1(nn.Module):
    """Keras' MobileNet: width multiplier `alpha`, `depth_multiplier` for the depthwise convs."""

    num_classes: int | None = 1000
    alpha: float = 1.0
    depth_multiplier: int = 1
    dropout_rate: float = 1e-3
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, 3), H, W >= 32 -> logits (N, num_classes), or features (module doc)."""
        norm = batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype)
        conv = conv_no_bias(KERAS_KERNEL_INIT, self.dtype)
        x = x.astype(self.dtype)
        x = conv(int(32 * self.alpha), (3, 3), strides=(2, 2), padding="SAME", name="conv1")(x)
        x = relu6(norm(name="conv1_bn")(x))
        features = {}
        for i, (filters, stride) in enumerate(BLOCKS, start=1):
            if stride == 1:
                padding = "SAME"
            else:
                padding = "VALID"
                x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
            x = conv(
                x.shape[-1] * self.depth_multiplier,
                (3, 3),
                strides=(stride, stride),
                padding=padding,
                feature_group_count=x.shape[-1],
                name=f"conv_dw_{i}",
            )(x)
            x = relu6(norm(name=f"conv_dw_{i}_bn")(x))
            x = conv(int(filters * self.alpha), (1, 1), padding="VALID", name=f"conv_pw_{i}")(x)
            x = relu6(norm(name=f"conv_pw_{i}_bn")(x))
            if i in FEATURE_KEYS:
                features[FEATURE_KEYS[i]] = x
        if self.num_classes is None:
            return features
        x = x.mean(axis=(1, 2), keepdims=True)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Conv(
            self.num_classes,
            (1, 1),
            kernel_init=KERAS_KERNEL_INIT,
            dtype=self.dtype,
            name="conv_preds",
        )(x)
        return x.reshape((x.shape[0], self.num_classes))


mobilenet_v1 = MobileNetV1
