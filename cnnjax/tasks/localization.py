"""Classification with localization: one object per image, its class and its box.

Model: any backbone (`config.model.name`: a registered model, built with `num_classes=None`, or
"small", FCN's CPU-sized `SmallBackbone`; other `config.model.*` keys go to it) carrying a
`LocalizationHead` named "head": from the pooled deepest features, class logits and 4 sigmoid
box numbers, normalized (ymin, xmin, ymax, xmax).

Loss: `localization.class_weight` x cross-entropy + `localization.box_weight` x box loss
(defaults 0.8 / 0.2), the box loss being the mean over the 4 numbers of the squared error
("mse") or of the smooth-L1 error with `localization.smooth_l1_beta` ("smooth_l1").
Metrics: accuracy, mean IoU of the predicted with the true box (`cnnjax.ops.box_iou`) and the
fraction with IoU >= 0.5 (`iou50`), plus the class confusion matrix.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import models
from cnnjax.core import losses, metrics
from cnnjax.errors import UserError
from cnnjax.models import fcn
from cnnjax.ops.boxes import box_iou
from cnnjax.tasks import classification
from cnnjax.tasks.base import Task, model_kwargs

# Backbones that are not registered classifiers, by name (registered models come first).
EXTRA_BACKBONES = {"small": fcn.SmallBackbone}
BOX_LOSSES = ("mse", "smooth_l1")


class LocalizationHead(nn.Module):
    """Pooled features -> {"logits": (B, num_classes), "box": (B, 4) in (0, 1)}.

    features: a backbone's output: a dict of stage maps (the last, deepest one is used), a map
    (B, h, w, C), or a vector (B, D). Maps are flattened (`pool="flatten"`, which keeps where
    things are) or averaged (`pool="avg"`), then one hidden ReLU layer per branch (class and
    box): the box branch then learns from the box loss alone, whatever its weight (shared,
    the 0.2-weighted box gradient was swamped by the cross-entropy's: test mean IoU 0.65 vs 0.81).
    """

    num_classes: int
    hidden: int = 128
    pool: str = "flatten"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features):
        if isinstance(features, Mapping):
            features = list(features.values())[-1]
        x = features
        if x.ndim == 4:
            x = x.mean(axis=(1, 2)) if self.pool == "avg" else x.reshape((x.shape[0], -1))
        c = b = x
        if self.hidden > 0:  # One hidden layer per branch: the box's is trained by box loss only.
            c = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="class_hidden")(x))
            b = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="box_hidden")(x))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="class")(c)
        box = nn.sigmoid(nn.Dense(4, dtype=self.dtype, name="box")(b).astype(jnp.float32))
        return {"logits": logits, "box": box}


class Localizer(nn.Module):
    """`backbone` (an unbound module returning features) + `LocalizationHead` ("head")."""

    backbone: nn.Module
    num_classes: int
    hidden: int = 128
    pool: str = "flatten"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (B, H, W, C) -> {"logits": (B, num_classes), "box": (B, 4)}."""
        features = self.backbone(x, train=train)
        return LocalizationHead(self.num_classes, self.hidden, self.pool, self.dtype, name="head")(
            features
        )


def make_backbone(name: str, dtype, **kwargs) -> nn.Module:
    """A feature extractor by name: a registered model with num_classes=None, or "small"."""
    if name in EXTRA_BACKBONES and name not in models.MODELS:
        return EXTRA_BACKBONES[name](num_classes=None, dtype=dtype, **kwargs)
    return models.get_model(name, num_classes=None, dtype=dtype, **kwargs)


def box_loss(pred, true, kind: str = "mse", beta: float = 0.05):
    """Per-example box loss: the mean over the 4 numbers of the squared error ("mse") or of
    smooth-L1 (quadratic below `beta`, linear above; Fast R-CNN's). pred, true: (B, 4)."""
    diff = pred.astype(jnp.float32) - true.astype(jnp.float32)
    if kind == "mse":
        per_number = diff * diff
    elif kind == "smooth_l1":
        a = jnp.abs(diff)
        per_number = jnp.where(a < beta, 0.5 * diff * diff / beta, a - 0.5 * beta)
    else:
        raise UserError(f"localization.box_loss must be one of {BOX_LOSSES}, got {kind!r}.")
    return jnp.mean(per_number, axis=-1)


def localization_sums(outputs, labels, boxes, weight, *, num_classes: int, settings: dict):
    """Summed metrics of one batch weighted by `weight` (B,) (0: padding): "loss_sum",
    "ce_sum", "box_loss_sum", "correct", "iou_sum", "iou50", "count", "confusion"."""
    logits = outputs["logits"].astype(jnp.float32)
    ce = losses.softmax_cross_entropy(logits, labels, num_classes=num_classes)
    bl = box_loss(outputs["box"], boxes, settings["box_loss"], settings["beta"])
    per_example = settings["class_weight"] * ce + settings["box_weight"] * bl
    iou = box_iou(outputs["box"], boxes)
    sums = metrics.classification_sums(logits, labels, per_example, weight, num_classes)
    sums.pop("top5", None)
    sums["ce_sum"] = jnp.sum(ce * weight)
    sums["box_loss_sum"] = jnp.sum(bl * weight)
    sums["iou_sum"] = jnp.sum(iou * weight)
    sums["iou50"] = jnp.sum((iou >= 0.5) * weight)
    return sums


_TRAIN_KEYS = ("loss_sum", "ce_sum", "box_loss_sum", "correct", "iou_sum", "count")


class Localization(Task):
    """Targets: "label" and "box". Config: `localization.*` (see experiments/base.py)."""

    name = "localization"
    target_keys = ("label", "box")
    progress_metric = "accuracy"

    def __init__(self, config, data):
        super().__init__(config, data)
        self.require_targets()
        lc = config.localization
        self.settings = {
            "class_weight": float(lc.class_weight),
            "box_weight": float(lc.box_weight),
            "box_loss": str(lc.box_loss),
            "beta": float(lc.smooth_l1_beta),
        }
        if self.settings["box_loss"] not in BOX_LOSSES:
            raise UserError(
                f"localization.box_loss must be one of {BOX_LOSSES}, got {lc.box_loss!r}."
            )

    def build_model(self, dtype):
        lc = self.config.localization
        if lc.pool not in ("flatten", "avg"):
            raise UserError(f"localization.pool must be 'flatten' or 'avg', got {lc.pool!r}.")
        backbone = make_backbone(self.config.model.name, dtype, **model_kwargs(self.config))
        return Localizer(backbone, self.data.num_classes, int(lc.hidden), str(lc.pool), dtype=dtype)

    def loss(self, outputs, batch):
        n = self.data.num_classes
        logits = outputs["logits"].astype(jnp.float32)
        ce = losses.softmax_cross_entropy(
            logits,
            batch["label"],
            num_classes=n,
            label_smoothing=float(self.config.label_smoothing),
        )
        s = self.settings
        bl = box_loss(outputs["box"], batch["box"], s["box_loss"], s["beta"])
        per_example = s["class_weight"] * ce + s["box_weight"] * bl
        iou = box_iou(jax.lax.stop_gradient(outputs["box"]), batch["box"])
        sums = {
            "loss_sum": jnp.sum(per_example),
            "ce_sum": jnp.sum(ce),
            "box_loss_sum": jnp.sum(bl),
            "correct": jnp.sum(jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32),
            "iou_sum": jnp.sum(iou),
            "count": jnp.asarray(per_example.shape[0], jnp.float32),
        }
        return jnp.mean(per_example), sums

    def zero_train_sums(self):
        return {k: jnp.zeros((), jnp.float32) for k in _TRAIN_KEYS}

    def train_metrics(self, host_sums):
        count = max(float(host_sums["count"]), 1.0)
        return {
            "loss": float(host_sums["loss_sum"]) / count,
            "accuracy": float(host_sums["correct"]) / count,
            "class_loss": float(host_sums["ce_sum"]) / count,
            "box_loss": float(host_sums["box_loss_sum"]) / count,
            "mean_iou": float(host_sums["iou_sum"]) / count,
        }

    def eval_sums(self, outputs, batch):
        return localization_sums(
            outputs,
            batch["label"],
            batch["box"],
            batch["weight"],
            num_classes=self.data.num_classes,
            settings=self.settings,
        )

    def finalize(self, sums):
        sums = jax.device_get(sums)
        count = float(sums["count"])
        confusion = np.asarray(sums["confusion"])
        scalars = {
            "loss": float(sums["loss_sum"]) / count,
            "accuracy": float(sums["correct"]) / count,
            "mean_iou": float(sums["iou_sum"]) / count,
            "iou50": float(sums["iou50"]) / count,
            "class_loss": float(sums["ce_sum"]) / count,
            "box_loss": float(sums["box_loss_sum"]) / count,
            "macro_f1": float(np.mean(metrics.per_class_report(confusion)["f1"])),
            "num_examples": int(count),
        }
        return scalars, {"confusion": confusion}

    def eval_line(self, scalars):
        return (
            f"loss={scalars['loss']:.4f} accuracy={scalars['accuracy']:.4f} "
            f"mean_iou={scalars['mean_iou']:.4f} iou50={scalars['iou50']:.4f}"
        )

    def report_lines(self, scalars, arrays):
        lines = classification.report_lines(scalars, arrays["confusion"], self.data.class_names)
        return lines[:2] + [
            f"  mean IoU      {scalars['mean_iou']:.4f}",
            f"  IoU >= 0.5    {scalars['iou50']:.4f}",
            *lines[2:],
        ]

    def pictures(self, model, variables, sample, path, tag):
        from cnnjax.viz import localization as viz_localization

        n = int(self.config.viz.num_images)
        outputs = predict(model, variables, sample["image"][:n], self.data.mean, self.data.std)
        viz_localization.boxes_figure(
            sample["image"][:n],
            sample["label"][:n],
            sample["box"][:n],
            outputs["logits"].argmax(-1),
            outputs["box"],
            self.data.class_names,
            path=path("boxes"),
            title=f"{tag}: true (green) and predicted (orange) boxes",
        )


def predict(model, variables, images, mean, std, batch_size: int = 256) -> dict:
    """Model outputs for uint8 images, in batches, as NumPy: {"logits", "box"}."""
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    out = []
    for i in range(0, len(images), batch_size):
        x = (images[i : i + batch_size].astype(np.float32) / 255.0 - mean) / std
        out.append(jax.device_get(apply(variables, x)))
    return {k: np.concatenate([o[k] for o in out]).astype(np.float32) for k in out[0]}
