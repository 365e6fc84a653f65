"""Single-shot detection on a grid (YOLO-style cell offsets, no anchors): targets, loss, decoding,
and the `Detection` task (`config.task = "detection"`) that trains and evaluates it.

The functions are pure jax.numpy on fixed shapes (jittable, vmappable), except the mAP
evaluation, which runs in NumPy on the host over ragged per-image lists.

Conventions:
  boxes: (..., K, 4) normalized (ymin, xmin, ymax, xmax) in [0, 1], K objects padded to a fixed
    count; classes: (..., K) int32, -1 in padding slots (so `valid = classes >= 0`).
  predictions: (B, G, G, 5 + C) raw model outputs, channels [objectness logit, ty, tx, th, tw,
    class logits] (`cnnjax.models.detector.GridDetector`).

The object whose box centre lies in cell (i, j) of a G×G grid is that cell's target: objectness
1, its class, the centre's offset inside the cell (cy * G - i, cx * G - j) in [0, 1) predicted
through a sigmoid, and the log of its height and width (fractions of the image side). Every other
cell is a negative for objectness only. If two objects' centres fall in one cell, the one in the
later slot wins (shapes draws later objects on top; the other counts as missed).
"""

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import models
from cnnjax.errors import UserError
from cnnjax.models.detector import STRIDE
from cnnjax.ops import boxes as box_ops
from cnnjax.tasks.base import Task, model_kwargs, safe_div

_MIN_SIZE = 1e-3  # Floor of a box side before the log: padding boxes are all zeros.


def encode_targets(boxes: jax.Array, classes: jax.Array, grid: int) -> dict[str, jax.Array]:
    """Targets of one image on a `grid` x `grid` grid.

    boxes: (K, 4) normalized; classes: (K,) int, -1 for padding.
    Returns {"objectness": float32 (G, G) in {0, 1}, "classes": int32 (G, G) (0 on negative
    cells), "offsets": float32 (G, G, 2) centre offsets in the cell, "log_sizes": float32
    (G, G, 2) log(height), log(width)}; offsets and log_sizes are 0 on negative cells.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    classes = jnp.asarray(classes, jnp.int32)
    valid = classes >= 0
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 * grid  # (K, 2) in cell units
    cell = jnp.clip(jnp.floor(centre), 0, grid - 1).astype(jnp.int32)
    offsets = centre - cell
    log_sizes = jnp.log(jnp.maximum(boxes[:, 2:] - boxes[:, :2], _MIN_SIZE))
    flat = cell[:, 0] * grid + cell[:, 1]
    k = boxes.shape[0]
    # owner[c] = 1 + the last valid slot whose centre is in cell c, 0 if none.
    hits = (flat[:, None] == jnp.arange(grid * grid)[None, :]) & valid[:, None]  # (K, G*G)
    owner = jnp.max(jnp.where(hits, jnp.arange(1, k + 1)[:, None], 0), axis=0)
    positive = owner > 0
    slot = jnp.maximum(owner - 1, 0)

    def take(values):
        picked = values[slot]
        mask = positive.reshape(positive.shape + (1,) * (picked.ndim - 1))
        return jnp.where(mask, picked, 0).reshape((grid, grid) + values.shape[1:])

    return {
        "objectness": positive.astype(jnp.float32).reshape(grid, grid),
        "classes": take(jnp.maximum(classes, 0)).astype(jnp.int32),
        "offsets": take(offsets).astype(jnp.float32),
        "log_sizes": take(log_sizes).astype(jnp.float32),
    }


def encode_batch(boxes: jax.Array, classes: jax.Array, grid: int) -> dict[str, jax.Array]:
    """`encode_targets` over a batch: boxes (B, K, 4), classes (B, K) -> (B, G, G, ...)."""
    return jax.vmap(lambda b, c: encode_targets(b, c, grid))(boxes, classes)


def split_predictions(predictions: jax.Array) -> dict[str, jax.Array]:
    """(..., 5 + C) raw outputs -> {"objectness" (...), "offsets" (..., 2) in (0, 1),
    "log_sizes" (..., 2), "class_logits" (..., C)}."""
    return {
        "objectness": predictions[..., 0],
        "offsets": jax.nn.sigmoid(predictions[..., 1:3]),
        "log_sizes": predictions[..., 3:5],
        "class_logits": predictions[..., 5:],
    }


def detection_loss(
    predictions: jax.Array,
    boxes: jax.Array,
    classes: jax.Array,
    *,
    objectness_weight: float = 1.0,
    class_weight: float = 1.0,
    box_weight: float = 5.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-image loss of raw predictions (B, G, G, 5 + C) against padded objects.

    boxes: (B, K, 4) normalized; classes: (B, K), -1 for padding.
    For each image, with P = its number of positive cells:
      loss = (objectness_weight * sum over all cells of BCE(objectness)
              + sum over positive cells of (class_weight * CE(class)
                                            + box_weight * L1(offsets, log sizes)))
             / max(P, 1).
    Normalizing by the number of objects (as FCOS and RetinaNet do) keeps the scale of an image
    with four objects like one with one; an image without objects is its objectness term alone.
    Returns (loss (B,), parts) with parts {"objectness", "classes", "box"}: (B,) each, already
    weighted and normalized (they sum to the loss).
    """
    grid = predictions.shape[1]
    targets = encode_batch(boxes, classes, grid)
    pred = split_predictions(predictions.astype(jnp.float32))
    positive = targets["objectness"]
    num_pos = jnp.maximum(jnp.sum(positive, axis=(1, 2)), 1.0)
    bce = _sigmoid_bce(pred["objectness"], positive)
    log_probs = jax.nn.log_softmax(pred["class_logits"], axis=-1)
    ce = -jnp.take_along_axis(log_probs, targets["classes"][..., None], axis=-1)[..., 0]
    l1 = jnp.sum(jnp.abs(pred["offsets"] - targets["offsets"]), axis=-1)
    l1 += jnp.sum(jnp.abs(pred["log_sizes"] - targets["log_sizes"]), axis=-1)
    per_image = lambda x: jnp.sum(x, axis=(1, 2)) / num_pos
    parts = {
        "objectness": objectness_weight * per_image(bce),
        "classes": class_weight * per_image(ce * positive),
        "box": box_weight * per_image(l1 * positive),
    }
    return parts["objectness"] + parts["classes"] + parts["box"], parts


