"""The ImageNet classics before ResNet, as torchvision builds them: AlexNet and GoogLeNet.

AlexNet (Krizhevsky et al. 2012, torchvision's single-GPU variant, 61,100,840 params): conv 64
11×11/4 -> pool -> conv 192 5×5 -> pool -> conv 384, 256, 256 3×3 -> pool (all pools 3×3/2),
adaptive average pool to 6×6, dropout -> fc 4096 -> dropout -> fc 4096 -> classes. `lrn=True`
adds the paper's local response normalization after the first two ReLUs (before their pools);
it has no parameters. Names: `conv1..5`, `fc1`, `fc2`, `head`.

GoogLeNet / Inception v1 (Szegedy et al. 2015, torchvision without the auxiliary heads,
6,624,904 params): every convolution is torchvision's `BasicConv2d` (conv without bias, BN
epsilon 1e-3, ReLU); max-pools round up (`ceil_mode=True`); the "5×5" branch uses a 3×3 kernel,
torchvision's known deviation kept for its weights (`branch3_kernel=5` gives the paper's).
Names: `conv1..3`, `inception3a` ... `inception5b` (children `branch1`, `branch2_reduce`,
`branch2`, `branch3_reduce`, `branch3`, `branch4`, each with `conv` and `bn`), `head`.

With `num_classes=None` both return a dict of features keyed by stride like the other
backbones ("stem" stride 2, "stage1" 4, "stage2" 8, "stage3" 16, "stage4" 32):
- AlexNet: "stage1" conv1 (64 ch), "stage2" conv2 (192), "stage3" conv5 (256), "stage4" the
  last max-pool (256); all after their ReLU (and LRN). No "stem": conv1 already has stride 4.
- GoogLeNet: "stem" conv1 (64), "stage1" conv3 (192), "stage2" inception3b (480), "stage3"
  inception4e (832), "stage4" inception5b (1024).
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.models.layers import adaptive_avg_pool, batch_norm, local_response_norm, max_pool_ceil

# torchvision initializes GoogLeNet's convs and linears with N(0, 0.01) truncated at ±2, which is
# ±200 standard deviations: a plain normal.
GOOGLENET_INIT = nn.initializers.normal(0.01)


class AlexNet(nn.Module):
    """torchvision's AlexNet; `lrn=True` adds the paper's local response normalization."""

    num_classes: int | None = 1000
    lrn: bool = False
    fc_units: int = 4096
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, 3), H, W >= 63 -> logits (N, num_classes), or features (module doc)."""
        conv = functools.partial(nn.Conv, dtype=self.dtype)

        def pool(y):
            return nn.max_pool(y, (3, 3), strides=(2, 2))

        x = x.astype(self.dtype)
        features = {}
        x = nn.relu(conv(64, (11, 11), strides=(4, 4), padding=((2, 2), (2, 2)), name="conv1")(x))
        if self.lrn:
            x = local_response_norm(x)
        features["stage1"] = x
        x = nn.relu(conv(192, (5, 5), padding=((2, 2), (2, 2)), name="conv2")(pool(x)))
        if self.lrn:
            x = local_response_norm(x)
        features["stage2"] = x
        x = pool(x)
        for i, f in ((3, 384), (4, 256), (5, 256)):
            x = nn.relu(conv(f, (3, 3), padding=((1, 1), (1, 1)), name=f"conv{i}")(x))
        features["stage3"] = x
        x = pool(x)
        features["stage4"] = x
        if self.num_classes is None:
            return features
        x = adaptive_avg_pool(x, (6, 6)).reshape((x.shape[0], -1))
        for name in ("fc1", "fc2"):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = nn.relu(nn.Dense(self.fc_units, dtype=self.dtype, name=name)(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)


class BasicConv(nn.Module):
    """torchvision's `BasicConv2d`: conv (no bias) -> BatchNorm (epsilon 1e-3) -> ReLU."""

    features: int
    kernel_size: int
    strides: int = 1
    padding: int = 0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        p = self.padding
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=(self.strides, self.strides),
            padding=((p, p), (p, p)),
            use_bias=False,
            kernel_init=GOOGLENET_INIT,
            dtype=self.dtype,
            name="conv",
        )(x)
        x = batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype)(name="bn")(x)
        return nn.relu(x)


class Inception(nn.Module):
    """Four parallel branches concatenated along channels: 1×1 | 1×1->3×3 | 1×1->k×k | pool->1×1."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    branch3_kernel: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        conv = functools.partial(BasicConv, dtype=self.dtype)
        b1 = conv(self.ch1x1, 1, name="branch1")(x, train=train)
        b2 = conv(self.ch3x3red, 1, name="branch2_reduce")(x, train=train)
        b2 = conv(self.ch3x3, 3, padding=1, name="branch2")(b2, train=train)
        b3 = conv(self.ch5x5red, 1, name="branch3_reduce")(x, train=train)
        k = self.branch3_kernel
        b3 = conv(self.ch5x5, k, padding=k // 2, name="branch3")(b3, train=train)
        b4 = max_pool_ceil(x, 3, 1, padding=1)
        b4 = conv(self.pool_proj, 1, name="branch4")(b4, train=train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


# name -> (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), as in the paper's Table 1.
INCEPTION_CONFIG = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNet(nn.Module):
    """torchvision's GoogLeNet without auxiliary classifiers."""

    num_classes: int | None = 1000
    dropout_rate: float = 0.2
    branch3_kernel: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, 3), H, W >= 32 -> logits (N, num_classes), or features (module doc)."""
        conv = functools.partial(BasicConv, dtype=self.dtype)
        inception = functools.partial(
            Inception, branch3_kernel=self.branch3_kernel, dtype=self.dtype
        )
        x = x.astype(self.dtype)
        x = conv(64, 7, strides=2, padding=3, name="conv1")(x, train=train)
        features = {"stem": x}
        x = max_pool_ceil(x, 3, 2)
        x = conv(64, 1, name="conv2")(x, train=train)
        x = conv(192, 3, padding=1, name="conv3")(x, train=train)
        features["stage1"] = x
        x = max_pool_ceil(x, 3, 2)
        for name in ("inception3a", "inception3b"):
            x = inception(*INCEPTION_CONFIG[name], name=name)(x, train=train)
        features["stage2"] = x
        x = max_pool_ceil(x, 3, 2)
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            x = inception(*INCEPTION_CONFIG[name], name=name)(x, train=train)
        features["stage3"] = x
        x = max_pool_ceil(x, 2, 2)
        for name in ("inception5a", "inception5b"):
            x = inception(*INCEPTION_CONFIG[name], name=name)(x, train=train)
        features["stage4"] = x
        if self.num_classes is None:
            return features
        x = x.mean(axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(
            self.num_classes, kernel_init=GOOGLENET_INIT, dtype=self.dtype, name="head"
        )(x)


alexnet = AlexNet
googlenet = GoogLeNet
