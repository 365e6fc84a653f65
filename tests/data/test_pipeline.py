"""The on-device pipeline: order is a pure function of (seed, epoch, step); augmentation is
correct and deterministic."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cnnjax.data import pipeline


def test_permutation_is_a_pure_function_of_seed_and_epoch():
    a = np.asarray(pipeline.epoch_permutation(np.int32(0), 3, 100))
    b = np.asarray(pipeline.epoch_permutation(np.int32(0), 3, 100))
    c = np.asarray(pipeline.epoch_permutation(np.int32(0), 4, 100))
    d = np.asarray(pipeline.epoch_permutation(np.int32(1), 3, 100))
    np.testing.assert_array_equal(a, b)
    assert sorted(a) == list(range(100))
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_take_batch_slices_the_permutation():
    images = jnp.arange(10)[:, None, None, None] * jnp.ones((10, 2, 2, 1))
    labels = jnp.arange(10)
    perm = jnp.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], jnp.int32)
    batch = pipeline.take_batch({"image": images, "label": labels}, perm, jnp.int32(1), 3)
    np.testing.assert_array_equal(batch["label"], [6, 5, 4])
    np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], [6, 5, 4])


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_random_crop_offsets_in_bounds_and_content_preserved(mode):
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(1, 255, (64, 8, 8, 1)), jnp.uint8)
    out = np.asarray(pipeline.random_crop(images, jax.random.key(0), 2, mode))
    assert out.shape == images.shape
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)), mode=mode)
    offsets = set()
    for i in range(64):
        found = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(padded[i, dy : dy + 8, dx : dx + 8], out[i])
        ]
        assert found, f"image {i} is not a crop of its padded self"
        offsets.add(found[0])
    assert len(offsets) > 5  # Offsets vary across the batch.


def test_flip_is_a_mirror_and_deterministic():
    images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (32, 4, 5, 3)), jnp.uint8)
    out = np.asarray(pipeline.random_flip(images, jax.random.key(1)))
    flipped = [np.array_equal(out[i], np.asarray(images[i])[:, ::-1]) for i in range(32)]
    kept = [np.array_equal(out[i], np.asarray(images[i])) for i in range(32)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 4 < sum(flipped) < 28
    np.testing.assert_array_equal(out, pipeline.random_flip(images, jax.random.key(1)))


def test_pad_for_eval_weights_padding():
    images = np.arange(5)[:, None, None, None].astype(np.uint8)
    padded = pipeline.pad_for_eval({"image": images, "label": np.arange(5)}, 2)
    assert padded["image"].shape == (3, 2, 1, 1, 1)
    np.testing.assert_array_equal(padded["label"], [[0, 1], [2, 3], [4, 0]])
    np.testing.assert_array_equal(padded["weight"], [[1, 1], [1, 1], [1, 0]])


def test_cutout_paints_one_clipped_square_per_image():
    images = jnp.full((64, 10, 10, 3), 200, jnp.uint8)
    out = np.asarray(pipeline.cutout(images, jax.random.key(0), 4, np.array([1, 2, 3], np.uint8)))
    painted = (out != 200).all(axis=-1)
    for i in range(64):
        ys, xs = np.nonzero(painted[i])
        assert 1 <= len(ys) <= 16  # At most 4x4; fewer where clipped by the border.
        assert ys.max() - ys.min() < 4 and xs.max() - xs.min() < 4
        np.testing.assert_array_equal(out[i][painted[i]][0], [1, 2, 3])
    assert (painted.sum(axis=(1, 2)) == 16).mean() > 0.3  # Many squares lie fully inside.
    again = pipeline.cutout(images, jax.random.key(0), 4, np.array([1, 2, 3], np.uint8))
    np.testing.assert_array_equal(out, again)


def _scenes(n=32, size=16, seed=0):
    """Bright rectangles on black: images, their masks (1 inside) and normalized boxes."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    boxes = np.zeros((n, 4), np.float32)
    for i in range(n):
        y0, x0 = rng.integers(0, size - 4, 2)
        y1, x1 = y0 + rng.integers(2, size - y0), x0 + rng.integers(2, size - x0)
        images[i, y0:y1, x0:x1] = 200
        masks[i, y0:y1, x0:x1] = 1
        boxes[i] = np.array([y0, x0, y1, x1]) / size
    return images, masks, boxes


def _pixel_box(mask, size):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return np.zeros(4)
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]) / size


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_augment_batch_keeps_image_box_and_mask_aligned(mode):
    images, masks, boxes = _scenes()
    aug = ml_collections.ConfigDict(
        {"crop_padding": 5, "crop_mode": mode, "flip": True, "cutout": 0}
    )
    batch = {"image": jnp.asarray(images), "mask": jnp.asarray(masks), "box": jnp.asarray(boxes)}
    out = jax.tree.map(np.asarray, pipeline.augment_batch(batch, jax.random.key(3), aug))
    moved = 0
    for i in range(len(images)):
        bright = out["image"][i, ..., 0] == 200
        mask = out["mask"][i]
        if mode == "constant":
            # The object is where the mask says; crop padding is black and ignored (255).
            np.testing.assert_array_equal(bright, mask == 1)
            np.testing.assert_array_equal(out["image"][i, ..., 0] == 0, mask != 1)
            if (mask == 1).any():
                np.testing.assert_allclose(out["box"][i], _pixel_box(mask == 1, 16), atol=1e-6)
            else:  # Cropped out entirely: the clipped box is empty.
                assert min(out["box"][i][2:] - out["box"][i][:2]) == 0.0
        else:  # Reflection copies the object into the padding: the mask is copied with it.
            np.testing.assert_array_equal(bright, mask == 1)
        moved += not np.array_equal(out["image"][i], images[i])
    assert moved > 16  # Most images were shifted or mirrored.
    # The image alone is transformed exactly as `augment` does it (same random draws).
    alone = pipeline.augment(jnp.asarray(images), jax.random.key(3), aug)
    np.testing.assert_array_equal(out["image"], np.asarray(alone))


def test_flip_and_shift_boxes_by_hand():
    boxes = jnp.array([[0.1, 0.2, 0.5, 0.4], [0.0, 0.0, 1.0, 0.5]])
    flipped = pipeline.flip_boxes_where(boxes, jnp.array([True, False]))
    np.testing.assert_allclose(flipped, [[0.1, 0.6, 0.5, 0.8], [0.0, 0.0, 1.0, 0.5]], atol=1e-6)
    # Offsets (0, 4) with padding 2 on a 10x20 image: down by 0.2, left by 0.1, clipped.
    shifted = pipeline.shift_boxes(boxes, jnp.array([[0, 4], [0, 4]]), 2, (10, 20))
    np.testing.assert_allclose(shifted, [[0.3, 0.1, 0.7, 0.3], [0.2, 0.0, 1.0, 0.4]], atol=1e-6)
