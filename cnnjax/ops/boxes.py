"""Bounding boxes as plain functions on arrays (no Flax): IoU, non-maximum suppression, mAP.

A box is the last axis of size 4 as (ymin, xmin, ymax, xmax), in any units (pixels or
normalized coordinates), with ymin <= ymax and xmin <= xmax for a proper box. A box with zero
or negative height or width is *empty*: its area is 0 and its IoU with every box (itself
included) is 0, never NaN.

- `box_area`, `box_iou`, `pairwise_iou`: jax.numpy, broadcasting like jnp arithmetic.
- `nms`, `batched_nms`: greedy non-maximum suppression with a fixed output size, so it runs
  under `jax.jit` and `jax.vmap` (TensorFlow's `non_max_suppression_padded` convention).
- `average_precision`, `mean_average_precision`: PASCAL VOC 2010+ all-point interpolated AP
  and detection mAP, in NumPy (evaluation runs on the host, over ragged per-image lists).
"""

import functools
import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

# ---------------------------------------------------------------------------------------------
# Area and IoU.


def _boxes(boxes: ArrayLike, name: str) -> jax.Array:
    boxes = jnp.asarray(boxes)
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(
            f"{name} must have shape (..., 4) as (ymin, xmin, ymax, xmax), got shape {boxes.shape}."
        )
    return boxes


def _float(*arrays: jax.Array) -> jnp.dtype:
    # Integer pixel boxes are measured in float32 rather than rejected.
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.dtype(jnp.float32)


def box_area(boxes: ArrayLike) -> jax.Array:
    """Area of boxes (..., 4) as (ymin, xmin, ymax, xmax) -> (...).

    Empty boxes (zero or negative height or width) have area 0.
    """
    boxes = _boxes(boxes, "boxes")
    return _box_area(boxes.astype(_float(boxes)))


def _box_area(boxes: jax.Array) -> jax.Array:
    height = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0)
    width = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0)
    return height * width


def box_iou(a: ArrayLike, b: ArrayLike) -> jax.Array:
    """Intersection over union of boxes `a` (..., 4) and `b` (..., 4), broadcast like `a + b`.

    The leading axes broadcast as in jnp arithmetic: a (N, 1, 4) and b (1, M, 4) give (N, M),
    a (4,) and b (M, 4) give (M,). Returns values in [0, 1]: 0 for disjoint boxes, for boxes
    that only touch, and for any pair involving an empty box (no NaN, finite gradients).
    Integer boxes are measured in float32.
    """
    a, b = _boxes(a, "a"), _boxes(b, "b")
    try:
        np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except ValueError:
        raise ValueError(
            f"box_iou cannot broadcast boxes of shapes {a.shape} and {b.shape}: their leading "
            "axes must broadcast like jnp arithmetic (e.g. (N, 1, 4) with (1, M, 4))."
        ) from None
    dtype = _float(a, b)
    return _box_iou(a.astype(dtype), b.astype(dtype))


@jax.jit
def _box_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    lo = jnp.maximum(a[..., :2], b[..., :2])
    hi = jnp.minimum(a[..., 2:], b[..., 2:])
    inter = jnp.prod(jnp.maximum(hi - lo, 0), axis=-1)
    union = _box_area(a) + _box_area(b) - inter
    # union > 0 whenever inter > 0; the inner where keeps 0 / 0 out of the gradient too.
    positive = union > 0
    return jnp.where(positive, inter / jnp.where(positive, union, 1), 0)


def pairwise_iou(a: ArrayLike, b: ArrayLike) -> jax.Array:
    """IoU of every box of `a` (N, 4) with every box of `b` (M, 4): (N, M).

    `pairwise_iou(a, b)[i, j] == box_iou(a[i], b[j])`.
    """
    a, b = _boxes(a, "a"), _boxes(b, "b")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(
            f"pairwise_iou needs a (N, 4) and b (M, 4), got shapes {a.shape} and {b.shape}; "
            "use box_iou to broadcast other shapes."
        )
    return box_iou(a[:, None, :], b[None, :, :])


