"""cnnjax.ops convolutions against explicit NumPy loops and hand-computed examples."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.ops import (
    conv1d,
    conv2d,
    conv_output_size,
    conv_transpose2d,
    kernels,
    separable_conv2d,
)

RTOL = ATOL = 1e-5


# --- Naive references: explicit loops, no library convolution. -------------------------------


def same_pads(n, k, s):
    """TensorFlow's SAME rule: ceil(n / s) outputs, the odd padded pixel at the end."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def pads_for(n, k, s, padding):
    if padding == "VALID":
        return 0, 0
    if padding == "SAME":
        return same_pads(n, k, s)
    return padding, padding


def ref_conv1d(x, kernel, bias, stride, padding):
    """x: (N, L, C), kernel: (k, C, O), bias: (O,)."""
    n_batch, length, channels = x.shape
    k, _, filters = kernel.shape
    xp = np.pad(x, ((0, 0), pads_for(length, k, stride, padding), (0, 0)))
    out_len = (xp.shape[1] - k) // stride + 1
    out = np.zeros((n_batch, out_len, filters))
    for n in range(n_batch):
        for i in range(out_len):
            for o in range(filters):
                acc = bias[o]
                for a in range(k):
                    for c in range(channels):
                        acc += xp[n, i * stride + a, c] * kernel[a, c, o]
                out[n, i, o] = acc
    return out


def ref_conv2d(x, kernel, bias, stride, padding):
    """x: (N, H, W, C), kernel: (kh, kw, C, O), bias: (O,), stride: (sh, sw)."""
    n_batch, height, width, channels = x.shape
    kh, kw, _, filters = kernel.shape
    sh, sw = stride
    xp = np.pad(
        x,
        ((0, 0), pads_for(height, kh, sh, padding), pads_for(width, kw, sw, padding), (0, 0)),
    )
    out_h = (xp.shape[1] - kh) // sh + 1
    out_w = (xp.shape[2] - kw) // sw + 1
    out = np.zeros((n_batch, out_h, out_w, filters))
    for n in range(n_batch):
        for i in range(out_h):
            for j in range(out_w):
                for o in range(filters):
                    acc = bias[o]
                    for a in range(kh):
                        for b in range(kw):
                            for c in range(channels):
                                acc += xp[n, i * sh + a, j * sw + b, c] * kernel[a, b, c, o]
                    out[n, i, j, o] = acc
    return out


def ref_separable(x, depthwise, pointwise, bias, stride, padding):
    """depthwise: (kh, kw, C, M), pointwise: (C * M, O); channel c * M + m after the first step."""
    channels, multiplier = depthwise.shape[2:]
    mid = []
    for c in range(channels):
        for m in range(multiplier):
            one = depthwise[:, :, c : c + 1, m : m + 1]
            mid.append(ref_conv2d(x[..., c : c + 1], one, np.zeros(1), stride, padding)[..., 0])
    mid = np.stack(mid, axis=-1)
    n_batch, out_h, out_w, _ = mid.shape
    out = np.zeros((n_batch, out_h, out_w, pointwise.shape[1]))
    for n in range(n_batch):
        for i in range(out_h):
            for j in range(out_w):
                for o in range(pointwise.shape[1]):
                    acc = bias[o]
                    for c in range(mid.shape[-1]):
                        acc += mid[n, i, j, c] * pointwise[c, o]
                    out[n, i, j, o] = acc
    return out


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# --- Hand-computed examples. -----------------------------------------------------------------

SPEC_IMAGE = [
    [105, 102, 100, 97, 96],
    [103, 99, 103, 101, 102],
    [101, 98, 104, 102, 100],
    [99, 101, 106, 104, 99],
    [104, 104, 104, 100, 98],
]


