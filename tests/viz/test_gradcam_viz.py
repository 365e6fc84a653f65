"""Grad-CAM heat maps and their figure (cnnjax.viz.gradcam)."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from viz_testing import check_png, digit_images, lenet

from cnnjax.errors import UserError
from cnnjax.viz import gradcam

NO_NORMALIZATION = (np.zeros(2, np.float32), np.ones(2, np.float32))  # x = image / 255


class Quadrants(nn.Module):
    """Class 1's logit = channel 0 summed over the top-left quadrant of the conv output;
    class 0's = channel 1 summed over the bottom-right quadrant. Nothing else counts."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        a = nn.Conv(2, (2, 2), strides=(2, 2), padding="VALID", use_bias=False, name="conv")(x)
        h, w = a.shape[1] // 2, a.shape[2] // 2
        top_left = a[:, :h, :w, 0].sum(axis=(1, 2))
        bottom_right = a[:, h:, w:, 1].sum(axis=(1, 2))
        return jnp.stack([bottom_right, top_left], axis=-1)


def _quadrants():
    kernel = np.zeros((2, 2, 2, 2), np.float32)
    kernel[:, :, 0, 0] = kernel[:, :, 1, 1] = 0.25  # 2x2 mean per channel: 16x16 -> 8x8.
    image = np.zeros((16, 16, 2), np.uint8)
    image[2:6, 3:7, 0] = 128  # Evidence for class 1, top-left, in channel 0.
    image[10:14, 9:13, 1] = 255  # Evidence for class 0, bottom-right, brighter, in channel 1.
    return Quadrants(), {"params": {"conv": {"kernel": jnp.asarray(kernel)}}}, image[None]


def _argmax_2d(heat):
    return np.unravel_index(np.argmax(heat), heat.shape)


def test_heat_map_finds_the_region_the_class_depends_on():
    model, variables, images = _quadrants()
    maps, preds = gradcam.grad_cam(model, variables, images, *NO_NORMALIZATION)
    assert preds.tolist() == [0]  # 4 cells of 1.0 beat 4 cells of ~0.5.
    assert maps.shape == (1, 16, 16) and maps.dtype == np.float32
    r, c = _argmax_2d(maps[0])
    assert r >= 8 and c >= 8  # Class 0 lives in the bottom-right quadrant...
    assert maps[0, :8, :8].max() < 0.05  # ...and channel 0's blob does not count for it.

    maps, _ = gradcam.grad_cam(model, variables, images, *NO_NORMALIZATION, class_index=1)
    r, c = _argmax_2d(maps[0])
    assert r < 8 and c < 8  # Class 1: the top-left blob, although channel 1's is brighter.
    assert maps[0, 8:, 8:].max() < 0.05
    assert maps.min() >= 0.0 and maps.max() == pytest.approx(1.0)


def test_default_layer_and_per_image_classes():
    model, variables, images = _quadrants()
    images = np.concatenate([images, images])
    x = images.astype(np.float32) / 255
    (both,), logits, layer = gradcam.grad_cam_multi(model, variables, x, [[0, 1]])
    assert layer == "conv"  # The last (N, H, W, C) output before the head.
    np.testing.assert_allclose(logits, model.apply(variables, x, train=False), rtol=1e-6)
    assert _argmax_2d(both[0])[0] >= 8 and _argmax_2d(both[1])[0] < 8
    with pytest.raises(UserError, match="out of range"):
        gradcam.grad_cam(model, variables, images, *NO_NORMALIZATION, class_index=2)
    with pytest.raises(UserError, match="conv"):
        gradcam.grad_cam(model, variables, images, *NO_NORMALIZATION, layer_path="conv9")


def test_lenet_heat_maps_in_unit_range():
    model, variables = lenet(1)
    images, _ = digit_images(3)
    mean, std = np.array([0.3]), np.array([0.4])
    maps, preds = gradcam.grad_cam(model, variables, images, mean, std)
    assert maps.shape == (3, 32, 32)
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    x = (images / 255.0 - mean) / std
    logits = model.apply(variables, jnp.asarray(x, jnp.float32), train=False)
    assert preds.tolist() == np.argmax(logits, axis=-1).tolist()


def test_grad_cam_figure(tmp_path):
    model, variables = lenet(1)
    images, labels = digit_images(3)
    names = [f"digit {i}" for i in range(10)]
    path = tmp_path / "gradcam.png"
    fig = gradcam.grad_cam_figure(
        model, variables, images, labels, names, [0.3], [0.4], path=str(path)
    )
    tiles = [ax for ax in fig.axes if ax.images]
    assert len(tiles) == 9  # 3 images x (image, predicted-class overlay, true-class overlay).
    titles = [ax.get_title() for ax in tiles]
    assert all(t.startswith("pred: digit ") and t.endswith(")") for t in titles[1::3])
    assert titles[2::3] == [f"true: digit {int(y)}" for y in labels]
    overlay = tiles[1].images[1]
    assert overlay.get_cmap().name == "jet" and 0 < overlay.get_alpha() < 1
    assert len(fig.axes) == 10  # + the colour bar.
    check_png(path)