# ---------------------------------------------------------------------------------------------
# Non-maximum suppression.


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _check_nms(
    boxes: ArrayLike, scores: ArrayLike, max_outputs: int, batched: bool
) -> tuple[jax.Array, jax.Array]:
    boxes, scores = _boxes(boxes, "boxes"), jnp.asarray(scores)
    lead = "(B, N" if batched else "(N"
    if boxes.ndim != (3 if batched else 2) or scores.shape != boxes.shape[:-1]:
        raise ValueError(
            f"{'batched_nms' if batched else 'nms'} needs boxes {lead}, 4) and scores {lead}), "
            f"got shapes {boxes.shape} and {scores.shape}."
        )
    if not _is_int(max_outputs, 1):
        raise ValueError(f"max_outputs must be a positive int, got {max_outputs!r}.")
    return boxes.astype(_float(boxes)), scores.astype(_float(scores))


def nms(
    boxes: ArrayLike,
    scores: ArrayLike,
    iou_threshold: float = 0.5,
    max_outputs: int = 100,
    score_threshold: float = -math.inf,
) -> tuple[jax.Array, jax.Array]:
    """Greedy non-maximum suppression with a fixed output size (jittable).

    Repeatedly keeps the highest-scoring remaining box and removes every remaining box whose
    IoU with it is *greater than* `iou_threshold`, until `max_outputs` boxes are kept or none
    remain. Only boxes with score *greater than* `score_threshold` take part (NaN scores never
    do). Equal scores are taken in index order (the lower index first). Conventions as
    TensorFlow's `tf.image.non_max_suppression` and torchvision's `nms`: an empty box has IoU
    0 with everything, so it neither suppresses nor is suppressed.

    boxes: (N, 4) as (ymin, xmin, ymax, xmax); scores: (N,).
    Returns `(indices, valid)`, both (max_outputs,): `indices` int32 into `boxes`, in the order
    kept (descending score), padded with -1; `valid` bool, True for the kept slots (always a
    prefix). `boxes[indices[valid]]` are the kept boxes (outside jit).

    `iou_threshold` and `score_threshold` may be traced values: changing them does not
    recompile. Each of `max_outputs` steps costs O(N) (one row of IoUs), so N in the tens of
    thousands is fine and no (N, N) matrix is built.
    """
    boxes, scores = _check_nms(boxes, scores, max_outputs, batched=False)
    if boxes.shape[0] == 0:
        return jnp.full((max_outputs,), -1, jnp.int32), jnp.zeros((max_outputs,), bool)
    return _nms(boxes, scores, iou_threshold, score_threshold, max_outputs=max_outputs)


def batched_nms(
    boxes: ArrayLike,
    scores: ArrayLike,
    iou_threshold: float = 0.5,
    max_outputs: int = 100,
    score_threshold: float = -math.inf,
) -> tuple[jax.Array, jax.Array]:
    """`nms` on each of B images independently (`jax.vmap`), with shared thresholds.

    boxes: (B, N, 4); scores: (B, N). Returns `(indices, valid)`, both (B, max_outputs):
    row b is `nms(boxes[b], scores[b], ...)`. (Batch over images, not torchvision's
    class-aware `batched_nms`: for per-class suppression, offset each class's boxes so that
    boxes of different classes cannot overlap, or run `nms` per class.)
    """
    boxes, scores = _check_nms(boxes, scores, max_outputs, batched=True)
    if boxes.shape[1] == 0:
        shape = (boxes.shape[0], max_outputs)
        return jnp.full(shape, -1, jnp.int32), jnp.zeros(shape, bool)
    return _batched_nms(boxes, scores, iou_threshold, score_threshold, max_outputs=max_outputs)


def _nms_one(
    boxes: jax.Array,
    scores: jax.Array,
    iou_threshold: ArrayLike,
    score_threshold: ArrayLike,
    *,
    max_outputs: int,
) -> tuple[jax.Array, jax.Array]:
    """Unchecked `nms` of boxes (N, 4), N >= 1, and float scores (N,)."""
    candidates = scores > score_threshold  # False for NaN scores.
    neg_inf = jnp.array(-jnp.inf, scores.dtype)

    def more(state):
        count, candidates, _ = state
        return (count < max_outputs) & jnp.any(candidates)

    def keep_next(state):
        count, candidates, indices = state
        # argmax returns the first maximum: ties go to the lower index. A candidate's score is
        # > score_threshold >= -inf, so a masked -inf never ties with one.
        best = jnp.argmax(jnp.where(candidates, scores, neg_inf))
        indices = indices.at[count].set(best.astype(jnp.int32))
        suppressed = _box_iou(boxes[best], boxes) > iou_threshold
        # The kept box leaves explicitly: an empty box has IoU 0 with itself.
        candidates = candidates & ~suppressed & (jnp.arange(boxes.shape[0]) != best)
        return count + 1, candidates, indices

    start = (jnp.int32(0), candidates, jnp.full((max_outputs,), -1, jnp.int32))
    _, _, indices = lax.while_loop(more, keep_next, start)
    return indices, indices >= 0