def test_sharpen_worked_example_from_spec():
    # Each output is 5 x centre - (up + left + right + down) of the 3x3 window:
    #   (0, 0): centre 99:  5*99  - (102 + 103 + 103 + 98)  = 495 - 406 = 89
    #   (0, 1): centre 103: 5*103 - (100 + 99 + 101 + 104)  = 515 - 404 = 111
    #   (0, 2): centre 101: 5*101 - (97 + 103 + 102 + 102)  = 505 - 404 = 101
    #   (1, 0): centre 98:  5*98  - (99 + 101 + 104 + 101)  = 490 - 405 = 85
    #   (1, 1): centre 104: 5*104 - (103 + 98 + 102 + 106)  = 520 - 409 = 111
    #   (1, 2): centre 102: 5*102 - (101 + 104 + 100 + 104) = 510 - 409 = 101
    #   (2, 0): centre 101: 5*101 - (98 + 99 + 106 + 104)   = 505 - 407 = 98
    #   (2, 1): centre 106: 5*106 - (104 + 101 + 104 + 104) = 530 - 413 = 117
    #   (2, 2): centre 104: 5*104 - (102 + 106 + 99 + 100)  = 520 - 407 = 113
    expected = [[89, 111, 101], [85, 111, 101], [98, 117, 113]]
    out = conv2d(np.array(SPEC_IMAGE), kernels.SHARPEN, padding="VALID", stride=1)
    assert out.shape == (3, 3)
    np.testing.assert_array_equal(out, expected)
    # The same through the (H, W, C) and (N, H, W, C) forms.
    image = np.array(SPEC_IMAGE, np.float32)
    out3 = conv2d(image[:, :, None], kernels.SHARPEN[:, :, None, None])
    out4 = conv2d(image[None, :, :, None], kernels.SHARPEN)
    np.testing.assert_array_equal(out3[..., 0], expected)
    np.testing.assert_array_equal(out4[0, ..., 0], expected)


def test_stride_2_example():
    x = np.arange(25, dtype=np.float32).reshape(5, 5)  # x[r, c] = 5r + c
    k = np.array([[1, 0, 0], [0, 0, 0], [0, 0, -1]], np.float32)  # top-left minus bottom-right
    # Windows start at rows/columns 0 and 2: each output is x[r, c] - x[r + 2, c + 2] = -12.
    # With [[0, 1, 0], ...] instead it just picks x[2i, 2j + 1]: [[1, 3], [11, 13]].
    np.testing.assert_array_equal(conv2d(x, k, stride=2), [[-12, -12], [-12, -12]])
    pick = np.zeros((3, 3), np.float32)
    pick[0, 1] = 1
    np.testing.assert_array_equal(conv2d(x, pick, stride=2), [[1, 3], [11, 13]])
    # Stride (1, 2): 3 rows, 2 columns.
    np.testing.assert_array_equal(conv2d(x, pick, stride=(1, 2)), [[1, 3], [6, 8], [11, 13]])


def test_same_padding_pads_at_the_end():
    x = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.float32)
    k = np.array([[1, 2], [3, 4]], np.float32)
    # A 2x2 window needs 1 zero per axis for 3 outputs; SAME puts it at the end (TF/Keras):
    #   1 2 3 0
    #   4 5 6 0
    #   7 8 9 0
    #   0 0 0 0
    # out[i, j] = 1*x[i, j] + 2*x[i, j+1] + 3*x[i+1, j] + 4*x[i+1, j+1]:
    #   (0, 0): 1 + 4 + 12 + 20 = 37    (0, 2): 3 + 2*0 + 3*6 + 4*0 = 21
    #   (2, 0): 7 + 2*8 + 0 + 0 = 23    (2, 2): 9
    expected = [[37, 47, 21], [67, 77, 33], [23, 26, 9]]
    np.testing.assert_array_equal(conv2d(x, k, padding="SAME"), expected)


def test_same_padding_with_stride_2():
    x = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    # 4 inputs, stride 2 -> 2 outputs; a 3-wide window needs (2 - 1) * 2 + 3 - 4 = 1 zero:
    # none before, one after. Windows cover rows/columns {0, 1, 2} and {2, 3, pad}.
    #    1  2  3  4  0
    #    5  6  7  8  0
    #    9 10 11 12  0
    #   13 14 15 16  0
    #    0  0  0  0  0
    # With a box of ones: (0, 0) = 1+2+3+5+6+7+9+10+11 = 54, (0, 1) = 3+4+7+8+11+12 = 45,
    # (1, 0) = 9+10+11+13+14+15 = 72, (1, 1) = 11+12+15+16 = 54.
    out = conv2d(x, np.ones((3, 3)), stride=2, padding="SAME")
    np.testing.assert_array_equal(out, [[54, 45], [72, 54]])
    # With 1 zero on every side (6x6 padded) the windows cover rows/columns {pad, 0, 1} and
    # {1, 2, 3}: the first window is centred on x[0, 0] instead.
    out = conv2d(x, np.ones((3, 3)), stride=2, padding=1)
    np.testing.assert_array_equal(
        out, [[1 + 2 + 5 + 6, 2 + 3 + 4 + 6 + 7 + 8], [5 + 6 + 9 + 10 + 13 + 14, 99]]
    )


