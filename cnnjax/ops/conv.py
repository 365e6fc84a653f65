"""Convolutions as plain functions on arrays (no Flax), NHWC activations and HWIO kernels.

Every function here computes a cross-correlation, like every deep-learning framework: the
kernel is slid over the input without being flipped,
`y[i, j] = sum_{a, b} x[s*i + a, s*j + b] * k[a, b]`.

Rank conventions (the output keeps the input's):

- 2-D: `x` as (H, W) -> (H', W'), one channel in and one filter out;
- 3-D: `x` as (H, W, C) -> (H', W', C'), one image;
- 4-D: `x` as (N, H, W, C) -> (N, H', W', C'), a batch.

A kernel is (kh, kw) (one channel in, one filter out) or (kh, kw, Cin, Cout). `conv1d` is the
same with one spatial axis.

Padding is "VALID" (none), "SAME" (any case) or an int `p` (`p` zeros on every side). "SAME"
follows TensorFlow/Keras: the output has ceil(n / stride) positions and the zeros needed for
that are split evenly, the odd one going at the end (bottom/right). `conv_output_size` gives
the resulting sizes.
"""

import functools
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

Padding = str | int
Stride = int | Sequence[int]

_DIMENSION_NUMBERS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def _is_int(value: object, minimum: int) -> bool:
    # numpy ints count; bool does not (`padding=True` is a mistake, not one pixel of padding).
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _check_padding(padding: Padding) -> Padding:
    if isinstance(padding, str) and padding.upper() in ("VALID", "SAME"):
        return padding.upper()
    if _is_int(padding, 0):
        return int(padding)
    raise ValueError(
        f'padding must be "VALID", "SAME" or a non-negative int of zeros per side, got {padding!r}.'
    )


def _tuple(value: Stride, nd: int, name: str) -> tuple[int, ...]:
    """`value` (an int or `nd` ints, all >= 1) as a tuple of `nd` Python ints."""
    values = tuple(value) if isinstance(value, Sequence) else (value,) * nd
    if len(values) != nd or not all(_is_int(v, 1) for v in values):
        expected = "a positive int" + ("" if nd == 1 else f" or {nd} positive ints")
        raise ValueError(f"{name} must be {expected}, got {value!r}.")
    return tuple(int(v) for v in values)


