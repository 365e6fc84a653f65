"""The detection task through the trainer's contract: dataset targets, exact evaluation sums
over padded batches, mAP on a hand case, and the loss in the train step's shape."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tasks.test_detection import _perfect_predictions  # tests/ is on the path

import experiments
from cnnjax import data as data_lib
from cnnjax.core import metrics
from cnnjax.data import pipeline
from cnnjax.errors import UserError
from cnnjax.tasks import Detection, detection, get_task


def _shapes(num_train=12, num_test=5, max_objects=3):
    return data_lib.load(
        ml_collections.ConfigDict(
            {
                "name": "shapes",
                "image_size": 32,
                "max_objects": max_objects,
                "num_train": num_train,
                "num_test": num_test,
            }
        )
    )


def _config(**overrides):
    config = experiments.EXPERIMENTS["detect_shapes"].get_config().unlock()
    for key, value in overrides.items():
        config[key] = value
    return config


def test_multi_object_shapes_targets_are_padded_with_an_index():
    data = _shapes()
    arrays = data.arrays("test", Detection.target_keys)
    assert arrays["image"].shape == (5, 32, 32, 3)
    assert arrays["boxes"].shape == (5, 3, 4) and arrays["boxes"].dtype == np.float32
    assert arrays["classes"].shape == (5, 3) and arrays["classes"].dtype == np.int32
    np.testing.assert_array_equal(arrays["index"], np.arange(5))
    valid = arrays["classes"] >= 0
    # Objects fill the first slots; padding slots are class -1 with all-zero boxes.
    assert np.all(valid[:, 0]) and np.all(np.diff(valid.astype(int), axis=1) <= 0)
    assert np.all(arrays["boxes"][~valid] == 0)
    assert np.all(arrays["boxes"][valid][:, 2:] > arrays["boxes"][valid][:, :2])
    np.testing.assert_array_equal(valid.sum(1), data.test_targets["num_objects"])


def test_a_dataset_without_boxes_is_a_user_error():
    digits = data_lib.load(ml_collections.ConfigDict({"name": "digits"}))
    with pytest.raises(UserError, match="boxes"):
        get_task(_config(), digits)


def test_image_sides_must_tile_into_cells():
    data = data_lib.load(
        ml_collections.ConfigDict({"name": "shapes", "image_size": 60, "max_objects": 2,
                                   "num_train": 4, "num_test": 2})
    )  # fmt: skip
    with pytest.raises(UserError, match="multiples of 8.*image_size"):
        get_task(_config(), data)


def test_evaluation_sums_over_padded_batches_give_the_hand_computed_map():
    data = _shapes(num_test=3)
    task = get_task(_config(), data)
    boxes, classes = data.test_targets["boxes"], data.test_targets["classes"]
    grid = 4  # 32 px / stride 8
    # Image 0 and 2: every object found exactly. Image 1: every object found, but one box moved
    # off its object (IoU < 0.5): that detection is a false positive and its object missed.
    outputs = np.concatenate([np.asarray(_perfect_predictions(b, c, grid)) for b, c in
                              zip(boxes, classes, strict=True)])  # fmt: skip
    target = detection.encode_targets(boxes[1], classes[1], grid)
    i, j = np.argwhere(np.asarray(target["objectness"]))[0]
    cls1 = int(target["classes"][i, j])
    outputs[1, i, j, 3:5] -= 2.0  # The box 1/e^2 of the object's size: IoU ~0.14.
    outputs[1, i, j, 0] = np.log(0.6 / 0.4)  # Scored 0.6, below every true positive (0.999).

    # Batches of 2: the second one is padded with a copy of example 0 (weight 0).
    padded = pipeline.pad_for_eval(data.arrays("test", task.target_keys), 2)
    padded_out = np.concatenate([outputs, outputs[:1]]).reshape(2, 2, *outputs.shape[1:])
    eval_sums = jax.jit(task.eval_sums)
    sums = None
    for b in range(2):
        batch = {k: v[b] for k, v in padded.items()}
        batch_sums = eval_sums(jnp.asarray(padded_out[b]), batch)
        sums = batch_sums if sums is None else metrics.add(sums, batch_sums)
    scalars, arrays = task.finalize(sums)

    # The placed detections are exactly each image's own fixed-size detections.
    direct = jax.device_get(detection.detect(jnp.asarray(outputs), max_detections=20))
    np.testing.assert_allclose(arrays["boxes"], direct["boxes"], atol=1e-6)
    np.testing.assert_array_equal(arrays["classes"], direct["classes"])
    assert scalars["num_examples"] == 3

    # By hand: every true positive scores 0.999 and ranks ahead of the false positive (0.6):
    # class cls1 has n objects and finds n - 1 of them at precision 1, so its all-point AP is
    # (n - 1) / n; the other classes find all theirs at precision 1: AP 1.
    n_objects = np.bincount(classes[classes >= 0], minlength=3)
    expected = np.where(np.arange(3) == cls1, (n_objects - 1) / np.maximum(n_objects, 1), 1.0)
    expected = np.where(n_objects > 0, expected, np.nan)
    np.testing.assert_allclose(arrays["per_class_ap"], expected, atol=1e-6)
    assert scalars["map50"] == pytest.approx(np.nanmean(expected))
    assert scalars["class_accuracy"] == 1.0


def test_train_loss_and_sums_match_the_per_image_loss():
    data = _shapes()
    task = get_task(_config(), data)
    arrays = data.arrays("train", task.target_keys)
    batch = {k: jnp.asarray(v[:4]) for k, v in arrays.items()}
    outputs = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4, 4, 8)), jnp.float32)
    loss, sums = jax.jit(task.loss)(outputs, batch)
    per_image, _ = detection.detection_loss(outputs, batch["boxes"], batch["classes"])
    assert float(loss) == pytest.approx(float(per_image.mean()), rel=1e-6)
    assert float(sums["loss_sum"]) == pytest.approx(float(per_image.sum()), rel=1e-6)
    assert set(sums) == set(task.zero_train_sums())
    # One positive cell per object, except where two centres share a cell.
    cells = detection.encode_batch(batch["boxes"], batch["classes"], 4)["objectness"]
    assert float(sums["positives"]) == float(cells.sum()) <= float((batch["classes"] >= 0).sum())
    logged = task.train_metrics(jax.device_get(sums))
    assert 0.0 <= logged["class_accuracy"] <= 1.0 and "loss" in logged