def test_multi_channel_two_filters_with_bias():
    # Two 3x3 channels.
    x = np.zeros((3, 3, 2), np.float32)
    x[..., 0] = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    x[..., 1] = [[1, 0, 2], [0, 3, 0], [1, 0, 1]]
    # Filter 0: sums the 2x2 window of channel 0, plus the top-right pixel of channel 1; bias 10.
    # Filter 1: top-left minus bottom-right of channel 0, plus 2 x the channel-1 window; bias -1.
    k = np.zeros((2, 2, 2, 2), np.float32)
    k[:, :, 0, 0] = [[1, 1], [1, 1]]
    k[:, :, 1, 0] = [[0, 1], [0, 0]]
    k[:, :, 0, 1] = [[1, 0], [0, -1]]
    k[:, :, 1, 1] = [[2, 2], [2, 2]]
    bias = np.array([10, -1], np.float32)
    # Filter 0, (0, 0): (1 + 2 + 4 + 5) + 0 + 10 = 22;  (1, 0): (4 + 5 + 7 + 8) + 3 + 10 = 37.
    # Filter 1, (0, 0): (1 - 5) + 2 * (1 + 0 + 0 + 3) - 1 = 3;  (0, 1): (2 - 6) + 2 * 5 - 1 = 5.
    expected = np.zeros((2, 2, 2))
    expected[..., 0] = [[22, 28], [37, 38]]
    expected[..., 1] = [[3, 5], [3, 3]]
    out = conv2d(x, k, bias)
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(conv2d(np.stack([x, x]), k, bias), np.stack([expected] * 2))


def test_conv1d_example():
    # [1, 2, 3] slid over [1, 2, 3, 4, 5]: 1*1 + 2*2 + 3*3 = 14, 2 + 6 + 12 = 20, 3 + 8 + 15 = 26.
    np.testing.assert_array_equal(conv1d([1, 2, 3, 4, 5], [1, 2, 3]), [14, 20, 26])
    # Stride 2, SAME: 3 outputs, (3 - 1) * 2 + 3 - 5 = 2 zeros, one each side: [0, 1, ..., 5, 0].
    out = conv1d([1, 2, 3, 4, 5], [1, 2, 3], stride=2, padding="SAME")
    np.testing.assert_array_equal(out, [0 + 2 + 6, 2 + 6 + 12, 4 + 10 + 0])
    # Two channels in, one filter out, bias 0.5: [x0 + x1 over a window of 2].
    x = np.array([[1, 10], [2, 20], [3, 30]], np.float32)
    out = conv1d(x, np.ones((2, 2, 1)), bias=0.5)
    np.testing.assert_array_equal(out, [[33.5], [55.5]])


# --- Against the loop references on random inputs. -------------------------------------------


