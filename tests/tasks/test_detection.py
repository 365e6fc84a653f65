"""Grid detection: target encoding, loss by hand, decoding, NMS and mAP on hand cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.tasks import detection

G = 4  # A 4x4 grid: cells of 0.25.


def _logit(p):
    return math.log(p / (1 - p))


def _perfect_predictions(boxes, classes, grid, num_classes=3, confidence=0.999):
    """Raw predictions (1, G, G, 5 + C) that decode exactly to the encoded targets."""
    t = detection.encode_targets(jnp.asarray(boxes), jnp.asarray(classes), grid)
    pred = np.zeros((grid, grid, 5 + num_classes), np.float32)
    obj = np.asarray(t["objectness"])
    pred[..., 0] = np.where(obj > 0, _logit(confidence), -10.0)
    off = np.clip(np.asarray(t["offsets"]), 1e-6, 1 - 1e-6)
    pred[..., 1:3] = np.log(off / (1 - off))
    pred[..., 3:5] = np.asarray(t["log_sizes"])
    cls = np.asarray(t["classes"])
    pred[..., 5:] = np.where(np.arange(num_classes) == cls[..., None], 10.0, -10.0)
    return jnp.asarray(pred[None])


def test_encode_puts_each_object_in_its_centre_cell():
    boxes = np.array([[0.1, 0.1, 0.3, 0.4], [0.5, 0.6, 0.9, 1.0], [0, 0, 0, 0]], np.float32)
    classes = np.array([2, 0, -1])
    t = detection.encode_targets(boxes, classes, G)
    # Centres (0.2, 0.25) -> cell (0, 1), offsets (0.8, 0.0); (0.7, 0.8) -> cell (2, 3).
    expected = np.zeros((G, G))
    expected[0, 1] = expected[2, 3] = 1
    np.testing.assert_array_equal(t["objectness"], expected)
    assert t["classes"][0, 1] == 2 and t["classes"][2, 3] == 0
    np.testing.assert_allclose(t["offsets"][0, 1], [0.8, 0.0], atol=1e-6)
    np.testing.assert_allclose(t["offsets"][2, 3], [0.8, 0.2], atol=1e-6)
    np.testing.assert_allclose(t["log_sizes"][0, 1], np.log([0.2, 0.3]), atol=1e-6)
    np.testing.assert_allclose(t["log_sizes"][2, 3], np.log([0.4, 0.4]), atol=1e-6)
    assert np.all(np.asarray(t["offsets"])[expected == 0] == 0)


def test_two_centres_in_one_cell_the_later_slot_wins():
    boxes = np.array([[0.0, 0.0, 0.2, 0.2], [0.05, 0.05, 0.15, 0.15]], np.float32)
    t = detection.encode_targets(boxes, np.array([1, 2]), G)
    assert float(jnp.sum(t["objectness"])) == 1
    assert t["classes"][0, 0] == 2
    np.testing.assert_allclose(t["log_sizes"][0, 0], np.log([0.1, 0.1]), atol=1e-6)


def test_encode_decode_round_trip():
    boxes = np.array([[0.1, 0.1, 0.3, 0.4], [0.5, 0.6, 0.9, 1.0], [0, 0, 0, 0]], np.float32)
    classes = np.array([2, 0, -1])
    pred = _perfect_predictions(boxes, classes, G)
    out = detection.detect(pred, max_detections=5)
    assert out["valid"].shape == (1, 5)
    assert int(out["valid"].sum()) == 2
    classes_out = np.asarray(out["classes"][0][:2]).tolist()
    got = sorted(zip(classes_out, np.asarray(out["boxes"][0][:2]).tolist(), strict=True))
    np.testing.assert_allclose(got[0][1], boxes[1], atol=1e-4)
    np.testing.assert_allclose(got[1][1], boxes[0], atol=1e-4)
    assert [g[0] for g in got] == [0, 2]
    np.testing.assert_allclose(out["scores"][0][:2], 0.999, atol=1e-3)
    assert np.all(np.asarray(out["classes"][0][2:]) == -1)


def test_loss_with_no_objects_is_the_objectness_bce_of_every_cell():
    pred = np.zeros((1, G, G, 8), np.float32)
    pred[0, 1, 2, 0] = 2.0  # One confident cell; all others at logit 0 (p = 0.5).
    boxes, classes = np.zeros((1, 3, 4), np.float32), np.full((1, 3), -1)
    loss, parts = detection.detection_loss(jnp.asarray(pred), boxes, classes)
    expected = (G * G - 1) * math.log(2) + math.log(1 + math.exp(2.0))  # / max(P, 1) = 1
    np.testing.assert_allclose(loss, [expected], rtol=1e-6)
    np.testing.assert_allclose(parts["classes"], [0.0])
    np.testing.assert_allclose(parts["box"], [0.0])


def test_loss_with_one_object_by_hand():
    # Object centre (0.2, 0.25): cell (0, 1), offsets (0.8, 0.0), size (0.2, 0.3).
    boxes = np.array([[[0.1, 0.1, 0.3, 0.4], [0, 0, 0, 0]]], np.float32)
    classes = np.array([[1, -1]])
    pred = np.zeros((1, G, G, 8), np.float32)  # Offsets sigmoid(0) = 0.5, log sizes 0.
    pred[0, 0, 1, 5:] = [0.0, 1.0, 2.0]
    loss, parts = detection.detection_loss(
        jnp.asarray(pred), boxes, classes, objectness_weight=2.0, class_weight=3.0, box_weight=5.0
    )
    bce = G * G * math.log(2)  # All logits 0; BCE is log 2 for target 0 and for target 1.
    ce = -math.log(math.exp(1.0) / (1 + math.exp(1.0) + math.exp(2.0)))
    l1 = abs(0.5 - 0.8) + abs(0.5 - 0.0) + abs(math.log(0.2)) + abs(math.log(0.3))
    np.testing.assert_allclose(parts["objectness"], [2.0 * bce], rtol=1e-6)
    np.testing.assert_allclose(parts["classes"], [3.0 * ce], rtol=1e-6)
    np.testing.assert_allclose(parts["box"], [5.0 * l1], rtol=1e-5)
    np.testing.assert_allclose(loss, [2.0 * bce + 3.0 * ce + 5.0 * l1], rtol=1e-5)


def test_loss_is_normalized_by_the_number_of_objects_and_jits():
    boxes = np.array([[[0.1, 0.1, 0.3, 0.4], [0.5, 0.6, 0.9, 1.0]]], np.float32)
    pred = jnp.zeros((1, G, G, 8))
    loss = jax.jit(detection.detection_loss)
    only_a, _ = loss(pred, boxes[:, :1], jnp.array([[0]]))
    only_b, _ = loss(pred, boxes[:, 1:], jnp.array([[0]]))
    both, _ = loss(pred, boxes, jnp.array([[0, 0]]))
    # The objectness BCE is the same sum (log 2 per cell) whatever the targets; the object
    # terms add up, and everything is divided by the 2 objects.
    bce = G * G * math.log(2)
    a, b = float(only_a[0]) - bce, float(only_b[0]) - bce
    assert a > 0 and b > 0 and a != pytest.approx(b)
    assert float(both[0]) == pytest.approx((bce + a + b) / 2, rel=1e-5)


def test_nms_suppresses_duplicates_of_one_object():
    # Three neighbouring cells all predict the same object; NMS keeps only the best one.
    boxes = np.array([[0.2, 0.2, 0.7, 0.7], [0.0, 0.0, 0.0, 0.0]], np.float32)
    pred = np.array(_perfect_predictions(boxes, np.array([1, -1]), G, confidence=0.9))
    # Centre (0.45, 0.45): cell (1, 1). Its right and lower neighbours put the centre just
    # inside themselves (offset 0.05): the same box shifted by 1/16 of the image, IoU 0.78.
    for (i, j), conf in (((1, 2), 0.8), ((2, 1), 0.7)):
        pred[0, i, j] = pred[0, 1, 1]
        pred[0, i, j, 0] = _logit(conf)
        pred[0, i, j, 1 if i == 2 else 2] = _logit(0.05)
    raw = detection.decode(jnp.asarray(pred))
    assert int(np.sum(np.asarray(raw["scores"]) > 0.5)) == 3
    out = jax.jit(lambda p: detection.detect(p, max_detections=4))(jnp.asarray(pred))
    assert int(out["valid"].sum()) == 1
    np.testing.assert_allclose(out["scores"][0, 0], 0.9 * 1.0, atol=1e-3)
    np.testing.assert_allclose(out["boxes"][0, 0], boxes[0], atol=1e-4)


def test_nms_is_per_class_unless_agnostic():
    dets = {
        "boxes": jnp.array([[[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.52]]]),
        "scores": jnp.array([[0.9, 0.8]]),
        "classes": jnp.array([[0, 1]]),
    }
    assert int(detection.postprocess(dets)["valid"].sum()) == 2
    assert int(detection.postprocess(dets, class_agnostic=True)["valid"].sum()) == 1


def test_mean_average_precision_hand_case():
    # Two images, one class present twice: image 0 detects its object at 0.9 and adds a false
    # positive at 0.8; image 1's object is found at 0.7. Ranked: TP, FP, TP -> precision 1, 1/2,
    # 2/3 at recalls 1/2, 1/2, 1. All-point AP = 1/2 * 1 + 1/2 * 2/3 = 5/6. Class 1 has one object
    # found at 0.6 -> AP 1; class 2 has no ground truth and is left out of the mean.
    gt_boxes = np.zeros((2, 3, 4), np.float32)
    gt_classes = np.full((2, 3), -1)
    gt_boxes[0, 0], gt_classes[0, 0] = [0.1, 0.1, 0.4, 0.4], 0
    gt_boxes[1, 0], gt_classes[1, 0] = [0.5, 0.5, 0.9, 0.9], 0
    gt_boxes[1, 1], gt_classes[1, 1] = [0.0, 0.5, 0.3, 0.9], 1
    det = {
        "boxes": np.zeros((2, 4, 4), np.float32),
        "scores": np.zeros((2, 4), np.float32),
        "classes": np.full((2, 4), -1),
        "valid": np.zeros((2, 4), bool),
    }
    rows = [
        (0, 0, [0.1, 0.1, 0.4, 0.42], 0.9, 0),
        (0, 1, [0.6, 0.6, 0.9, 0.9], 0.8, 0),
        (1, 0, [0.5, 0.52, 0.9, 0.9], 0.7, 0),
        (1, 1, [0.0, 0.5, 0.3, 0.88], 0.6, 1),
    ]
    for i, k, box, score, cls in rows:
        det["boxes"][i, k], det["scores"][i, k], det["classes"][i, k] = box, score, cls
        det["valid"][i, k] = True
    m, per_class = detection.mean_average_precision(det, gt_boxes, gt_classes, 3)
    np.testing.assert_allclose(per_class[:2], [5 / 6, 1.0])
    assert math.isnan(per_class[2])
    assert m == pytest.approx((5 / 6 + 1.0) / 2)
