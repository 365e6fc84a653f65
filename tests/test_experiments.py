"""Every experiment runs end to end: TFDS ones under `tfds.testing.mock_data` (shrunk by
overrides), and `simple_cnn_cifar` learns on the real CIFAR-10 subset in ../shared."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from launching import ROOT, launch

import experiments
from cnnjax.overrides import apply_overrides
from cnnjax.train import loop

SHRINK = [
    ("num_train_steps", "2"),
    ("batch_size", "8"),
    ("eval_batch_size", "8"),
    ("log_every_steps", "1"),
    ("eval_every_steps", "0"),
    ("checkpoint_every_steps", "0"),
]
TFDS_EXPERIMENTS = {
    "lenet_mnist": [],
    "cnn_fashion_mnist": [],
    "simple_cnn_cifar": [],
    "vgg_blocks_cifar": [],
    "separable_vgg_cifar": [],
    # The deep ones with one block (VGG: one conv) per stage: the same model families, stems,
    # heads and pipelines at a fraction of the compile time. Their full depths are checked by
    # the shape tests in tests/models/.
    "vgg16_cifar": [("model.stage_sizes", "(1, 1, 1, 1, 1)")],
    "resnet18_cifar": [("model.stage_sizes", "(1, 1, 1, 1)")],
    # Streamed, Inception crops from mock JPEG-sized images down to a CPU-sized 32x32.
    "resnet50_imagenet": [("model.stage_sizes", "(1, 1, 1, 1)"), ("data.image_size", "32")],
    # Both transfer phases, one step each. Its "caffe" inputs are unscaled and suit only
    # pretrained weights (checked against Keras in tests/interop/test_keras.py): a fresh start
    # diverges on them, so this one uses the dataset's statistics. One block per stage.
    "resnet50_transfer": [
        ("model.stage_sizes", "(1, 1, 1, 1)"),
        ("data.image_size", "32"),
        ("transfer.freeze_steps", "1"),
        ("data.normalization", "dataset"),
    ],
}
SHARED_TFDS = os.path.join(ROOT, "..", "shared", "tensorflow_datasets")
# Tested in tests/test_task_experiments.py (shapes through launch.py, pets under mock data).
TASK_EXPERIMENTS = ("localize_shapes", "fcn8s_shapes", "fcn8s_pets")


def test_every_experiment_is_tested():
    # xception_transfer: tests/test_transfer_experiments.py (mock tf_flowers and shapes).
    # detect_shapes: tests/test_detect_shapes.py (through launch.py).
    assert set(experiments.EXPERIMENTS) == {
        "quickstart",
        "xception_transfer",
        "detect_shapes",
        *TASK_EXPERIMENTS,
        *TFDS_EXPERIMENTS,
    }


@pytest.mark.parametrize("name", sorted(TFDS_EXPERIMENTS))
def test_tfds_experiment_under_mock_data(name, tmp_path):
    overrides = [*SHRINK, ("data.data_dir", str(tmp_path / "tfds")), *TFDS_EXPERIMENTS[name]]
    config = apply_overrides(experiments.EXPERIMENTS[name].get_config(), overrides)
    with tfds.testing.mock_data(num_examples=16):
        outcome = loop.train_and_evaluate(config, str(tmp_path / "run"), experiment_name=name)
    assert outcome.status == "completed" and outcome.step == 2
    assert np.isfinite(outcome.eval_metrics["loss"])
    assert outcome.eval_metrics["num_examples"] == 16
    for path in ("summary.txt", "metrics.jsonl", "plots/confusion_matrix.png"):
        assert (tmp_path / "run" / path).is_file()


@pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHARED_TFDS, "cifar10")),
    reason="the shared CIFAR-10 subset is not here (a user's fresh clone)",
)
def test_simple_cnn_cifar_learns_on_real_cifar10_subset(tmp_path):
    proc = launch(
        [
            "--experiment=simple_cnn_cifar",
            f"--workdir={tmp_path}",
            f"--config.data.data_dir={SHARED_TFDS}",
            # 2 epochs reach ~0.49 (4 reached ~0.55).
            "--config.num_epochs=2",
            "--config.batch_size=64",
            "--config.log_every_steps=20",
        ],
        check=True,
    )
    assert "5,000 train / 1,000 test" in proc.stdout
    with open(tmp_path / "metrics.jsonl") as f:
        evals = [e for e in map(json.loads, f) if e["kind"] == "eval"]
    assert len(evals) == 2  # One per epoch.
    assert evals[-1]["accuracy"] > 0.35, evals  # Chance is 0.10.
    assert evals[-1]["loss"] < evals[0]["loss"]