@pytest.mark.parametrize("padding", ["VALID", "SAME", 1, 2])
@pytest.mark.parametrize("stride", [1, 2, (2, 1)])
@pytest.mark.parametrize("kernel_size", [(3, 3), (2, 4)])
def test_conv2d_matches_loops(kernel_size, stride, padding):
    rng = np.random.default_rng(0)
    x = randn(rng, 2, 7, 8, 3)
    kernel = randn(rng, *kernel_size, 3, 4)
    bias = randn(rng, 4)
    expected = ref_conv2d(x, kernel, bias, np.broadcast_to(stride, 2), padding)
    out = conv2d(x, kernel, bias, stride=stride, padding=padding)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("padding", ["VALID", "SAME", 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv1d_matches_loops(stride, padding):
    rng = np.random.default_rng(1)
    x, kernel, bias = randn(rng, 2, 9, 3), randn(rng, 4, 3, 2), randn(rng, 2)
    expected = ref_conv1d(x, kernel, bias, stride, padding)
    out = conv1d(x, kernel, bias, stride=stride, padding=padding)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        conv1d(x[0], kernel, bias, stride=stride, padding=padding), expected[0], rtol=RTOL
    )


@pytest.mark.parametrize("stride, padding", [(1, "VALID"), (2, "SAME"), (1, 1)])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_separable_conv2d_matches_loops(multiplier, stride, padding):
    rng = np.random.default_rng(2)
    x = randn(rng, 2, 6, 7, 3)
    depthwise = randn(rng, 3, 3, 3, multiplier)
    pointwise = randn(rng, 3 * multiplier, 4)
    bias = randn(rng, 4)
    expected = ref_separable(x, depthwise, pointwise, bias, (stride, stride), padding)
    out = separable_conv2d(x, depthwise, pointwise, bias, stride=stride, padding=padding)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    # The Keras 4-D pointwise layout gives the same.
    out4 = separable_conv2d(
        x, depthwise, pointwise[None, None], bias, stride=stride, padding=padding
    )
    np.testing.assert_allclose(out4, expected, rtol=RTOL, atol=ATOL)


def test_rank_conventions():
    rng = np.random.default_rng(3)
    image, kernel = randn(rng, 6, 5), randn(rng, 3, 3)
    full = conv2d(image[None, :, :, None], kernel[:, :, None, None])
    assert conv2d(image, kernel).shape == (4, 3)
    np.testing.assert_allclose(conv2d(image, kernel), full[0, :, :, 0], rtol=RTOL)
    np.testing.assert_allclose(conv2d(image[:, :, None], kernel), full[0], rtol=RTOL)
    assert conv2d(randn(rng, 6, 5, 2), randn(rng, 3, 3, 2, 4)).shape == (4, 3, 4)
    assert conv1d(randn(rng, 6), randn(rng, 3)).shape == (4,)
    assert conv1d(randn(rng, 6, 2), randn(rng, 3, 2, 5)).shape == (4, 5)
    assert separable_conv2d(image, kernel, np.ones((1, 1))).shape == (4, 3)
    # Strides and paddings may be lists or NumPy ints; inputs may be nested lists.
    assert conv2d(image, kernel, stride=[np.int64(2), 1], padding=np.int64(1)).shape == (3, 5)
    assert conv2d(image.tolist(), kernel.tolist(), padding="same").shape == (6, 5)


def test_conv2d_under_jit_and_bf16():
    rng = np.random.default_rng(4)
    x, kernel = randn(rng, 1, 5, 5, 2), randn(rng, 3, 3, 2, 3)
    f = jax.jit(lambda x, k: conv2d(x, k, stride=2, padding="SAME"))
    np.testing.assert_allclose(f(x, kernel), conv2d(x, kernel, stride=2, padding="SAME"))
    assert conv2d(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)).dtype == jnp.bfloat16


# --- Output sizes. ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        ((32, 5), 28),
        ((32, 3, 2, "SAME"), 16),
        ((33, 3, 2, "SAME"), 17),
        ((32, 3, 1, "SAME"), 32),
        ((32, 3, 1, 1), 32),
        ((32, 5, 1, 1), 30),
        ((32, 3, 2, 1), 16),
        ((28, 2, 2), 14),
        ((7, 3, 2), 3),
        ((32, 3, 1, "VALID", 2), 28),  # dilation 2: the kernel spans 5 pixels
        ((32, 3, 1, "same", 2), 32),
    ],
)
def test_conv_output_size_cases(args, expected):
    assert conv_output_size(*args) == expected


def test_conv_output_size_agrees_with_conv2d_shapes():
    for n in range(1, 10):
        for k in range(1, 5):
            for s in range(1, 4):
                for padding in ("VALID", "SAME", 0, 1, 2):
                    x = jax.ShapeDtypeStruct((n, n + 3), jnp.float32)
                    kernel = jax.ShapeDtypeStruct((k, k), jnp.float32)
                    conv = functools.partial(conv2d, stride=s, padding=padding)
                    zeros = 0 if isinstance(padding, str) else padding
                    if padding != "SAME" and n + 2 * zeros < k:
                        with pytest.raises(ValueError, match="does not fit"):
                            conv_output_size(n, k, s, padding)
                        with pytest.raises(ValueError, match="does not fit"):
                            jax.eval_shape(conv, x, kernel)
                        continue
                    shape = jax.eval_shape(conv, x, kernel).shape
                    expected = tuple(conv_output_size(m, k, s, padding) for m in (n, n + 3))
                    assert shape == expected, (n, k, s, padding)


# --- Transposed convolution. -----------------------------------------------------------------


