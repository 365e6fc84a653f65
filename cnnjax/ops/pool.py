"""Pooling as plain functions on arrays (no Flax), with the rank conventions of `conv2d`.

`x` is (H, W), (H, W, C) or (N, H, W, C) and the output keeps that rank. `window` and `stride`
are an int or a pair; `stride` defaults to `window` (non-overlapping windows, as in Keras).
Padding is "VALID", "SAME" (TensorFlow/Keras: ceil(n / stride) outputs, the odd padded pixel at
the end) or an int of pixels on every side, exactly as for `conv2d`. Padded pixels never take
part: max pooling ignores them and average pooling divides by the number of real pixels in the
window (Keras; PyTorch's `count_include_pad=False`), so a border average is not pulled to 0.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from cnnjax.ops.conv import (
    Padding,
    Stride,
    _batched,
    _check_padding,
    _pads,
    _tuple,
    _unbatched,
)


def _windows(
    window: Stride, stride: Stride | None, padding: Padding
) -> tuple[tuple[int, int], tuple[int, int], Padding]:
    windows = _tuple(window, 2, "window")
    strides = windows if stride is None else _tuple(stride, 2, "stride")
    return windows, strides, _check_padding(padding)


def max_pool(
    x: ArrayLike, window: Stride = 2, stride: Stride | None = None, padding: Padding = "VALID"
) -> jax.Array:
    """Maximum over each `window`, moved by `stride` (default: `window`).

    x: (H, W), (H, W, C) or (N, H, W, C). Returns (H', W'), (H', W', C) or (N, H', W', C) with
    H' = `conv_output_size(H, window, stride, padding)`. Padded pixels are never the maximum.
    """
    return _pool(jnp.asarray(x), *_windows(window, stride, padding), average=False)


def avg_pool(
    x: ArrayLike, window: Stride = 2, stride: Stride | None = None, padding: Padding = "VALID"
) -> jax.Array:
    """Mean over each `window`, moved by `stride` (default: `window`).

    x: (H, W), (H, W, C) or (N, H, W, C). Returns (H', W'), (H', W', C) or (N, H', W', C) with
    H' = `conv_output_size(H, window, stride, padding)`. Padded pixels are not counted: a
    window overlapping the padding averages only its real pixels (Keras convention).
    """
    return _pool(jnp.asarray(x), *_windows(window, stride, padding), average=True)


# One compiled program per shape instead of one per small eager op.
@functools.partial(jax.jit, static_argnums=(1, 2, 3), static_argnames="average")
def _pool(
    x: jax.Array,
    windows: tuple[int, int],
    strides: tuple[int, int],
    padding: Padding,
    *,
    average: bool,
) -> jax.Array:
    xb, no_channel, no_batch = _batched(x, 2, "x")
    pads = [
        _pads(n, k, s, padding) for n, k, s in zip(xb.shape[1:3], windows, strides, strict=True)
    ]
    dims, steps, pads = (1, *windows, 1), (1, *strides, 1), [(0, 0), *pads, (0, 0)]
    if average:
        if not jnp.issubdtype(xb.dtype, jnp.inexact):
            xb = xb.astype(jnp.float32)
        zero = jnp.array(0, xb.dtype)
        sums = lax.reduce_window(xb, zero, lax.add, dims, steps, pads)
        # Real pixels per window: the padding is excluded from the mean.
        ones = jnp.ones((1, *xb.shape[1:3], 1), xb.dtype)
        y = sums / lax.reduce_window(ones, zero, lax.add, dims, steps, pads)
    else:
        if jnp.issubdtype(xb.dtype, jnp.floating):
            lowest = -jnp.inf
        else:
            lowest = jnp.iinfo(xb.dtype).min
        # reduce_window pads with its initial value, so padded pixels can never win.
        y = lax.reduce_window(xb, jnp.array(lowest, xb.dtype), lax.max, dims, steps, pads)
    return _unbatched(y, no_channel, no_batch)


def _spatial_axes(x: jax.Array) -> tuple[int, int]:
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"x must have shape (H, W), (H, W, C) or (N, H, W, C), got {x.shape}.")
    return (1, 2) if x.ndim == 4 else (0, 1)


def global_avg_pool(x: ArrayLike) -> jax.Array:
    """Mean over the spatial axes: (N, H, W, C) -> (N, C), (H, W, C) -> (C,), (H, W) -> ()."""
    x = jnp.asarray(x)
    return jnp.mean(x, axis=_spatial_axes(x))


def global_max_pool(x: ArrayLike) -> jax.Array:
    """Max over the spatial axes: (N, H, W, C) -> (N, C), (H, W, C) -> (C,), (H, W) -> ()."""
    x = jnp.asarray(x)
    return jnp.max(x, axis=_spatial_axes(x))


def depthwise_max_pool(x: ArrayLike, pool_size: int) -> jax.Array:
    """Max over groups of `pool_size` consecutive channels (pooling across depth, not space).

    Output channel g is `max(x[..., g * pool_size : (g + 1) * pool_size])`, as TensorFlow's
    `tf.nn.max_pool` with ksize (1, 1, 1, pool_size). The spatial size is unchanged: it lets a
    network learn invariance to whatever distinguishes the pooled feature maps (e.g. rotation).

    x: (H, W, C) or (N, H, W, C) (any leading axes; channels last), with C divisible by
    `pool_size`. Returns (..., C // pool_size).
    """
    x = jnp.asarray(x)
    (pool_size,) = _tuple(pool_size, 1, "pool_size")
    if x.ndim < 1 or x.shape[-1] % pool_size:
        raise ValueError(
            f"depthwise_max_pool needs the channel count to be a multiple of pool_size="
            f"{pool_size}, got x of shape {x.shape}."
        )
    return _depthwise_max_pool(x, pool_size)


@functools.partial(jax.jit, static_argnums=1)
def _depthwise_max_pool(x: jax.Array, pool_size: int) -> jax.Array:
    return jnp.max(x.reshape(*x.shape[:-1], x.shape[-1] // pool_size, pool_size), axis=-1)
