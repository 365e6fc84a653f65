"""Semantic segmentation: a class per pixel (FCN-32s/16s/8s or any per-pixel model).

Targets: "mask" uint8 (N, H, W), values in [0, K) for the K classes of
`Dataset.mask_class_names`, and `segmentation.ignore_label` (255 by default) for pixels that
count nowhere (crop padding, unlabeled borders). Model: the registered `config.model.name`
with `num_classes=K`, mapping (B, H, W, C) to logits (B, H, W, K).

Loss: per-pixel softmax cross-entropy weighted by `segmentation.class_weights` (one per class;
empty = all 1), averaged over the weights of the non-ignored pixels (PyTorch's
`CrossEntropyLoss(weight=..., ignore_index=...)` convention).
Metrics: a K x K pixel confusion matrix (rows: truth, columns: prediction) summed exactly over
the test split, then pixel accuracy = trace / total, IoU_c = tp / (truth_c + predicted_c - tp)
and mean IoU over the classes that occur in the truth or the predictions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax import models
from cnnjax.errors import UserError
from cnnjax.tasks.base import Task, model_kwargs


def pixel_sums(logits, masks, weight, *, num_classes: int, ignore_label: int, class_weights):
    """Summed metrics of a batch. logits (B, H, W, K); masks int (B, H, W); weight (B,) (0:
    padding). Returns "loss_sum" (weighted pixel cross-entropy), "weight_sum" (its weights),
    "correct" and "pixels" (non-ignored), "count" (images) and int32 (K, K) "confusion"."""
    logits = logits.astype(jnp.float32)
    masks = masks.astype(jnp.int32)
    valid = (masks != ignore_label) & (masks >= 0) & (masks < num_classes)
    labels = jnp.where(valid, masks, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    w = valid.astype(jnp.float32) * weight[:, None, None]
    if class_weights is not None:
        w = w * jnp.asarray(class_weights, jnp.float32)[labels]
    pred = jnp.argmax(logits, axis=-1)
    counted = valid.astype(jnp.int32) * (weight[:, None, None] > 0)
    index = (labels * num_classes + pred).reshape(-1)
    confusion = jnp.zeros(num_classes * num_classes, jnp.int32).at[index].add(counted.reshape(-1))
    return {
        "loss_sum": jnp.sum(ce * w),
        "weight_sum": jnp.sum(w),
        "correct": jnp.sum((pred == labels) * counted).astype(jnp.float32),
        "pixels": jnp.sum(counted).astype(jnp.float32),
        "count": jnp.sum(weight),
        "confusion": confusion.reshape(num_classes, num_classes),
    }


def iou_from_confusion(confusion) -> dict:
    """Pixel accuracy, per-class IoU and mean IoU from a (K, K) confusion (rows: truth).

    A class absent from both truth and predictions has IoU NaN and is left out of the mean.
    """
    c = np.asarray(confusion, np.float64)
    tp = np.diag(c)
    union = c.sum(axis=0) + c.sum(axis=1) - tp
    iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)
    total = c.sum()
    return {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "iou": iou,
        "mean_iou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
    }


_TRAIN_KEYS = ("loss_sum", "weight_sum", "correct", "pixels", "count")


class Segmentation(Task):
    """Targets: "mask". Config: `segmentation.ignore_label`, `segmentation.class_weights`."""

    name = "segmentation"
    target_keys = ("mask",)
    progress_metric = "pixel_accuracy"

    def __init__(self, config, data):
        super().__init__(config, data)
        self.require_targets()
        self.class_names = tuple(data.mask_class_names) or tuple(
            str(i) for i in range(int(np.max(data.train_targets["mask"])) + 1)
        )
        self.num_classes = len(self.class_names)
        sc = config.segmentation
        self.ignore_label = int(sc.ignore_label)
        self.mask_fill = self.ignore_label
        weights = tuple(float(w) for w in sc.class_weights)
        if weights and len(weights) != self.num_classes:
            raise UserError(
                f"segmentation.class_weights has {len(weights)} values but {data.name} has "
                f"{self.num_classes} mask classes ({', '.join(self.class_names)})."
            )
        self.class_weights = weights or None

    def build_model(self, dtype):
        return models.get_model(
            self.config.model.name,
            num_classes=self.num_classes,
            dtype=dtype,
            **model_kwargs(self.config),
        )

    def _sums(self, logits, masks, weight):
        return pixel_sums(
            logits,
            masks,
            weight,
            num_classes=self.num_classes,
            ignore_label=self.ignore_label,
            class_weights=self.class_weights,
        )

    def loss(self, outputs, batch):
        sums = self._sums(outputs, batch["mask"], jnp.ones(outputs.shape[0], jnp.float32))
        loss = sums["loss_sum"] / jnp.maximum(sums["weight_sum"], 1e-6)
        return loss, {k: sums[k] for k in _TRAIN_KEYS}

    def zero_train_sums(self):
        return {k: jnp.zeros((), jnp.float32) for k in _TRAIN_KEYS}

    def train_metrics(self, host_sums):
        return {
            "loss": float(host_sums["loss_sum"]) / max(float(host_sums["weight_sum"]), 1e-6),
            "pixel_accuracy": float(host_sums["correct"]) / max(float(host_sums["pixels"]), 1.0),
        }

    def eval_sums(self, outputs, batch):
        return self._sums(outputs, batch["mask"], batch["weight"])

    def finalize(self, sums):
        sums = jax.device_get(sums)
        confusion = np.asarray(sums["confusion"])
        iou = iou_from_confusion(confusion)
        scalars = {
            "loss": float(sums["loss_sum"]) / max(float(sums["weight_sum"]), 1e-6),
            "pixel_accuracy": iou["pixel_accuracy"],
            "mean_iou": iou["mean_iou"],
            **{f"iou_{n}": float(v) for n, v in zip(self.class_names, iou["iou"], strict=True)},
            "num_examples": int(round(float(sums["count"]))),
        }
        return scalars, {"pixel_confusion": confusion}

    def eval_line(self, scalars):
        per_class = " ".join(f"{n}={scalars[f'iou_{n}']:.3f}" for n in self.class_names)
        return (
            f"loss={scalars['loss']:.4f} pixel_accuracy={scalars['pixel_accuracy']:.4f} "
            f"mean_iou={scalars['mean_iou']:.4f} (IoU {per_class})"
        )

    def report_lines(self, scalars, arrays):
        confusion = arrays["pixel_confusion"]
        width = max(10, *(len(n) for n in self.class_names))
        lines = [
            f"  loss            {scalars['loss']:.4f}",
            f"  pixel accuracy  {scalars['pixel_accuracy']:.4f}",
            f"  mean IoU        {scalars['mean_iou']:.4f}",
            "",
            f"  {'class':<{width}}     IoU   pixels (truth)",
        ]
        for i, n in enumerate(self.class_names):
            lines.append(
                f"  {n:<{width}}  {scalars[f'iou_{n}']:6.4f}  {int(confusion[i].sum()):>12,}"
            )
        return lines

    def pictures(self, model, variables, sample, path, tag):
        from cnnjax.viz import masks as viz_masks

        n = int(self.config.viz.num_images)
        images = sample["image"][:n]
        apply = jax.jit(lambda v, x: jnp.argmax(model.apply(v, x, train=False), axis=-1))
        x = (images.astype(np.float32) / 255.0 - self.data.mean) / self.data.std
        pred = np.asarray(apply(variables, x))
        viz_masks.masks_figure(
            images,
            sample["mask"][:n],
            pred,
            self.class_names,
            ignore_label=self.ignore_label,
            path=path("masks"),
            title=f"{tag}: truth and prediction",
        )