def _sigmoid_bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Binary cross-entropy with logits, stable for large |logits|."""
    return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def decode(predictions: jax.Array) -> dict[str, jax.Array]:
    """Every cell's detection: raw predictions (B, G, G, 5 + C) ->
    {"boxes": (B, G*G, 4) normalized and clipped to [0, 1], "scores": (B, G*G) objectness
    probability times the top class probability, "classes": int32 (B, G*G)}."""
    b, gh, gw, _ = predictions.shape
    pred = split_predictions(predictions.astype(jnp.float32))
    rows = jnp.arange(gh, dtype=jnp.float32)[:, None]
    cols = jnp.arange(gw, dtype=jnp.float32)[None, :]
    cy = (rows + pred["offsets"][..., 0]) / gh
    cx = (cols + pred["offsets"][..., 1]) / gw
    # exp of a log size: clip first so that an untrained head cannot overflow.
    half = jnp.exp(jnp.clip(pred["log_sizes"], -10.0, 2.0)) / 2
    boxes = jnp.stack([cy - half[..., 0], cx - half[..., 1], cy + half[..., 0], cx + half[..., 1]])
    boxes = jnp.clip(jnp.moveaxis(boxes, 0, -1), 0.0, 1.0)
    class_probs = jax.nn.softmax(pred["class_logits"], axis=-1)
    scores = jax.nn.sigmoid(pred["objectness"]) * jnp.max(class_probs, axis=-1)
    return {
        "boxes": boxes.reshape(b, gh * gw, 4),
        "scores": scores.reshape(b, gh * gw),
        "classes": jnp.argmax(class_probs, axis=-1).astype(jnp.int32).reshape(b, gh * gw),
    }


def postprocess(
    detections: dict[str, jax.Array],
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.01,
    max_detections: int = 20,
    class_agnostic: bool = False,
) -> dict[str, jax.Array]:
    """Non-maximum suppression at a fixed size (`cnnjax.ops.batched_nms`), per image.

    detections: `decode`'s output, (B, N, ...). Per-class by default: boxes are shifted by 2 ×
    class before the IoU test so that boxes of different classes never suppress one another.
    Returns {"boxes" (B, M, 4), "scores" (B, M), "classes" (B, M), "valid" bool (B, M)} with
    M = max_detections, by descending score; invalid slots have boxes 0, score 0, class -1.
    """
    boxes, scores, classes = detections["boxes"], detections["scores"], detections["classes"]
    shifted = boxes if class_agnostic else boxes + 2.0 * classes[..., None].astype(boxes.dtype)
    indices, valid = box_ops.batched_nms(
        shifted, scores, iou_threshold, max_detections, score_threshold
    )
    safe = jnp.maximum(indices, 0)
    take = lambda x: jnp.take_along_axis(x, safe.reshape(safe.shape + (1,) * (x.ndim - 2)), 1)
    return {
        "boxes": jnp.where(valid[..., None], take(boxes), 0.0),
        "scores": jnp.where(valid, take(scores), 0.0),
        "classes": jnp.where(valid, take(classes), -1),
        "valid": valid,
    }


def detect(predictions: jax.Array, **nms_kwargs) -> dict[str, jax.Array]:
    """`postprocess(decode(predictions))`: the detector's final (B, M) detections."""
    return postprocess(decode(predictions), **nms_kwargs)


