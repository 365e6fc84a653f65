"""LeNet-5 (LeCun et al. 1998) in its modern textbook form: ReLU, max-pooling."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.models.layers import max_pool_2x2


class LeNet5(nn.Module):
    """Two 5x5 valid convolutions with 2x2 max-pooling, then dense 120, 84 and the classifier.

    On 32x32x3 input with 10 classes this has 62,958 trainable parameters (the Keras count).
    With `num_classes=None` it returns the features before the classifier, shape (N, 84).
    """

    num_classes: int | None = 10
    filters: Sequence[int] = (8, 16)
    dense: Sequence[int] = (120, 84)
    kernel_size: int = 5
    dropout_rate: float = 0.0
    activation: Any = nn.relu
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, C) -> logits (N, num_classes)."""
        x = x.astype(self.dtype)
        for i, f in enumerate(self.filters):
            x = nn.Conv(
                f,
                (self.kernel_size, self.kernel_size),
                padding="VALID",
                dtype=self.dtype,
                name=f"conv{i + 1}",
            )(x)
            x = self.activation(x)
            x = max_pool_2x2(x)
        x = x.reshape((x.shape[0], -1))
        for i, d in enumerate(self.dense):
            x = nn.Dense(d, dtype=self.dtype, name=f"fc{i + 1}")(x)
            x = self.activation(x)
            if self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        if self.num_classes is None:
            return x
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
