"""Image classification: one label per image, softmax cross-entropy, accuracy/top-5/F1."""

import types

import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax import models
from cnnjax.core import losses, metrics
from cnnjax.data import transforms
from cnnjax.errors import UserError
from cnnjax.tasks.base import Task, model_kwargs


def loss_and_sums(logits, labels, *, num_classes: int, label_smoothing: float = 0.0):
    """(mean cross-entropy, {"loss_sum", "correct", "count"} summed over the batch)."""
    per_example = losses.softmax_cross_entropy(
        logits, labels, num_classes=num_classes, label_smoothing=label_smoothing
    )
    pred = jnp.argmax(logits, axis=-1)
    sums = {
        "loss_sum": jnp.sum(per_example),
        "correct": jnp.sum(pred == labels).astype(jnp.float32),
        "count": jnp.asarray(per_example.shape[0], jnp.float32),
    }
    return jnp.mean(per_example), sums


def eval_sums(logits, labels, weight, *, num_classes: int) -> dict:
    """`metrics.classification_sums` with the plain (unsmoothed) cross-entropy: the test NLL."""
    per_example = losses.softmax_cross_entropy(logits, labels, num_classes=num_classes)
    return metrics.classification_sums(logits, labels, per_example, weight, num_classes)


def zero_train_sums() -> dict:
    return {k: jnp.zeros((), jnp.float32) for k in ("loss_sum", "correct", "count")}


def train_metrics(host_sums: dict) -> dict[str, float]:
    count = max(float(host_sums["count"]), 1.0)
    return {
        "loss": float(host_sums["loss_sum"]) / count,
        "accuracy": float(host_sums["correct"]) / count,
    }


def report_lines(scalars: dict, confusion, class_names) -> list[str]:
    """Accuracy, top-5, macro F1 and the per-class precision/recall/F1 table."""
    lines = [
        f"  loss          {scalars['loss']:.4f}",
        f"  accuracy      {scalars['accuracy']:.4f}",
    ]
    if "top5_accuracy" in scalars:
        lines.append(f"  top-5         {scalars['top5_accuracy']:.4f}")
    lines.append(f"  macro F1      {scalars['macro_f1']:.4f}")
    report = metrics.per_class_report(confusion)
    width = max(8, *(len(c) for c in class_names))
    lines += ["", f"  {'class':<{width}}  precision  recall     f1  support"]
    for i, cname in enumerate(class_names):
        lines.append(
            f"  {cname:<{width}}  {report['precision'][i]:9.4f}  "
            f"{report['recall'][i]:6.4f} {report['f1'][i]:6.4f}  "
            f"{report['support'][i]:7d}"
        )
    return lines


class Classification(Task):
    """The default task. Targets: "label". Model: the registered `config.model.name` with
    `num_classes` outputs. Works with both feeds (on device and streamed)."""

    name = "classification"
    target_keys = ("label",)
    progress_metric = "accuracy"
    requires_device_feed = False
    outputs_class_scores = True

    def __init__(self, config, data):
        super().__init__(config, data)
        if data.num_classes < 2:
            where = getattr(data, "name", "the dataset")
            raise UserError(
                f"{where} has {data.num_classes} class: a classifier needs at least two "
                "(an image folder needs two or more train/<class>/ folders)."
            )

    def build_model(self, dtype):
        return models.get_model(
            self.config.model.name,
            num_classes=self.data.num_classes,
            dtype=dtype,
            **model_kwargs(self.config),
        )

    def loss(self, outputs, batch):
        return loss_and_sums(
            outputs,
            batch["label"],
            num_classes=self.data.num_classes,
            label_smoothing=float(self.config.label_smoothing),
        )

    def zero_train_sums(self):
        return zero_train_sums()

    def train_metrics(self, host_sums):
        return train_metrics(host_sums)

    def eval_sums(self, outputs, batch):
        return eval_sums(
            outputs, batch["label"], batch["weight"], num_classes=self.data.num_classes
        )

    def finalize(self, sums):
        return metrics.summarize(sums), {"confusion": np.asarray(sums["confusion"])}

    def eval_line(self, scalars):
        return f"loss={scalars['loss']:.4f} accuracy={scalars['accuracy']:.4f}" + (
            f" top5={scalars['top5_accuracy']:.4f}" if "top5_accuracy" in scalars else ""
        )

    def test_line(self, scalars):
        return (
            f"test loss {scalars['loss']:.4f}, accuracy {scalars['accuracy']:.4f}"
            + (f", top-5 {scalars['top5_accuracy']:.4f}" if "top5_accuracy" in scalars else "")
            + f", macro F1 {scalars['macro_f1']:.4f} on {scalars['num_examples']:,} images"
        )

    def report_lines(self, scalars, arrays):
        return report_lines(scalars, arrays["confusion"], self.data.class_names)

    def test_sample(self, n):
        """The first `n` test images (uint8 NHWC) and labels, in memory or streamed."""
        data = self.data
        if data.in_memory:
            return super().test_sample(n)
        size = int(self.config.data.image_size)
        to_eval = transforms.make_eval_transform(self.config.augment, size)
        records = [to_eval(data.test_source[i]) for i in range(min(n, data.num_test))]
        return {
            "image": np.stack([r["image"] for r in records]),
            "label": np.array([r["label"] for r in records], np.int32),
        }

    def pictures(self, model, variables, sample, path, tag):
        from cnnjax.tasks import classification_pictures  # Local: matplotlib.

        classification_pictures.draw(self, model, variables, sample, path, tag)


def for_labels(num_classes: int, *, label_smoothing: float = 0.0) -> Classification:
    """A classification task over `num_classes` labels without a run's config or dataset: what
    `cnnjax.train.steps` needs to build a train or eval step in research code or a test."""
    config = ml_collections.ConfigDict({"label_smoothing": float(label_smoothing)})
    return Classification(config, types.SimpleNamespace(num_classes=int(num_classes)))
