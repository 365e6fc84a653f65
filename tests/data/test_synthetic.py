"""Synthetic random data: any shape, deterministic per seed."""

import ml_collections
import numpy as np
import pytest

from cnnjax.data import synthetic


def test_shapes_dtypes_and_ranges():
    out = synthetic.load_synthetic(num_train=20, num_test=7, image_shape=(5, 6, 2), num_classes=4)
    assert out["train_images"].shape == (20, 5, 6, 2) and out["train_images"].dtype == np.uint8
    assert out["test_images"].shape == (7, 5, 6, 2)
    assert out["train_labels"].shape == (20,) and out["train_labels"].dtype == np.int32
    assert out["test_labels"].min() >= 0 and out["train_labels"].max() < 4
    assert out["class_names"] == ("class_0", "class_1", "class_2", "class_3")


def test_deterministic_per_seed_and_splits_differ():
    a = synthetic.load_synthetic(num_train=16, num_test=16, seed=1)
    b = synthetic.load_synthetic(num_train=16, num_test=16, seed=1)
    c = synthetic.load_synthetic(num_train=16, num_test=16, seed=2)
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["train_images"], c["train_images"])
    assert not np.array_equal(a["train_images"], a["test_images"])


def test_from_config():
    config = ml_collections.ConfigDict(
        {
            "name": "synthetic",
            "image_size": 0,
            "num_train": 8,
            "num_test": 0,
            "synthetic": {"channels": 1, "num_classes": 3},
        }
    )
    out = synthetic.from_config(config)
    assert out["train_images"].shape == (8, 32, 32, 1) and len(out["class_names"]) == 3
    assert len(out["test_images"]) == synthetic.NUM_TEST  # 0: the default.


def test_a_1000_class_benchmark_from_the_command_line():
    """Every experiment takes synthetic data of any class count and channel number."""
    import experiments
    from cnnjax import data
    from cnnjax.overrides import apply_overrides

    config = apply_overrides(
        experiments.EXPERIMENTS["quickstart"].get_config(),
        [
            ("data.name", "synthetic"),
            ("data.num_train", "16"),
            ("data.synthetic.num_classes", "1000"),
            ("data.synthetic.channels", "1"),
        ],
    )
    dataset = data.load(config.data)
    assert dataset.num_classes == 1000 and dataset.num_train == 16
    assert dataset.image_shape == (32, 32, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="image_shape"):
        synthetic.load_synthetic(image_shape=(32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        synthetic.load_synthetic(num_classes=0)
