"""Classification metrics as (sum, count) pairs: exact over padded batches, summable anywhere.

A batch contributes sums (`loss_sum`, `correct`, `top5`, `count`, `confusion`); the host turns
accumulated sums into means and per-class precision/recall/F1 only when it reports them.
"""

import jax
import jax.numpy as jnp
import numpy as np


def classification_sums(logits, labels, per_example_loss, weight, num_classes: int) -> dict:
    """Summed metrics of one batch. weight: float (N,), 1 for real examples, 0 for padding.

    Returns scalars `loss_sum`, `correct`, `top5` (when num_classes >= 5), `count` and the
    int32 (num_classes, num_classes) `confusion` matrix (rows: true class, columns: predicted).
    """
    logits = logits.astype(jnp.float32)
    pred = jnp.argmax(logits, axis=-1)
    sums = {
        "loss_sum": jnp.sum(per_example_loss * weight),
        "correct": jnp.sum((pred == labels) * weight),
        "count": jnp.sum(weight),
    }
    if num_classes >= 5:
        # True class among the 5 largest logits <=> fewer than 5 logits beat it.
        true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
        rank = jnp.sum(logits > true_logit, axis=-1)
        sums["top5"] = jnp.sum((rank < 5) * weight)
    onehot_true = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32) * weight[:, None].astype(
        jnp.int32
    )
    onehot_pred = jax.nn.one_hot(pred, num_classes, dtype=jnp.int32)
    sums["confusion"] = onehot_true.T @ onehot_pred
    return sums


def add(a: dict, b: dict) -> dict:
    return jax.tree.map(jnp.add, a, b)


def per_class_report(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (rows = truth).

    A class never predicted has precision 0; a class never present has recall 0 (sklearn's
    `zero_division=0`).
    """
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def summarize(sums: dict) -> dict:
    """Host-side means from accumulated sums: loss, accuracy, top5_accuracy, macro F1."""
    sums = jax.device_get(sums)
    count = float(sums["count"])
    out = {
        "loss": float(sums["loss_sum"]) / count,
        "accuracy": float(sums["correct"]) / count,
        "num_examples": int(count),
    }
    if "top5" in sums:
        out["top5_accuracy"] = float(sums["top5"]) / count
    if "confusion" in sums:
        out["macro_f1"] = float(np.mean(per_class_report(sums["confusion"])["f1"]))
    return out
