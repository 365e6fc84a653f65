"""The procedural shapes: determinism, geometry consistent with the masks, any resolution."""

import ml_collections
import numpy as np
import pytest

from cnnjax.data import shapes
from cnnjax.errors import UserError


@pytest.fixture(scope="module")
def single():
    return shapes.generate(300, image_size=48, seed=3)


@pytest.fixture(scope="module")
def multi():
    return shapes.generate(300, image_size=64, seed=4, max_objects=4, min_size=0.2, max_size=0.4)


def test_shapes_and_dtypes(single):
    expected = {
        "images": ((300, 48, 48, 3), np.uint8),
        "labels": ((300,), np.int32),
        "boxes": ((300, 1, 4), np.float32),
        "classes": ((300, 1), np.int32),
        "num_objects": ((300,), np.int32),
        "masks": ((300, 48, 48), np.uint8),
    }
    assert set(single) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert single[key].shape == shape and single[key].dtype == dtype, key
    np.testing.assert_array_equal(single["num_objects"], 1)
    np.testing.assert_array_equal(single["classes"][:, 0], single["labels"])


def test_deterministic_per_seed(single):
    again = shapes.generate(300, image_size=48, seed=3)
    for key in single:
        np.testing.assert_array_equal(single[key], again[key])
    other = shapes.generate(300, image_size=48, seed=5)
    assert not np.array_equal(single["images"], other["images"])


def test_classes_are_balanced():
    labels = shapes.generate(999, image_size=16, seed=0, min_size=0.5)["labels"]
    np.testing.assert_array_equal(np.bincount(labels), [333, 333, 333])


def test_box_is_the_bounding_box_of_the_mask(single):
    size = 48
    for i in range(len(single["labels"])):
        mask = single["masks"][i]
        assert set(np.unique(mask)) == {0, 1 + single["labels"][i]}
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        from_mask = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]) / size
        np.testing.assert_allclose(single["boxes"][i, 0], from_mask, atol=1 / size + 1e-6)
        assert single["boxes"][i, 0].min() >= 0 and single["boxes"][i, 0].max() <= 1


def test_objects_contrast_with_the_background(single):
    images, masks = single["images"].astype(np.float32), single["masks"] > 0
    for i in range(20):
        inside = images[i][masks[i]].mean(axis=0)
        outside = images[i][~masks[i]].mean(axis=0)
        assert np.abs(inside - outside).max() > 30


def test_multi_object_padding_and_overlap(multi):
    counts = multi["num_objects"]
    assert counts.min() >= 1 and counts.max() <= 4 and len(np.unique(counts)) == 4
    for i in range(len(counts)):
        n = counts[i]
        assert (multi["classes"][i, :n] >= 0).all() and (multi["classes"][i, n:] == -1).all()
        assert (multi["boxes"][i, n:] == 0).all()
        assert (multi["boxes"][i, :n, 2:] > multi["boxes"][i, :n, :2]).all()
        for a in range(n):
            for b in range(a):
                # Placement rejects IoU > 0.3 on exact geometry; pixel boxes add a little.
                assert shapes._iou(multi["boxes"][i, a], multi["boxes"][i, b]) <= 0.35
    # Visible classes: exactly those of the kept objects (some may be partly occluded).
    visible = set(np.unique(multi["masks"][0])) - {0}
    assert visible <= {1 + c for c in multi["classes"][0, : counts[0]]}
    assert 1 + multi["classes"][0, counts[0] - 1] in visible  # The last one is on top.


@pytest.mark.parametrize("size", [32, 96])
def test_same_scenes_at_any_resolution(size):
    reference = shapes.generate(50, image_size=64, seed=9, max_objects=2)
    scaled = shapes.generate(50, image_size=size, seed=9, max_objects=2)
    assert scaled["images"].shape == (50, size, size, 3)
    assert scaled["masks"].shape == (50, size, size)
    for key in ("labels", "classes", "num_objects"):
        np.testing.assert_array_equal(scaled[key], reference[key])
    # Pixel-edge boxes: each resolution is within one of its pixels of the exact geometry.
    np.testing.assert_allclose(scaled["boxes"], reference["boxes"], atol=1 / size + 1 / 64)


def test_too_small_objects_are_refused():
    with pytest.raises(ValueError, match="at least 4"):
        shapes.generate(2, image_size=8, min_size=0.2)
    with pytest.raises(ValueError, match="min_size <= max_size"):
        shapes.generate(2, min_size=0.5, max_size=0.4)


def test_source_format():
    config = ml_collections.ConfigDict({"name": "shapes", "image_size": 32, "num_train": 60})
    out = shapes.load_shapes(config)
    assert out["class_names"] == shapes.CLASS_NAMES == ("circle", "square", "triangle")
    assert out["train_images"].shape == (60, 32, 32, 3)
    assert out["test_images"].shape == (shapes.NUM_TEST, 32, 32, 3)
    assert out["train_masks"].shape == (60, 32, 32) and out["test_boxes"].shape[1:] == (1, 4)
    assert out["train_labels"].dtype == np.int32
    # Train and test come from different seeds.
    assert not np.array_equal(out["train_images"][:10], out["test_images"][:10])
    config = {"name": "shapes", "image_size": 0, "num_train": 3, "num_test": 3}
    default = shapes.load_shapes(ml_collections.ConfigDict(config))
    assert default["train_images"].shape == (3, 64, 64, 3)
    with pytest.raises(UserError, match="image_size >= 14"):
        shapes.load_shapes(ml_collections.ConfigDict({**config, "image_size": 8}))