# One compiled program per (shape, max_outputs); the thresholds are traced arguments.
_nms = jax.jit(_nms_one, static_argnames="max_outputs")


@functools.partial(jax.jit, static_argnames="max_outputs")
def _batched_nms(
    boxes: jax.Array,
    scores: jax.Array,
    iou_threshold: ArrayLike,
    score_threshold: ArrayLike,
    *,
    max_outputs: int,
) -> tuple[jax.Array, jax.Array]:
    one = functools.partial(_nms_one, max_outputs=max_outputs)
    return jax.vmap(one, in_axes=(0, 0, None, None))(boxes, scores, iou_threshold, score_threshold)


# ---------------------------------------------------------------------------------------------
# Average precision (NumPy, on the host).


def average_precision(
    scores: ArrayLike, is_true_positive: ArrayLike, num_ground_truth: int
) -> float:
    """PASCAL VOC (2010+) all-point interpolated average precision of one class.

    scores: (K,) confidence of each detection; is_true_positive: (K,) bool, whether that
    detection matched a ground truth (see `mean_average_precision`); num_ground_truth: the
    number of ground-truth objects of the class (recall's denominator; missed objects count).

    Detections are ranked by descending score (equal scores keep their given order). At rank
    k, precision = TP(k) / k and recall = TP(k) / num_ground_truth. The precision envelope
    p(r) = max precision at any recall >= r makes the curve monotone, and AP is the area under
    that step curve: the sum over true positives of envelope precision / num_ground_truth.

    Returns a Python float in [0, 1]: 0.0 when there are no detections (or no true positive);
    NaN when num_ground_truth == 0 (AP is undefined without anything to find).
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_true_positive = np.asarray(is_true_positive)
    if scores.ndim != 1 or is_true_positive.shape != scores.shape:
        raise ValueError(
            f"average_precision needs scores (K,) and is_true_positive (K,), got shapes "
            f"{scores.shape} and {is_true_positive.shape}."
        )
    if not _is_int(num_ground_truth, 0):
        raise ValueError(f"num_ground_truth must be a non-negative int, got {num_ground_truth!r}.")
    is_true_positive = is_true_positive.astype(bool)
    if is_true_positive.sum() > num_ground_truth:
        raise ValueError(
            f"{int(is_true_positive.sum())} true positives but only {num_ground_truth} ground "
            "truths: each ground truth can be matched at most once."
        )
    if num_ground_truth == 0:
        return math.nan
    if scores.size == 0:
        return 0.0
    tp = is_true_positive[np.argsort(-scores, kind="stable")]
    true_positives = np.cumsum(tp)
    precision = true_positives / np.arange(1, tp.size + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    # Recall rises by 1 / num_ground_truth at each true positive and is flat elsewhere.
    return float(np.sum(envelope[tp]) / num_ground_truth)


def _np_pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NumPy `pairwise_iou`: a (N, 4), b (M, 4) -> (N, M); 0 for empty boxes."""
    a, b = a[:, None, :], b[None, :, :]
    lo, hi = np.maximum(a[..., :2], b[..., :2]), np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[..., 2:] - x[..., :2], 0, None), axis=-1)
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _classes(classes: ArrayLike, count: int, num_classes: int, what: str) -> np.ndarray:
    classes = np.asarray(classes)
    if classes.shape != (count,):
        raise ValueError(f"{what}: classes must have shape ({count},), got {classes.shape}.")
    if count and (
        not np.all(np.isfinite(classes))
        or not np.all(classes == np.round(classes))
        or classes.min() < 0
        or classes.max() >= num_classes
    ):
        raise ValueError(
            f"{what}: classes must be integers in [0, {num_classes}), got {classes.tolist()}."
        )
    return classes.astype(np.int64)


