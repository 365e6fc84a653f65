"""cnnjax.ops boxes: IoU, NMS against a NumPy greedy reference, AP/mAP against hand arithmetic."""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.ops import (
    average_precision,
    batched_nms,
    box_area,
    box_iou,
    mean_average_precision,
    nms,
    pairwise_iou,
)

# ---------------------------------------------------------------------------------------------
# References.


def ref_iou(a, b):
    """IoU of two single boxes (ymin, xmin, ymax, xmax), float64, 0 for empty boxes."""
    h = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    w = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = h * w
    area = lambda x: max(x[2] - x[0], 0.0) * max(x[3] - x[1], 0.0)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def ref_nms(boxes, scores, iou_threshold, max_outputs, score_threshold=-np.inf):
    """Plain greedy NMS: by descending score (ties: lower index), suppress IoU > threshold."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if not scores[i] > score_threshold:
            continue
        if all(ref_iou(boxes[i], boxes[j]) <= iou_threshold for j in kept):
            kept.append(i)
        if len(kept) == max_outputs:
            break
    return kept


def random_boxes(rng, n, spread=1.0):
    """n boxes with sides in [0.05, 0.3] and corners in [0, spread]: many overlaps."""
    corner = rng.uniform(0, spread, size=(n, 2))
    size = rng.uniform(0.05, 0.3, size=(n, 2))
    return np.concatenate([corner, corner + size], axis=1).astype(np.float32)


def kept(indices, valid):
    indices, valid = np.asarray(indices), np.asarray(valid)
    return indices[valid].tolist()


# ---------------------------------------------------------------------------------------------
# Area and IoU.


def test_box_area_and_iou_hand_values():
    a = [0.0, 0.0, 2.0, 2.0]  # area 4
    b = [1.0, 1.0, 3.0, 3.0]  # area 4, overlap 1x1
    np.testing.assert_allclose(box_area([a, b, [0, 0, 1, 3]]), [4.0, 4.0, 3.0])
    # inter 1, union 4 + 4 - 1 = 7.
    np.testing.assert_allclose(box_iou(a, b), 1 / 7, rtol=1e-6)
    np.testing.assert_allclose(box_iou(a, a), 1.0)
    # b inside a: inter 1, union 4.
    np.testing.assert_allclose(box_iou(a, [0.5, 0.5, 1.5, 1.5]), 0.25)
    # Integer pixel boxes are measured in float32.
    assert box_iou(np.array([0, 0, 2, 2]), np.array([1, 1, 3, 3])).dtype == jnp.float32


def test_box_iou_disjoint_touching_and_empty_boxes_are_zero_without_nan():
    a = jnp.array([0.0, 0.0, 1.0, 1.0])
    others = jnp.array(
        [
            [2.0, 2.0, 3.0, 3.0],  # disjoint
            [1.0, 0.0, 2.0, 1.0],  # touches along an edge
            [0.5, 0.5, 0.5, 0.9],  # zero height, inside a
            [0.8, 0.8, 0.2, 0.2],  # inverted (negative area), overlapping a's span
            [0.3, 0.3, 0.3, 0.3],  # a point
        ]
    )
    np.testing.assert_array_equal(box_iou(a, others), np.zeros(5))
    np.testing.assert_array_equal(box_area(others[2:]), np.zeros(3))
    # Two empty boxes, even identical: 0, not 0 / 0.
    np.testing.assert_array_equal(box_iou(others[2:], others[2:]), np.zeros(3))
    # Gradients stay finite through empty and disjoint boxes.
    grad = jax.grad(lambda b: box_iou(a, b).sum())(others)
    assert np.all(np.isfinite(grad))


def test_box_iou_broadcasts_like_jnp_arithmetic():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 5), random_boxes(rng, 7)
    want = np.array([[ref_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(box_iou(a[:, None], b[None]), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pairwise_iou(a, b), want, rtol=1e-5, atol=1e-6)
    assert box_iou(a[0], b).shape == (7,)
    assert box_iou(a[None, :, None], b[None, None]).shape == (1, 5, 7)
    # Same shapes: elementwise.
    want = [ref_iou(x, y) for x, y in zip(a, b[:5], strict=True)]
    np.testing.assert_allclose(box_iou(a, b[:5]), want, rtol=1e-5, atol=1e-6)


def test_box_errors_are_clear():
    with pytest.raises(ValueError, match=r"a must have shape \(\.\.\., 4\)"):
        box_iou(np.zeros((3, 5)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="boxes must have shape"):
        box_area(np.zeros(3))
    with pytest.raises(ValueError, match="cannot broadcast"):
        box_iou(np.zeros((3, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"a \(N, 4\) and b \(M, 4\)"):
        pairwise_iou(np.zeros((2, 3, 4)), np.zeros((2, 4)))


# ---------------------------------------------------------------------------------------------
# NMS.


def test_nms_hand_cases():
    near_duplicates = np.array([[0, 0, 1, 1], [0, 0, 1, 1.05], [5, 5, 6, 6]], np.float32)
    # The higher-scoring of the two near-duplicates survives, the disjoint box too.
    idx, valid = nms(near_duplicates, np.array([0.6, 0.9, 0.1]), max_outputs=4)
    assert idx.dtype == jnp.int32 and valid.dtype == jnp.bool_
    assert idx.shape == valid.shape == (4,)
    np.testing.assert_array_equal(idx, [1, 2, -1, -1])
    np.testing.assert_array_equal(valid, [True, True, False, False])

    # Disjoint boxes are all kept, by descending score.
    disjoint = np.array([[i, i, i + 0.9, i + 0.9] for i in range(4)], np.float32)
    scores = np.array([0.2, 0.8, 0.5, 0.7], np.float32)
    assert kept(*nms(disjoint, scores, max_outputs=6)) == [1, 3, 2, 0]
    # max_outputs truncates to the best ones.
    assert kept(*nms(disjoint, scores, max_outputs=2)) == [1, 3]
    # score_threshold drops scores not above it.
    assert kept(*nms(disjoint, scores, max_outputs=6, score_threshold=0.5)) == [1, 3]

    # Ties: the lower index first, and it suppresses the later duplicate.
    same = np.array([[0, 0, 1, 1]] * 3 + [[3, 3, 4, 4]], np.float32)
    assert kept(*nms(same, np.full(4, 0.5), max_outputs=4)) == [0, 3]
    assert kept(*nms(disjoint, np.full(4, 0.5), max_outputs=4)) == [0, 1, 2, 3]

    # Suppression needs IoU > threshold: these two overlap by IoU 1/3.
    half = np.array([[0, 0, 1, 2], [0, 1, 1, 3]], np.float32)  # inter 1, union 3
    assert kept(*nms(half, np.array([0.9, 0.8]), iou_threshold=0.34, max_outputs=3)) == [0, 1]
    assert kept(*nms(half, np.array([0.9, 0.8]), iou_threshold=0.3, max_outputs=3)) == [0]

    # NaN scores never take part; no boxes at all gives an all-padding answer.
    assert kept(*nms(disjoint, np.array([np.nan, 1, np.nan, 0]), max_outputs=4)) == [1, 3]
    idx, valid = nms(np.zeros((0, 4)), np.zeros(0), max_outputs=3)
    np.testing.assert_array_equal(idx, [-1, -1, -1])
    assert not np.any(valid)


@pytest.mark.parametrize("quantized", [False, True], ids=["distinct", "tied_scores"])
def test_nms_matches_numpy_greedy_reference(quantized):
    rng = np.random.default_rng(1 + quantized)
    n, max_outputs = 64, 50  # keeps 16 (threshold 0) to 50 (the cap) boxes
    boxes = random_boxes(rng, n)
    scores = rng.uniform(size=n).astype(np.float32)
    if quantized:  # many equal scores: exercises the lower-index tie break
        scores = np.round(scores * 4) / 4
    # The thresholds are traced: one compiled program serves all of them.
    for iou_threshold in (0.0, 0.1, 0.3, 0.5, 0.7, 0.95):
        for score_threshold in (-np.inf, 0.4):
            want = ref_nms(boxes, scores, iou_threshold, max_outputs, score_threshold)
            idx, valid = nms(boxes, scores, iou_threshold, max_outputs, score_threshold)
            assert kept(idx, valid) == want, (iou_threshold, score_threshold)
            assert np.all(np.asarray(idx)[len(want) :] == -1)
            np.testing.assert_array_equal(valid, np.arange(max_outputs) < len(want))


def test_batched_nms_is_nms_per_image_and_jits():
    rng = np.random.default_rng(3)
    b, n, max_outputs = 3, 40, 12
    boxes = np.stack([random_boxes(rng, n) for _ in range(b)])
    scores = rng.uniform(size=(b, n)).astype(np.float32)
    idx, valid = batched_nms(boxes, scores, 0.4, max_outputs)
    assert idx.shape == valid.shape == (b, max_outputs)
    for i in range(b):
        assert kept(idx[i], valid[i]) == ref_nms(boxes[i], scores[i], 0.4, max_outputs)
    # Inside a user's jit, with a traced threshold.
    jitted = jax.jit(lambda x, s, t: nms(x, s, t, max_outputs=max_outputs))
    for t in (0.2, 0.6):
        assert kept(*jitted(boxes[0], scores[0], t)) == ref_nms(boxes[0], scores[0], t, 12)


def test_nms_errors_are_clear():
    with pytest.raises(ValueError, match=r"boxes must have shape \(\.\.\., 4\)"):
        nms(np.zeros((5, 3)), np.zeros(5))
    with pytest.raises(ValueError, match=r"nms needs boxes \(N, 4\) and scores \(N\)"):
        nms(np.zeros((5, 4)), np.zeros(4))
    with pytest.raises(ValueError, match=r"batched_nms needs boxes \(B, N, 4\)"):
        batched_nms(np.zeros((5, 4)), np.zeros(5))
    with pytest.raises(ValueError, match="max_outputs must be a positive int"):
        nms(np.zeros((5, 4)), np.zeros(5), max_outputs=0)


# ---------------------------------------------------------------------------------------------
# Average precision.


def test_average_precision_hand_computed():
    # 3 ground truths; detections ranked by score give TP, FP, TP, FP, TP (given unsorted).
    #   rank:        1     2     3     4     5
    #   TP/FP:       TP    FP    TP    FP    TP
    #   cum TP:      1     1     2     2     3
    #   precision:   1/1   1/2   2/3   2/4   3/5
    #   recall:      1/3   1/3   2/3   2/3   3/3
    #   envelope:    1     2/3   2/3   3/5   3/5   (max precision at this rank or later)
    # Recall rises by 1/3 at ranks 1, 3 and 5, where the envelope is 1, 2/3 and 3/5:
    #   AP = 1/3 * (1 + 2/3 + 3/5) = 1/3 * 34/15 = 34/45.
    scores = np.array([0.5, 0.9, 0.6, 0.8, 0.7])  # ranks 5, 1, 4, 2, 3
    is_tp = np.array([True, True, False, False, True])
    want = Fraction(1, 3) * (1 + Fraction(2, 3) + Fraction(3, 5))
    assert want == Fraction(34, 45)
    assert average_precision(scores, is_tp, 3) == pytest.approx(float(want), abs=1e-12)

    # Perfect ranking: 1.0; every ground truth missed or no detections: 0.0.
    assert average_precision([0.9, 0.8, 0.1], [True, True, False], 2) == 1.0
    assert average_precision([0.9, 0.8], [False, False], 2) == 0.0
    assert average_precision([], [], 4) == 0.0
    # Half the objects found, each at precision 1: AP = recall = 1/2.
    assert average_precision([0.9], [True], 2) == 0.5
    # No ground truth: undefined.
    assert math.isnan(average_precision([0.9], [False], 0))


def test_average_precision_errors_are_clear():
    with pytest.raises(ValueError, match=r"scores \(K,\) and is_true_positive \(K,\)"):
        average_precision([0.1, 0.2], [True], 1)
    with pytest.raises(ValueError, match="at most once"):
        average_precision([0.1, 0.2], [True, True], 1)
    with pytest.raises(ValueError, match="non-negative int"):
        average_precision([0.1], [True], -1)


def test_mean_average_precision_hand_computed():
    # Class 0 reproduces the hand case above across two images (3 ground truths):
    #   image 0 ground truths A, B; image 1 ground truth C.
    #   0.9 on A (TP), 0.8 on A again (duplicate: FP), 0.7 on C (TP), 0.6 on background (FP),
    #   0.5 on B (TP)  ->  TP FP TP FP TP  ->  AP = 34/45.
    # Class 1: one object, found exactly  ->  AP = 1. Its box also covers A, but a detection
    #   of the wrong class never matches.
    # Class 2: no ground truth anywhere -> NaN, excluded from the mean (its false positive
    #   does not count).  mAP = (34/45 + 1) / 2 = 79/90.
    a, b, c = [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]
    near_a = [0, 0, 10, 11]  # IoU with A: 100/110 >= 0.5
    ground_truths = [
        (np.array([a, b, [0, 0, 10, 10]]), np.array([0, 0, 1])),
        (np.array([c]), np.array([0])),
    ]
    detections = [
        (
            np.array([a, near_a, [50, 50, 60, 60], b, [0, 0, 10, 10], [40, 40, 45, 45]]),
            np.array([0.9, 0.8, 0.6, 0.5, 0.95, 0.3]),
            np.array([0, 0, 0, 0, 1, 2]),
        ),
        (np.array([[0, 0, 9, 10]]), np.array([0.7]), np.array([0])),  # IoU 0.9 with C
    ]
    m, per_class = mean_average_precision(detections, ground_truths, num_classes=3)
    np.testing.assert_allclose(per_class[:2], [34 / 45, 1.0], atol=1e-12)
    assert math.isnan(per_class[2])
    assert m == pytest.approx(float(Fraction(79, 90)), abs=1e-12)

    # At IoU 0.95 the 0.7 detection (IoU 0.9 with C) becomes a false positive:
    #   TP FP FP FP TP -> precision 1, 1/2, 1/3, 1/4, 2/5; envelope at the TPs: 1 and 2/5;
    #   AP = 1/3 * (1 + 2/5) = 7/15.
    _, per_class = mean_average_precision(detections, ground_truths, 3, iou_threshold=0.95)
    assert per_class[0] == pytest.approx(7 / 15, abs=1e-12)


def test_mean_average_precision_perfect_none_and_duplicates():
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], np.float32)
    classes = np.array([0, 1, 1])
    truths = [(boxes, classes), (boxes[:1], classes[:1])]
    perfect = [(boxes, np.array([0.9, 0.8, 0.7]), classes), (boxes[:1], [0.5], [0])]
    m, per_class = mean_average_precision(perfect, truths, num_classes=2)
    assert m == 1.0
    np.testing.assert_array_equal(per_class, [1.0, 1.0])

    empty = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))] * 2
    m, per_class = mean_average_precision(empty, truths, num_classes=2)
    assert m == 0.0
    np.testing.assert_array_equal(per_class, [0.0, 0.0])

    # Two objects; the first is found twice (IoU 0.9801 / 1.0199 between the two detections).
    # The higher score is the TP, the duplicate a FP: TP FP TP -> precision 1, 1/2, 2/3;
    # envelope at the TPs 1 and 2/3 -> AP = (1 + 2/3) / 2 = 5/6 (it would be 1 without it).
    two = [(boxes[:2], [0, 0])]
    dets = np.stack([boxes[0], boxes[0] + 0.01, boxes[1]])
    _, per_class = mean_average_precision([(dets, [0.9, 0.8, 0.7], [0, 0, 0])], two, 1)
    assert per_class[0] == pytest.approx(5 / 6, abs=1e-12)
    # A box that overlaps too little (IoU 0.49 / 1.51 < 0.5) is a miss: FP then TP -> 1/2.
    shifted = np.array([[0.3, 0.3, 1.3, 1.3], [0, 0, 1, 1]], np.float32)
    _, per_class = mean_average_precision([(shifted, [0.9, 0.8], [0, 0])], [(boxes[:1], [0])], 1)
    assert per_class[0] == 0.5

    # A detection overlapping two objects takes the best still-unmatched one, so two
    # detections find both objects.
    pair = np.array([[0, 0, 1, 1], [0, 0.2, 1, 1.2]], np.float32)
    dets = np.array([[0, 0.1, 1, 1.1], [0, 0.1, 1, 1.1]], np.float32)  # IoU 0.9/1.1 with each
    _, per_class = mean_average_precision([(dets, [0.9, 0.8], [0, 0])], [(pair, [0, 0])], 1)
    assert per_class[0] == 1.0

    # No ground truth at all: NaN everywhere.
    m, per_class = mean_average_precision([(boxes, [0.9, 0.8, 0.7], classes)], [([], [])], 2)
    assert math.isnan(m) and np.all(np.isnan(per_class))


def test_mean_average_precision_errors_are_clear():
    truth = [(np.zeros((1, 4)), [0])]
    with pytest.raises(ValueError, match="same images"):
        mean_average_precision([], truth, 1)
    with pytest.raises(ValueError, match=r"detections\[0\]: boxes must have shape \(K, 4\)"):
        mean_average_precision([(np.zeros((1, 5)), [0.5], [0])], truth, 1)
    with pytest.raises(ValueError, match=r"ground_truths\[0\]: classes must be integers"):
        mean_average_precision([(np.zeros((1, 4)), [0.5], [0])], [(np.zeros((1, 4)), [3])], 2)
    with pytest.raises(ValueError, match=r"scores must have shape \(1,\)"):
        mean_average_precision([(np.zeros((1, 4)), [0.5, 0.1], [0])], truth, 1)
