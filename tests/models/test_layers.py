"""Shared layers (cnnjax/models/layers.py) against plain NumPy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.models import layers

RNG = np.random.default_rng(0)


def _conv_same_np(x, w):
    """Stride-1 SAME cross-correlation, x (N, H, W, C), w (k, k, C, O), odd k."""
    k = w.shape[0]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    n, h, wd, _ = x.shape
    out = np.zeros((n, h, wd, w.shape[-1]))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nhwc,co->nhwo", xp[:, i : i + h, j : j + wd], w[i, j])
    return out


def test_separable_conv_is_depthwise_then_pointwise():
    x = RNG.standard_normal((2, 6, 5, 3)).astype(np.float32)
    layer = layers.SeparableConv(4, depth_multiplier=2)
    abstract = jax.eval_shape(layer.init, jax.random.key(0), x)["params"]
    assert jax.tree.map(lambda a: a.shape, abstract) == {
        "depthwise": {"kernel": (3, 3, 1, 6)},  # no bias; output channel c·2 + m
        "pointwise": {"kernel": (1, 1, 6, 4), "bias": (4,)},
    }
    dw = RNG.standard_normal((3, 3, 1, 6)).astype(np.float32)
    pw = RNG.standard_normal((1, 1, 6, 4)).astype(np.float32)
    bias = RNG.standard_normal(4).astype(np.float32)
    params = {"depthwise": {"kernel": dw}, "pointwise": {"kernel": pw, "bias": bias}}
    # The equivalent full kernel: W[i, j, c, o] = sum_m D[i, j, c, m] · P[c·2 + m, o].
    full = np.einsum("ijcm,cmo->ijco", dw.reshape(3, 3, 3, 2), pw.reshape(3, 2, 4))
    expected = _conv_same_np(x, full) + bias
    out = layer.apply({"params": params}, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n, o", [(7, 7), (14, 7), (5, 3), (1, 7), (13, 6)])
def test_adaptive_avg_pool_matches_torch_bins(n, o):
    x = RNG.standard_normal((2, n, n, 3)).astype(np.float32)
    starts = [math.floor(i * n / o) for i in range(o)]
    ends = [math.ceil((i + 1) * n / o) for i in range(o)]
    expected = np.stack(
        [
            np.stack(
                [x[:, a:b, c:d].mean(axis=(1, 2)) for c, d in zip(starts, ends, strict=True)], 1
            )
            for a, b in zip(starts, ends, strict=True)
        ],
        1,
    )
    out = layers.adaptive_avg_pool(jnp.asarray(x), (o, o))
    assert out.shape == (2, o, o, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "n, window, stride, padding, expected",
    # torch.nn.MaxPool2d(..., ceil_mode=True) output sizes: GoogLeNet's pools at 224×224, and
    # the rule that a window may not start in the right padding (n=5, k=2, s=2, p=1 -> 3, not 4).
    [(112, 3, 2, 0, 56), (56, 3, 2, 0, 28), (28, 3, 2, 0, 14), (14, 2, 2, 0, 7),
     (8, 3, 1, 1, 8), (6, 3, 2, 0, 3), (5, 2, 2, 1, 3)],
)  # fmt: skip
def test_max_pool_ceil_sizes(n, window, stride, padding, expected):
    x = jnp.zeros((1, n, n, 1))
    assert layers.max_pool_ceil(x, window, stride, padding).shape == (1, expected, expected, 1)


def test_max_pool_ceil_values():
    x = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1) * -1.0  # max at the top-left
    out = np.asarray(layers.max_pool_ceil(jnp.asarray(x), 3, 2))[0, :, :, 0]
    # Windows start at 0, 2, 4; the last is cut to rows/cols 4..5 (ceil mode).
    expected = np.array([[-(6 * r + c) for c in (0, 2, 4)] for r in (0, 2, 4)], np.float32)
    np.testing.assert_array_equal(out, expected)


def test_local_response_norm():
    x = RNG.standard_normal((2, 3, 3, 7)).astype(np.float32) * 10
    size, alpha, beta, k = 5, 1e-2, 0.75, 2.0
    out = layers.local_response_norm(jnp.asarray(x), size=size, alpha=alpha, beta=beta, k=k)
    expected = np.empty_like(x)
    for c in range(7):
        lo, hi = max(0, c - size // 2), min(7, c + size // 2 + 1)
        expected[..., c] = x[..., c] / (k + alpha * (x[..., lo:hi] ** 2).sum(-1)) ** beta
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_max_pool_2x2_equals_flax_max_pool_and_its_gradient():
    import flax.linen as nn

    from cnnjax.models.layers import max_pool_2x2

    x = jax.random.normal(jax.random.key(0), (2, 9, 7, 3))  # Odd sizes: the remainder drops.
    np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))
    g_ours = jax.grad(lambda x: jnp.sum(max_pool_2x2(x) ** 2))(x)
    g_flax = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2)) ** 2))(x)
    np.testing.assert_allclose(g_ours, g_flax, rtol=1e-6)  # No ties in random normals.
