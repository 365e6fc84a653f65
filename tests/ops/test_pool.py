"""cnnjax.ops pooling against explicit NumPy loops and hand-computed examples."""

import jax
import numpy as np
import pytest

from cnnjax.ops import (
    avg_pool,
    conv_output_size,
    depthwise_max_pool,
    global_avg_pool,
    global_max_pool,
    max_pool,
)

RTOL = ATOL = 1e-5


def pads_for(n, k, s, padding):
    """TensorFlow's SAME rule (ceil(n / s) outputs, odd pixel at the end), or int/VALID."""
    if padding == "VALID":
        return 0, 0
    if padding == "SAME":
        total = max((-(-n // s) - 1) * s + k - n, 0)
        return total // 2, total - total // 2
    return padding, padding


def ref_pool(x, window, stride, padding, reduce):
    """x: (N, H, W, C). Pools only the real pixels of each window (padding never counts)."""
    n_batch, height, width, channels = x.shape
    (top, bottom), (left, right) = (
        pads_for(height, window, stride, padding),
        pads_for(width, window, stride, padding),
    )
    out_h = (height + top + bottom - window) // stride + 1
    out_w = (width + left + right - window) // stride + 1
    out = np.zeros((n_batch, out_h, out_w, channels))
    for n in range(n_batch):
        for i in range(out_h):
            for j in range(out_w):
                for c in range(channels):
                    values = []
                    for a in range(window):
                        for b in range(window):
                            r, q = i * stride + a - top, j * stride + b - left
                            if 0 <= r < height and 0 <= q < width:
                                values.append(x[n, r, q, c])
                    out[n, i, j, c] = reduce(values)
    return out


def ref_depthwise_max_pool(x, pool_size):
    """x: (N, H, W, C)."""
    n_batch, height, width, channels = x.shape
    out = np.zeros((n_batch, height, width, channels // pool_size))
    for n in range(n_batch):
        for i in range(height):
            for j in range(width):
                for g in range(channels // pool_size):
                    best = -np.inf
                    for c in range(g * pool_size, (g + 1) * pool_size):
                        best = max(best, x[n, i, j, c])
                    out[n, i, j, g] = best
    return out


@pytest.mark.parametrize("padding", ["VALID", "SAME", 1])
@pytest.mark.parametrize("window, stride", [(2, None), (3, 2), (3, 1)])
@pytest.mark.parametrize("pool, reduce", [(max_pool, max), (avg_pool, np.mean)])
def test_pools_match_loops(pool, reduce, window, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    s = window if stride is None else stride
    expected = ref_pool(x, window, s, padding, reduce)
    out = pool(x, window, stride, padding)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    assert out.shape[1:3] == (
        conv_output_size(7, window, s, padding),
        conv_output_size(6, window, s, padding),
    )


def test_pool_examples():
    x = np.array([[1, 3, 2, 4], [5, 7, 6, 8], [9, 2, 1, 0], [3, 4, 6, 5]], np.float32)
    # 2x2 windows, stride 2: [[1, 3, 5, 7], [2, 4, 6, 8], [9, 2, 3, 4], [1, 0, 6, 5]].
    np.testing.assert_array_equal(max_pool(x), [[7, 8], [9, 6]])
    np.testing.assert_array_equal(avg_pool(x), [[4, 5], [4.5, 3]])
    # Overlapping 3x3 windows at stride 1.
    np.testing.assert_array_equal(max_pool(x, 3, 1), [[9, 8], [9, 8]])
    # Rectangular windows and strides.
    np.testing.assert_array_equal(max_pool(x, (1, 4), (2, 1)), [[4], [9]])


def test_same_padding_is_excluded():
    x = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.float32)
    # 3 pixels, window 2, stride 2 -> 2 outputs; one padded pixel at the end of each axis:
    #   1 2 | 3 .
    #   4 5 | 6 .
    #   ----+----
    #   7 8 | 9 .
    #   . . | . .
    # The averages divide by the real pixels only: (3 + 6) / 2, (7 + 8) / 2, 9 / 1.
    np.testing.assert_array_equal(avg_pool(x, 2, padding="SAME"), [[3, 4.5], [7.5, 9]])
    np.testing.assert_array_equal(max_pool(x, 2, padding="SAME"), [[5, 6], [8, 9]])
    # All-negative input: a padded zero must never win the max.
    np.testing.assert_array_equal(max_pool(-x, 2, padding="SAME"), [[-1, -3], [-7, -9]])
    np.testing.assert_array_equal(max_pool(-x, 3, 1, padding=1)[0], [-1, -1, -2])


def test_rank_conventions_and_ints():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    full = max_pool(x, 2)
    assert full.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(max_pool(x[0], 2), full[0])
    np.testing.assert_array_equal(max_pool(x[0, :, :, 0], 2), full[0, :, :, 0])
    # Integer images: max keeps the dtype, average is float.
    pixels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert max_pool(pixels).dtype == np.uint8
    np.testing.assert_array_equal(max_pool(pixels, 3, 2, "SAME"), [[10, 11], [14, 15]])
    np.testing.assert_array_equal(avg_pool(pixels), [[2.5, 4.5], [10.5, 12.5]])
    # Works under jit.
    np.testing.assert_array_equal(jax.jit(avg_pool)(x), avg_pool(x))


def test_global_pools():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(global_avg_pool(x), x.mean(axis=(1, 2)), rtol=RTOL)
    np.testing.assert_array_equal(global_max_pool(x), x.max(axis=(1, 2)))
    assert global_avg_pool(x).shape == (2, 3)
    assert global_max_pool(x[0]).shape == (3,)
    assert global_avg_pool(x[0, :, :, 0]).shape == ()
    # Equal to a pool whose window is the whole image.
    np.testing.assert_allclose(global_avg_pool(x), avg_pool(x, (4, 5))[:, 0, 0], rtol=RTOL)


@pytest.mark.parametrize("pool_size", [1, 2, 3, 6])
def test_depthwise_max_pool_matches_loops(pool_size):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 6)).astype(np.float32)
    expected = ref_depthwise_max_pool(x, pool_size)
    np.testing.assert_array_equal(depthwise_max_pool(x, pool_size), expected)
    np.testing.assert_array_equal(depthwise_max_pool(x[0], pool_size), expected[0])


def test_depthwise_max_pool_example():
    # Channels [1, 5, 2 | 7, 0, 3] -> [5, 7] with groups of 3; [1 5 | 2 7 | 0 3] -> [5, 7, 3].
    x = np.array([1, 5, 2, 7, 0, 3], np.float32).reshape(1, 1, 6)
    np.testing.assert_array_equal(depthwise_max_pool(x, 3), [[[5, 7]]])
    np.testing.assert_array_equal(depthwise_max_pool(x, 2), [[[5, 7, 3]]])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: depthwise_max_pool(np.ones((2, 2, 6)), 4), "multiple of pool_size=4"),
        (lambda: depthwise_max_pool(np.ones((2, 2, 6)), 0), "pool_size"),
        (lambda: max_pool(np.ones((4, 4)), 2, padding="FULL"), "padding"),
        (lambda: avg_pool(np.ones((4, 4)), 0), "window"),
        (lambda: max_pool(np.ones((4, 4)), 2, stride=(1, 0)), "stride"),
        (lambda: max_pool(np.ones((1, 1, 4, 4, 1))), "x must have shape"),
        (lambda: max_pool(np.ones((2, 2)), 3), "does not fit"),
        (lambda: global_avg_pool(np.ones(4)), "x must have shape"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