def test_conv_transpose2d_stamps_the_kernel():
    # Stride 2 with a 2x2 kernel: each input pixel stamps value * kernel into its own 2x2 block.
    y = np.array([[1, 2], [3, 4]], np.float32)
    k = np.array([[1, 2], [3, 4]], np.float32)
    expected = [[1, 2, 2, 4], [3, 4, 6, 8], [3, 6, 4, 8], [9, 12, 12, 16]]
    np.testing.assert_array_equal(conv_transpose2d(y, k, stride=2), expected)
    # Stride 1: stamps overlap and add up: out[0, 1] = 1*2 + 2*1 = 4, out[1, 1] = 1*4 + 2*3 + 3*2
    # + 4*1 = 20.
    out = conv_transpose2d(y, k)
    np.testing.assert_array_equal(out, [[1, 4, 4], [6, 20, 16], [9, 24, 16]])


@pytest.mark.parametrize(
    "padding, expected", [("VALID", (9, 11)), ("SAME", (8, 10)), (1, (7, 9)), (0, (9, 11))]
)
def test_conv_transpose2d_output_shape_stride_2(padding, expected):
    y = np.zeros((2, 4, 5, 6), np.float32)
    kernel = np.zeros((3, 3, 3, 6), np.float32)  # forward conv: 3 -> 6 channels
    out = conv_transpose2d(y, kernel, np.zeros(3), stride=2, padding=padding)
    assert out.shape == (2, *expected, 3)
    assert conv_transpose2d(y[0], kernel, stride=2, padding=padding).shape == (*expected, 3)
    assert conv_transpose2d(y[0, :, :, 0], np.zeros((3, 3)), stride=2, padding=padding).shape == (
        expected
    )


@pytest.mark.parametrize("padding", ["VALID", "SAME", 1])
@pytest.mark.parametrize(
    "kernel_size, stride", [((3, 3), 1), ((3, 3), 2), ((2, 3), (2, 3)), ((1, 1), 2), ((4, 4), 3)]
)
def test_conv_transpose2d_is_the_adjoint_of_conv2d(kernel_size, stride, padding):
    rng = np.random.default_rng(5)
    kernel = randn(rng, *kernel_size, 2, 3)
    y_shape = (2, 4, 3, 3)
    # The forward input size that conv_transpose2d maps back to.
    x_shape = conv_transpose2d(np.zeros(y_shape), kernel, stride=stride, padding=padding).shape
    x, y = randn(rng, *x_shape), randn(rng, *y_shape)
    forward = lambda x: conv2d(x, kernel, stride=stride, padding=padding)
    out, vjp = jax.vjp(forward, x)
    assert out.shape == y_shape
    transposed = conv_transpose2d(y, kernel, stride=stride, padding=padding)
    np.testing.assert_allclose(transposed, vjp(y)[0], rtol=RTOL, atol=ATOL)
    lhs = np.vdot(np.asarray(out, np.float64), y)
    rhs = np.vdot(x.astype(np.float64), np.asarray(transposed, np.float64))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


# --- Errors. ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), padding="FULL"), "padding"),
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), padding=-1), "padding"),
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), padding=True), "padding"),
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), stride=0), "stride"),
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), stride=(1, 2, 3)), "stride"),
        (lambda: conv2d(np.ones(5), np.ones((3, 3))), r"x must have shape"),
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3, 1))), r"kernel must have shape"),
        (lambda: conv2d(np.ones((5, 5, 2)), np.ones((3, 3))), "2 channels"),
        (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3, 1, 2))), "explicit channel axis"),
        (lambda: conv2d(np.ones((5, 5, 1)), np.ones((3, 3, 1, 2)), np.ones(3)), "bias"),
        (lambda: conv2d(np.ones((2, 2)), np.ones((3, 3))), "does not fit"),
        (lambda: conv1d(np.ones((5, 5, 5, 5)), np.ones(3)), r"\(N, L, C\)"),
        (
            lambda: separable_conv2d(np.ones((5, 5, 2)), np.ones((3, 3, 2, 1)), np.ones((3, 1))),
            "pointwise",
        ),
        (
            lambda: separable_conv2d(np.ones((5, 5, 3)), np.ones((3, 3, 2, 1)), np.ones((2, 1))),
            "3 channels",
        ),
        (lambda: conv_transpose2d(np.ones((2, 2, 3)), np.ones((3, 3, 1, 2))), "3 channels"),
        (lambda: conv_transpose2d(np.ones((2, 2)), np.ones((3, 3)), padding=3), "too large"),
        (lambda: conv_output_size(0, 3), "n must be"),
        (lambda: conv_output_size(5, 3, 1, "full"), "padding"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