def _pads(n: int, k: int, stride: int, padding: Padding, dilation: int = 1) -> tuple[int, int]:
    """Zeros added (before, after) along one axis of size `n` for a window of size `k`."""
    span = (k - 1) * dilation + 1
    if padding == "VALID":
        lo = hi = 0
    elif padding == "SAME":
        out = -(-n // stride)
        total = max((out - 1) * stride + span - n, 0)
        lo, hi = total // 2, total - total // 2
    else:
        lo = hi = padding
    if n + lo + hi < span:
        raise ValueError(
            f"window of size {span} does not fit in an input of size {n} "
            f"padded to {n + lo + hi} (padding={padding!r})."
        )
    return lo, hi


def conv_output_size(
    n: int, k: int, stride: int = 1, padding: Padding = "VALID", dilation: int = 1
) -> int:
    """Number of output positions along one axis of a convolution or pooling.

    `n`: input size; `k`: kernel (window) size; `dilation`: gap between kernel taps, so the
    kernel spans (k - 1) * dilation + 1 inputs. VALID -> floor((n - span) / stride) + 1;
    SAME -> ceil(n / stride); int p -> floor((n + 2p - span) / stride) + 1.

    >>> conv_output_size(32, 5), conv_output_size(32, 3, 2, "SAME"), conv_output_size(32, 3, 1, 1)
    (28, 16, 32)
    """
    (n,), (k,), (stride,), (dilation,) = (
        _tuple(value, 1, name)
        for name, value in (("n", n), ("k", k), ("stride", stride), ("dilation", dilation))
    )
    padding = _check_padding(padding)
    lo, hi = _pads(n, k, stride, padding, dilation)
    return (n + lo + hi - (k - 1) * dilation - 1) // stride + 1


def _batched(x: ArrayLike, nd: int, name: str) -> tuple[jax.Array, bool, bool]:
    """`x` as (N, *spatial, C), plus whether the channel and batch axes were added."""
    x = jnp.asarray(x)
    if x.ndim == nd:
        return x[None, ..., None], True, True
    if x.ndim == nd + 1:
        return x[None], False, True
    if x.ndim == nd + 2:
        return x, False, False
    shapes = {1: "(L,), (L, C) or (N, L, C)", 2: "(H, W), (H, W, C) or (N, H, W, C)"}[nd]
    raise ValueError(f"{name} must have shape {shapes}, got shape {x.shape}.")


def _unbatched(y: jax.Array, no_channel: bool, no_batch: bool) -> jax.Array:
    if no_channel:
        y = y[..., 0]
    return y[0] if no_batch else y


def _kernel(kernel: ArrayLike, nd: int, name: str = "kernel") -> jax.Array:
    """`kernel` as (*window, Cin, Cout)."""
    kernel = jnp.asarray(kernel)
    if kernel.ndim == nd:
        return kernel[..., None, None]
    if kernel.ndim == nd + 2:
        return kernel
    shapes = {1: "(k,) or (k, Cin, Cout)", 2: "(kh, kw) or (kh, kw, Cin, Cout)"}[nd]
    raise ValueError(f"{name} must have shape {shapes}, got shape {kernel.shape}.")


def _float_dtype(*arrays: jax.Array) -> jnp.dtype:
    # Integer images (e.g. 0..255 pixels) are convolved in float32 rather than rejected.
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.dtype(jnp.float32)


def _check_channels(
    x: jax.Array, kernel: jax.Array, no_channel: bool, in_axis: int, out_axis: int
) -> None:
    if x.shape[-1] != kernel.shape[in_axis]:
        raise ValueError(
            f"x has {x.shape[-1]} channels but the kernel of shape {kernel.shape} "
            f"expects {kernel.shape[in_axis]}."
        )
    if no_channel and kernel.shape[out_axis] != 1:
        raise ValueError(
            f"a kernel with {kernel.shape[out_axis]} filters gives several output channels; "
            "pass x with an explicit channel axis, e.g. (H, W, 1)."
        )


def _add_bias(y: jax.Array, bias: ArrayLike | None) -> jax.Array:
    if bias is None:
        return y
    bias = jnp.asarray(bias)
    if bias.shape not in ((), (y.shape[-1],)):
        raise ValueError(f"bias must be a scalar or have shape ({y.shape[-1]},), got {bias.shape}.")
    return y + bias.astype(y.dtype)


def _arrays(*values: ArrayLike | None) -> list[jax.Array | None]:
    # Lists become arrays here: under jit a list would be a pytree of scalars.
    return [None if v is None else jnp.asarray(v) for v in values]


def _conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, ...],
    padding: Padding,
    feature_group_count: int = 1,
) -> jax.Array:
    """Cross-correlation of batched `x` (N, *spatial, C) with `kernel` (*window, Cin, Cout)."""
    nd = x.ndim - 2
    pads = [
        _pads(n, k, s, padding)
        for n, k, s in zip(x.shape[1:-1], kernel.shape[:nd], strides, strict=True)
    ]
    dtype = _float_dtype(x, kernel)
    return lax.conv_general_dilated(
        x.astype(dtype),
        kernel.astype(dtype),
        window_strides=strides,
        padding=pads,
        dimension_numbers=_DIMENSION_NUMBERS[nd],
        feature_group_count=feature_group_count,
    )


def conv1d(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    stride: int = 1,
    padding: Padding = "VALID",
) -> jax.Array:
    """1-D cross-correlation: `y[i, o] = sum_{a, c} x[stride*i + a, c] * kernel[a, c, o] + bias[o]`.

    x: (L,), (L, C) or (N, L, C); kernel: (k,) or (k, C, Cout); bias: scalar or (Cout,).
    Returns (L',), (L', Cout) or (N, L', Cout), L' = `conv_output_size(L, k, stride, padding)`.
    """
    strides = _tuple(stride, 1, "stride")
    return _conv_layer(*_arrays(x, kernel, bias), strides=strides, padding=_check_padding(padding))


