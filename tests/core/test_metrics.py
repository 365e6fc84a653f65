"""Metrics against hand-computed cases."""

import jax.numpy as jnp
import numpy as np

from cnnjax.core import metrics


def test_classification_sums_by_hand():
    logits = jnp.array(
        [
            [5.0, 1.0, 0.0, 0.0, 0.0, 0.0],  # pred 0, label 0: top-1 hit.
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # pred 5, label 1: rank 4 -> top-5 hit.
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # pred 5, label 0: rank 5 -> top-5 miss.
            [9.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # padding row: must not count.
        ]
    )
    labels = jnp.array([0, 1, 0, 3])
    weight = jnp.array([1.0, 1.0, 1.0, 0.0])
    per_example = jnp.array([0.5, 1.0, 2.0, 100.0])
    s = metrics.classification_sums(logits, labels, per_example, weight, num_classes=6)
    assert float(s["loss_sum"]) == 3.5
    assert float(s["correct"]) == 1.0
    assert float(s["top5"]) == 2.0
    assert float(s["count"]) == 3.0
    expected = np.zeros((6, 6), np.int32)
    expected[0, 0] = 1
    expected[1, 5] = 1
    expected[0, 5] = 1
    np.testing.assert_array_equal(np.asarray(s["confusion"]), expected)
    summary = metrics.summarize(s)
    assert summary["accuracy"] == 1 / 3 and summary["top5_accuracy"] == 2 / 3
    assert summary["loss"] == 3.5 / 3


def test_per_class_report_by_hand():
    # rows = truth, cols = prediction.
    confusion = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0]])
    r = metrics.per_class_report(confusion)
    np.testing.assert_allclose(r["precision"], [3 / 5, 2 / 3, 0.0])
    np.testing.assert_allclose(r["recall"], [3 / 4, 2 / 4, 0.0])
    p0, r0 = 3 / 5, 3 / 4
    np.testing.assert_allclose(r["f1"][0], 2 * p0 * r0 / (p0 + r0))
    np.testing.assert_array_equal(r["support"], [4, 4, 0])


def test_no_top5_below_five_classes():
    s = metrics.classification_sums(
        jnp.zeros((2, 3)), jnp.array([0, 1]), jnp.zeros(2), jnp.ones(2), num_classes=3
    )
    assert "top5" not in s and "top5_accuracy" not in metrics.summarize(s)