def mean_average_precision(
    detections: dict[str, np.ndarray],
    boxes: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    iou_threshold: float = 0.5,
) -> tuple[float, np.ndarray]:
    """VOC all-point mAP@`iou_threshold` of fixed-size detections against padded ground truth.

    detections: `postprocess`'s output for N images ((N, M, ...) arrays, with "valid");
    boxes: (N, K, 4); classes: (N, K), -1 for padding. Returns (mAP, per-class AP) as
    `cnnjax.ops.mean_average_precision`.
    """
    det = {k: np.asarray(v) for k, v in detections.items()}
    boxes, classes = np.asarray(boxes), np.asarray(classes)
    per_image_det, per_image_gt = [], []
    for i in range(len(classes)):
        keep = det["valid"][i].astype(bool)
        per_image_det.append(tuple(det[k][i][keep] for k in ("boxes", "scores", "classes")))
        real = classes[i] >= 0
        per_image_gt.append((boxes[i][real], classes[i][real]))
    result, per_class = box_ops.mean_average_precision(
        per_image_det, per_image_gt, num_classes, iou_threshold
    )
    return result, per_class


# ---------------------------------------------------------------------------------------------
# The task (`config.task = "detection"`, `cnnjax.tasks.base` contract).

_LOSS_PARTS = ("objectness", "classes", "box")
_TRAIN_KEYS = ("loss_sum", "objectness_sum", "classes_sum", "box_sum", "correct", "positives")


def _settings(config) -> dict:
    dc = config.detection
    return {
        "loss": {
            "objectness_weight": float(dc.objectness_weight),
            "class_weight": float(dc.class_weight),
            "box_weight": float(dc.box_weight),
        },
        "nms": {
            "iou_threshold": float(dc.nms_iou_threshold),
            "score_threshold": float(dc.score_threshold),
            "max_detections": int(dc.max_detections),
            "class_agnostic": bool(dc.class_agnostic_nms),
        },
        "map_iou": float(dc.map_iou_threshold),
    }


def _class_correct(predictions, boxes, classes):
    """Per image (B,): correct class arg-maxes at the cells holding an object, and those cells."""
    targets = encode_batch(boxes, classes, predictions.shape[1])
    pred = jnp.argmax(predictions[..., 5:], axis=-1)
    positive = targets["objectness"]
    return jnp.sum((pred == targets["classes"]) * positive, (1, 2)), jnp.sum(positive, (1, 2))