def conv2d(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    stride: Stride = 1,
    padding: Padding = "VALID",
) -> jax.Array:
    """2-D cross-correlation, `y[i, j, o] = sum_{a,b,c} x[s*i+a, s*j+b, c] * kernel[a, b, c, o]`.

    x: (H, W), (H, W, C) or (N, H, W, C); kernel: (kh, kw) or (kh, kw, C, Cout);
    bias: scalar or (Cout,); stride: int or (sh, sw); padding: "VALID", "SAME" or int.
    Returns (H', W'), (H', W', Cout) or (N, H', W', Cout) following the rank of `x`, with
    H' = `conv_output_size(H, kh, sh, padding)` and likewise W'. A 2-D `x` needs a single
    filter (Cout == 1).
    """
    strides = _tuple(stride, 2, "stride")
    return _conv_layer(*_arrays(x, kernel, bias), strides=strides, padding=_check_padding(padding))


# One compiled program per shape instead of one per small eager op (reshape, cast, conv, ...).
@functools.partial(jax.jit, static_argnames=("strides", "padding"))
def _conv_layer(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    *,
    strides: tuple[int, ...],
    padding: Padding,
) -> jax.Array:
    nd = len(strides)
    xb, no_channel, no_batch = _batched(x, nd, "x")
    kb = _kernel(kernel, nd)
    _check_channels(xb, kb, no_channel, in_axis=nd, out_axis=nd + 1)
    y = _add_bias(_conv(xb, kb, strides, padding), bias)
    return _unbatched(y, no_channel, no_batch)


def separable_conv2d(
    x: ArrayLike,
    depthwise_kernel: ArrayLike,
    pointwise_kernel: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    stride: Stride = 1,
    padding: Padding = "VALID",
) -> jax.Array:
    """Depthwise-separable convolution (Keras `SeparableConv2D`, Xception/MobileNet).

    First each input channel c is cross-correlated with its own `depth_multiplier` filters
    `depthwise_kernel[:, :, c, m]` (stride and padding apply here), giving C * depth_multiplier
    channels ordered c * depth_multiplier + m; then a 1x1 convolution mixes them.

    x: (H, W), (H, W, C) or (N, H, W, C); depthwise_kernel: (kh, kw, C, depth_multiplier), or
    (kh, kw) for one channel; pointwise_kernel: (1, 1, C * depth_multiplier, Cout) or
    (C * depth_multiplier, Cout); bias: scalar or (Cout,). Returns (H', W'), (H', W', Cout) or
    (N, H', W', Cout) like `conv2d`.
    """
    strides = _tuple(stride, 2, "stride")
    arrays = _arrays(x, depthwise_kernel, pointwise_kernel, bias)
    return _separable_conv2d(*arrays, strides=strides, padding=_check_padding(padding))


@functools.partial(jax.jit, static_argnames=("strides", "padding"))
def _separable_conv2d(
    x: jax.Array,
    depthwise_kernel: jax.Array,
    pointwise_kernel: jax.Array,
    bias: jax.Array | None,
    *,
    strides: tuple[int, int],
    padding: Padding,
) -> jax.Array:
    xb, no_channel, no_batch = _batched(x, 2, "x")
    dw = _kernel(depthwise_kernel, 2, "depthwise_kernel")
    pw = pointwise_kernel[None, None] if pointwise_kernel.ndim == 2 else pointwise_kernel
    channels, multiplier = dw.shape[2], dw.shape[3]
    if pw.ndim != 4 or pw.shape[:3] != (1, 1, channels * multiplier):
        raise ValueError(
            f"pointwise_kernel must have shape (1, 1, {channels * multiplier}, Cout) or "
            f"({channels * multiplier}, Cout) for a depthwise kernel of shape {dw.shape}, "
            f"got {pointwise_kernel.shape}."
        )
    if xb.shape[-1] != channels:
        raise ValueError(
            f"x has {xb.shape[-1]} channels but the depthwise kernel of shape {dw.shape} "
            f"expects {channels}."
        )
    if no_channel and pw.shape[3] != 1:
        raise ValueError(
            f"a pointwise kernel with {pw.shape[3]} filters gives several output channels; "
            "pass x with an explicit channel axis, e.g. (H, W, 1)."
        )
    # Grouped convolution with one group per input channel; HWIO wants I = C / groups = 1.
    dw = dw.reshape(*dw.shape[:2], 1, channels * multiplier)
    y = _conv(xb, dw, strides, padding, feature_group_count=channels)
    y = _add_bias(_conv(y, pw, (1, 1), "VALID"), bias)
    return _unbatched(y, no_channel, no_batch)