def _np_boxes(boxes: ArrayLike, what: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(
            f"{what}: boxes must have shape (K, 4) as (ymin, xmin, ymax, xmax), got shape "
            f"{boxes.shape}."
        )
    return boxes


def mean_average_precision(
    detections: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike]],
    ground_truths: Sequence[tuple[ArrayLike, ArrayLike]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> tuple[float, np.ndarray]:
    """Detection mAP@`iou_threshold`: the mean over classes of `average_precision`.

    detections: one `(boxes (K, 4), scores (K,), classes (K,))` per image (K may be 0; drop
    NMS padding first, e.g. `boxes[indices[valid]]`); ground_truths: one
    `(boxes (G, 4), classes (G,))` per image, in the same image order. Boxes as
    (ymin, xmin, ymax, xmax) in the same units; classes are ints in [0, num_classes).

    Matching, per image and per class: detections are taken by descending score (ties in
    given order); each is a true positive if some still-unmatched ground truth of its class
    has IoU >= `iou_threshold` with it, and then matches the one with the highest IoU (so
    each ground truth is matched at most once); otherwise it is a false positive. A second
    detection of an already-found object is therefore a false positive, as is a detection
    with the wrong class. (The VOC devkit instead only looks at the highest-IoU ground truth,
    matched or not; the two differ only when one detection overlaps several objects.)

    Returns `(mAP, per_class_ap)`: `per_class_ap` is float64 (num_classes,), NaN for a class
    with no ground truth in any image; `mAP` is the mean over the classes that have ground
    truth (those NaN classes are excluded, so false positives of a class absent from the data
    set do not count), NaN if no class has any.
    """
    if not _is_int(num_classes, 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}.")
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"detections and ground_truths must list the same images, got {len(detections)} "
            f"and {len(ground_truths)} entries."
        )
    scores_by_class = [[] for _ in range(num_classes)]
    hits_by_class = [[] for _ in range(num_classes)]
    num_ground_truth = np.zeros(num_classes, np.int64)
    for image, (detection, truth) in enumerate(zip(detections, ground_truths, strict=True)):
        if len(detection) != 3 or len(truth) != 2:
            raise ValueError(
                f"image {image}: detections entries must be (boxes, scores, classes) and "
                "ground_truths entries (boxes, classes)."
            )
        what = f"detections[{image}]"
        det_boxes = _np_boxes(detection[0], what)
        det_scores = np.asarray(detection[1], dtype=np.float64)
        if det_scores.shape != (len(det_boxes),):
            raise ValueError(
                f"{what}: scores must have shape ({len(det_boxes)},), got {det_scores.shape}."
            )
        det_classes = _classes(detection[2], len(det_boxes), num_classes, what)
        what = f"ground_truths[{image}]"
        gt_boxes = _np_boxes(truth[0], what)
        gt_classes = _classes(truth[1], len(gt_boxes), num_classes, what)
        num_ground_truth += np.bincount(gt_classes, minlength=num_classes)

        for c in np.unique(det_classes):
            mine = np.flatnonzero(det_classes == c)
            mine = mine[np.argsort(-det_scores[mine], kind="stable")]
            ious = _np_pairwise_iou(det_boxes[mine], gt_boxes[gt_classes == c])  # (k, g)
            matched = np.zeros(ious.shape[1], bool)
            hits = np.zeros(len(mine), bool)
            for i, row in enumerate(ious):
                row = np.where(matched, -np.inf, row)
                if row.size and row.max() >= iou_threshold:
                    matched[row.argmax()] = hits[i] = True
            scores_by_class[c].append(det_scores[mine])
            hits_by_class[c].append(hits)

    per_class = np.full(num_classes, np.nan)
    for c in range(num_classes):
        if num_ground_truth[c]:
            per_class[c] = average_precision(
                np.concatenate(scores_by_class[c] or [np.zeros(0)]),
                np.concatenate(hits_by_class[c] or [np.zeros(0, bool)]),
                int(num_ground_truth[c]),
            )
    present = ~np.isnan(per_class)
    return (float(per_class[present].mean()) if present.any() else math.nan), per_class