class Detection(Task):
    """Targets: "boxes", "classes" (padded with -1) and "index" (the example's position in its
    split, which lets `eval_sums` place each image's detections so that summing batches gives
    every test image's detections exactly). Config: `detection.*` (experiments/base.py).

    Model: the registered `config.model.name` (default "grid_detector") with raw per-cell
    outputs (B, G, G, 5 + classes). Train metrics: loss and its parts, and `class_accuracy`
    (the class arg-max at the cells that hold an object). Eval: the same losses, `map50`
    (VOC all-point mAP at `detection.map_iou_threshold`, 0.5) and per-class `ap50_<name>`.
    """

    name = "detection"
    target_keys = ("boxes", "classes", "index")
    progress_metric = "class_accuracy"

    def __init__(self, config, data):
        super().__init__(config, data)
        self.require_targets()
        self.settings = _settings(config)
        if self.settings["nms"]["max_detections"] < 1:
            raise UserError("detection.max_detections must be >= 1.")
        h, w = data.image_shape[:2]
        if config.model.name == "grid_detector" and (h % STRIDE or w % STRIDE):
            # Cells must tile the image exactly: targets place centres on a grid of 1/G.
            raise UserError(
                f"grid_detector needs image sides that are multiples of {STRIDE}, got {h}x{w}: "
                f"set --config.data.image_size to one (e.g. {max(STRIDE, h // STRIDE * STRIDE)})."
            )

    def build_model(self, dtype):
        name = self.config.model.name
        return models.get_model(
            name, num_classes=self.data.num_classes, dtype=dtype, **model_kwargs(self.config)
        )

    def loss(self, outputs, batch):
        per_image, parts = detection_loss(
            outputs, batch["boxes"], batch["classes"], **self.settings["loss"]
        )
        correct, positives = _class_correct(
            jax.lax.stop_gradient(outputs), batch["boxes"], batch["classes"]
        )
        sums = {
            "loss_sum": jnp.sum(per_image),
            **{f"{k}_sum": jnp.sum(parts[k]) for k in _LOSS_PARTS},
            "correct": jnp.sum(correct),
            "positives": jnp.sum(positives),
            "count": jnp.asarray(per_image.shape[0], jnp.float32),
        }
        return jnp.mean(per_image), sums

    def zero_train_sums(self):
        return {k: jnp.zeros((), jnp.float32) for k in (*_TRAIN_KEYS, "count")}

    def train_metrics(self, host_sums):
        count = max(float(host_sums["count"]), 1.0)
        out = {"loss": float(host_sums["loss_sum"]) / count}
        out.update({f"{k}_loss": float(host_sums[f"{k}_sum"]) / count for k in _LOSS_PARTS})
        out["class_accuracy"] = safe_div(host_sums["correct"], host_sums["positives"])
        return out

    def eval_sums(self, outputs, batch):
        weight = batch["weight"].astype(jnp.float32)
        per_image, parts = detection_loss(
            outputs, batch["boxes"], batch["classes"], **self.settings["loss"]
        )
        correct, positives = _class_correct(outputs, batch["boxes"], batch["classes"])
        det = detect(outputs, **self.settings["nms"])
        # Scatter-add each image's fixed-size detections into its row of a (num_test, M, ...)
        # array: padding rows add zeros, so the sum over batches is every image's detections.
        n, index = self.data.num_test, batch["index"]

        def place(values):
            values = values.astype(jnp.float32)
            w = weight.reshape((-1,) + (1,) * (values.ndim - 1))
            return jnp.zeros((n, *values.shape[1:]), jnp.float32).at[index].add(values * w)

        return {
            "loss_sum": jnp.sum(per_image * weight),
            **{f"{k}_sum": jnp.sum(parts[k] * weight) for k in _LOSS_PARTS},
            "correct": jnp.sum(correct * weight),
            "positives": jnp.sum(positives * weight),
            "count": jnp.sum(weight),
            "det_boxes": place(det["boxes"]),
            "det_scores": place(det["scores"]),
            "det_classes": place(det["classes"] + 1),  # 0: empty slot.
        }

    def finalize(self, sums):
        sums = jax.device_get(sums)
        count = float(sums["count"])
        detections = {
            "boxes": np.asarray(sums["det_boxes"]),
            "scores": np.asarray(sums["det_scores"]),
            "classes": np.rint(sums["det_classes"]).astype(np.int32) - 1,
        }
        detections["valid"] = detections["classes"] >= 0
        truth = self.data.test_targets
        map50, per_class = mean_average_precision(
            detections,
            truth["boxes"],
            truth["classes"],
            self.data.num_classes,
            self.settings["map_iou"],
        )
        scalars = {
            "loss": safe_div(sums["loss_sum"], count),
            **{f"{k}_loss": safe_div(sums[f"{k}_sum"], count) for k in _LOSS_PARTS},
            "class_accuracy": safe_div(sums["correct"], sums["positives"]),
            "map50": float(map50),
            **{
                f"ap50_{name}": float(ap)
                for name, ap in zip(self.data.class_names, per_class, strict=True)
            },
            "detections_per_image": float(detections["valid"].sum()) / max(count, 1.0),
            "num_examples": int(count),
        }
        return scalars, {"per_class_ap": per_class, **detections}

    def eval_line(self, scalars):
        return (
            f"loss={scalars['loss']:.4f} map50={scalars['map50']:.4f} "
            f"class_accuracy={scalars['class_accuracy']:.4f}"
        )

    def report_lines(self, scalars, arrays):
        lines = [
            f"  loss          {scalars['loss']:.4f} (objectness {scalars['objectness_loss']:.4f}, "
            f"classes {scalars['classes_loss']:.4f}, box {scalars['box_loss']:.4f})",
            f"  {'mAP@' + format(self.settings['map_iou'], 'g'):<14}{scalars['map50']:.4f} "
            "(VOC all-point)",
            f"  class acc.    {scalars['class_accuracy']:.4f} (at cells holding an object)",
            "",
            "  class         AP",
        ]
        for name, ap in zip(self.data.class_names, arrays["per_class_ap"], strict=True):
            lines.append(f"  {name:<12}  {ap:.4f}")
        return lines

    def pictures(self, model, variables, sample, path, tag):
        from cnnjax.viz import detections as viz_detections

        n = int(self.config.viz.num_images)
        images = sample["image"][:n]
        x = (images.astype(np.float32) / 255.0 - self.data.mean) / self.data.std
        nms = self.settings["nms"]

        @jax.jit
        def run(variables, x):
            before = decode(model.apply(variables, x, train=False))
            return before, postprocess(before, **nms)

        before, after = jax.device_get(run(variables, x))
        viz_detections.detections_figure(
            images,
            before,
            after,
            self.data.class_names,
            truth_boxes=sample["boxes"][:n],
            truth_classes=sample["classes"][:n],
            path=path("detections"),
            title=f"{tag}: every cell's box, then the boxes NMS keeps (dashed: truth)",
        )
