"""The localization and segmentation experiments end to end, shrunk: `localize_shapes` and
`fcn8s_shapes` through the launcher (train, then `--mode=visualize`), `fcn8s_pets` under
`tfds.testing.mock_data`, and the tasks' configuration errors."""

import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from launching import launch

import experiments
from cnnjax import data as data_lib
from cnnjax.errors import UserError
from cnnjax.overrides import apply_overrides
from cnnjax.train import experiment, feeds, loop

SHRINK = [
    "--config.num_train_steps=3",
    "--config.batch_size=16",
    "--config.eval_batch_size=500",
    "--config.log_every_steps=1",
    "--config.eval_every_steps=0",
    "--config.checkpoint_every_steps=0",
]


def _events(workdir, kind):
    with open(workdir / "metrics.jsonl") as f:
        return [e for e in map(json.loads, f) if e["kind"] == kind]


def test_localize_shapes_trains_reports_and_draws_boxes(tmp_path):
    launch(["--experiment=localize_shapes", f"--workdir={tmp_path}", *SHRINK], check=True)
    final = _events(tmp_path, "eval")[-1]
    for key in ("accuracy", "mean_iou", "iou50"):
        assert 0.0 <= final[key] <= 1.0, final
    assert final["num_examples"] == 1000 and np.isfinite(final["loss"])
    train = _events(tmp_path, "train")
    assert len(train) == 3 and {"loss", "accuracy", "box_loss", "mean_iou"} <= set(train[-1])
    assert "mean IoU" in (tmp_path / "summary.txt").read_text()

    proc = launch(
        [
            "--experiment=localize_shapes",
            f"--workdir={tmp_path}",
            "--mode=visualize",
            "--config.viz.num_images=4",
        ],
        check=True,
    )
    assert (tmp_path / "plots" / "boxes.png").stat().st_size > 10_000, proc.stdout


def test_fcn8s_shapes_trains_reports_and_draws_masks(tmp_path):
    launch(["--experiment=fcn8s_shapes", f"--workdir={tmp_path}", *SHRINK], check=True)
    final = _events(tmp_path, "eval")[-1]
    assert 0.0 <= final["pixel_accuracy"] <= 1.0 and 0.0 <= final["mean_iou"] <= 1.0, final
    assert {"iou_background", "iou_circle", "iou_square", "iou_triangle"} <= set(final)
    assert "pixel accuracy" in (tmp_path / "summary.txt").read_text()

    launch(
        ["--experiment=fcn8s_shapes", f"--workdir={tmp_path}", "--mode=visualize"],
        check=True,
    )
    assert (tmp_path / "plots" / "masks.png").stat().st_size > 10_000


@pytest.mark.parametrize("variant", ["fcn16s", "fcn32s"])
def test_fcn8s_shapes_takes_the_other_fcn_variants(variant):
    config = apply_overrides(
        experiments.EXPERIMENTS["fcn8s_shapes"].get_config(), [("model.name", variant)]
    )
    exp = experiment.build(config)
    x = jax.ShapeDtypeStruct((2, *exp.data.image_shape), np.float32)
    out = jax.eval_shape(
        lambda v, x: exp.model.apply(v, x, train=False), exp.abstract_state.variables, x
    )
    assert out.shape == (2, 48, 48, 4)
    assert exp.model.variant == variant[3:]


def test_fcn8s_pets_under_mock_data(tmp_path):
    overrides = [
        ("num_train_steps", "2"),
        ("batch_size", "8"),
        ("eval_batch_size", "8"),
        ("log_every_steps", "1"),
        ("eval_every_steps", "0"),
        ("checkpoint_every_steps", "0"),
        ("data.image_size", "32"),
        ("model.backbone", "small"),  # The shipped resnet18 backbone is tested in test_fcn.py.
        ("data.data_dir", str(tmp_path / "tfds")),
    ]
    config = apply_overrides(experiments.EXPERIMENTS["fcn8s_pets"].get_config(), overrides)
    with tfds.testing.mock_data(num_examples=16):
        outcome = loop.train_and_evaluate(config, str(tmp_path / "run"), experiment_name="pets")
        data = data_lib.load(config.data)
    assert outcome.status == "completed" and outcome.step == 2
    assert data.mask_class_names == ("pet", "background", "border")
    mask = data.train_targets["mask"]
    assert mask.shape == (16, 32, 32) and set(np.unique(mask)) <= {0, 1, 2, 255}
    for key in ("pixel_accuracy", "mean_iou", "iou_pet", "iou_background", "iou_border"):
        assert key in outcome.eval_metrics
    assert outcome.eval_metrics["num_examples"] == 16


def test_tasks_other_than_classification_refuse_the_streaming_feed():
    config = apply_overrides(
        experiments.EXPERIMENTS["localize_shapes"].get_config(), [("data.feeding", "stream")]
    )
    exp = experiment.build(config)
    with pytest.raises(UserError, match="on-device feed only"):
        feeds.make_feeds(config, exp.data, exp.mesh, exp.state_shardings, exp.task)


def test_unknown_task_and_missing_targets_are_user_errors():
    config = apply_overrides(experiments.EXPERIMENTS["quickstart"].get_config(), [])
    with config.unlocked():
        config.task = "localisation"
    with pytest.raises(UserError, match="Did you mean 'localization'"):
        experiment.build(config)
    with config.unlocked():
        config.task = "segmentation"
    with pytest.raises(UserError, match="needs mask targets"):
        experiment.build(config)  # The digits have no masks.