def _transposed_size(n: int, k: int, stride: int, padding: Padding) -> int:
    if padding == "SAME":
        return n * stride
    size = (n - 1) * stride + k - 2 * (0 if padding == "VALID" else padding)
    if size < 1:
        raise ValueError(
            f"padding {padding} is too large for a transposed convolution of {n} inputs "
            f"with a window of {k} and stride {stride}."
        )
    return size


def conv_transpose2d(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    stride: Stride = 1,
    padding: Padding = "VALID",
) -> jax.Array:
    """Transposed convolution: the adjoint (input gradient) of `conv2d` with the same kernel.

    Convention (Keras `Conv2DTranspose`, PyTorch `ConvTranspose2d` up to the kernel layout):
    `kernel` is the kernel of the forward `conv2d` being transposed, (kh, kw, Cout, Cin), and
    maps `x` with Cin channels to Cout channels. Each input pixel stamps a copy of the kernel
    (not flipped) scaled by its value, at stride s:
    `y[s*i + a, s*j + b, o] += x[i, j, c] * kernel[a, b, o, c]`.
    Hence `<conv2d(u, kernel), v> == <u, conv_transpose2d(v, kernel)>` for every u, v, i.e.
    `conv_transpose2d(v, kernel) == jax.vjp(lambda u: conv2d(u, kernel, ...), u)[1](v)`.

    Output size along each axis for n inputs, i.e. the forward input size this is the adjoint
    for: VALID -> (n - 1) * s + k; int p -> (n - 1) * s + k - 2p (both as PyTorch; Keras
    gives n * s for VALID when k < s); SAME -> n * s (as Keras).

    x: (H, W), (H, W, Cin) or (N, H, W, Cin); kernel: (kh, kw) or (kh, kw, Cout, Cin);
    bias: scalar or (Cout,). Returns (H', W'), (H', W', Cout) or (N, H', W', Cout).
    """
    strides = _tuple(stride, 2, "stride")
    arrays = _arrays(x, kernel, bias)
    return _conv_transpose2d(*arrays, strides=strides, padding=_check_padding(padding))


@functools.partial(jax.jit, static_argnames=("strides", "padding"))
def _conv_transpose2d(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    *,
    strides: tuple[int, int],
    padding: Padding,
) -> jax.Array:
    xb, no_channel, no_batch = _batched(x, 2, "x")
    kb = _kernel(kernel, 2)
    _check_channels(xb, kb, no_channel, in_axis=3, out_axis=2)
    # The input gradient of a strided convolution: dilate x by the stride, correlate with the
    # flipped kernel (in/out swapped), and pad so that every forward tap is met exactly once.
    # `rest` re-creates the forward input pixels that no window reached (SAME with k < s).
    pads = []
    for n, k, s in zip(xb.shape[1:3], kb.shape[:2], strides, strict=True):
        size = _transposed_size(n, k, s, padding)
        lo, hi = _pads(size, k, s, padding)
        rest = (size + lo + hi - k) % s
        pads.append((k - 1 - lo, k - 1 - hi + rest))
    dtype = _float_dtype(xb, kb)
    y = lax.conv_general_dilated(
        xb.astype(dtype),
        jnp.flip(kb, (0, 1)).swapaxes(2, 3).astype(dtype),
        window_strides=(1, 1),
        padding=pads,
        lhs_dilation=strides,
        dimension_numbers=_DIMENSION_NUMBERS[2],
    )
    return _unbatched(_add_bias(y, bias), no_channel, no_batch)
