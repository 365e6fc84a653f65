"""Segmentation metrics against hand-computed confusions; the ignore label counts nowhere."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.tasks import segmentation


def pixel_sums(logits, masks, weight, **kwargs):
    """`segmentation.pixel_sums` compiled once (eagerly, every op compiles on its own)."""
    return jax.jit(functools.partial(segmentation.pixel_sums, **kwargs))(logits, masks, weight)


def test_iou_and_pixel_accuracy_from_a_hand_confusion():
    confusion = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])  # class 2: never true or predicted
    out = segmentation.iou_from_confusion(confusion)
    # IoU_0 = 5 / (6 + 7 - 5), IoU_1 = 3 / (5 + 4 - 3); class 2 is left out of the mean.
    np.testing.assert_allclose(out["iou"][:2], [5 / 8, 3 / 6])
    assert np.isnan(out["iou"][2])
    np.testing.assert_allclose(out["mean_iou"], (5 / 8 + 3 / 6) / 2)
    np.testing.assert_allclose(out["pixel_accuracy"], 8 / 11)


def _one_hot_logits(pred, k=3):
    return jnp.asarray(np.eye(k)[pred] * 5.0, jnp.float32)


def test_pixel_sums_confusion_by_hand_with_ignore_and_padding():
    masks = np.array([[[0, 1, 2], [255, 1, 1]], [[2, 2, 2], [2, 2, 2]]], np.uint8)
    pred = np.array([[[0, 2, 2], [0, 1, 0]], [[0, 0, 0], [0, 0, 0]]])
    s = pixel_sums(
        _one_hot_logits(pred),
        jnp.asarray(masks),
        jnp.array([1.0, 0.0]),  # The second image is padding.
        num_classes=3,
        ignore_label=255,
        class_weights=None,
    )
    # Image 1 without the ignored pixel: (0->0), (1->2), (2->2), (1->1), (1->0).
    expected = np.zeros((3, 3), np.int64)
    for t, p in ((0, 0), (1, 2), (2, 2), (1, 1), (1, 0)):
        expected[t, p] += 1
    np.testing.assert_array_equal(np.asarray(s["confusion"]), expected)
    assert float(s["pixels"]) == 5 and float(s["correct"]) == 3 and float(s["count"]) == 1


def test_ignored_pixels_change_neither_loss_nor_metrics():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 3, (2, 4, 4)).astype(np.uint8)
    masks[:, :2, :2] = 255
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    other = logits.copy()
    other[:, :2, :2] = rng.normal(size=(2, 2, 2, 3)) * 10  # Only the ignored pixels differ.
    kw = dict(num_classes=3, ignore_label=255, class_weights=(1.0, 2.0, 0.5))
    a = pixel_sums(jnp.asarray(logits), jnp.asarray(masks), jnp.ones(2), **kw)
    b = pixel_sums(jnp.asarray(other), jnp.asarray(masks), jnp.ones(2), **kw)
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-6)
    assert int(np.asarray(a["confusion"]).sum()) == 2 * 16 - 8


def test_class_weighted_loss_by_hand():
    masks = jnp.array([[[0, 1]]], jnp.uint8)
    logits = jnp.array([[[[2.0, 0.0], [1.0, 1.0]]]])
    s = pixel_sums(
        logits, masks, jnp.ones(1), num_classes=2, ignore_label=255, class_weights=(1.0, 3.0)
    )
    ce0 = np.log(1 + np.exp(-2.0))  # softmax CE of class 0 at logits (2, 0)
    ce1 = np.log(2.0)  # equal logits
    np.testing.assert_allclose(float(s["loss_sum"]), ce0 + 3 * ce1, rtol=1e-5)
    np.testing.assert_allclose(float(s["weight_sum"]), 4.0)
