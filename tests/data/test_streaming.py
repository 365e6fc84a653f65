"""The streaming pipeline reads exactly the on-device pipeline's examples per (seed, epoch,
step), splits each global batch between processes, and augments deterministically."""

import jax.numpy as jnp
import numpy as np

from cnnjax.data import pipeline, transforms
from cnnjax.data.streaming import IndexedStream

N = 100


def _source():
    images = np.arange(N, dtype=np.uint8)[:, None, None, None] * np.ones((N, 4, 4, 1), np.uint8)
    return images, [{"image": images[i], "label": np.int32(i)} for i in range(N)]


def _identity(record, rng):
    del rng
    return {"image": record["image"], "label": record["label"]}


def test_same_examples_as_on_device_for_each_seed_epoch_step():
    images, source = _source()
    stream = IndexedStream(source, global_batch=8, seed=3, transform=_identity, num_threads=2)
    batches = stream.batches(start_step=10)
    for _ in range(6):  # Crosses the epoch boundary at step 12.
        step, batch = next(batches)
        epoch, in_epoch = divmod(step, stream.steps_per_epoch)
        perm = pipeline.epoch_permutation(np.int32(3), epoch, N)
        arrays = {"image": jnp.asarray(images), "label": jnp.arange(N)}
        want = pipeline.take_batch(arrays, perm, in_epoch, 8)
        np.testing.assert_array_equal(batch["label"], np.asarray(want["label"]))
        np.testing.assert_array_equal(batch["image"], np.asarray(want["image"]))


def test_processes_read_disjoint_slices_of_the_global_batch():
    _, source = _source()
    per_process = [
        IndexedStream(
            source, global_batch=8, seed=0, transform=_identity, process_index=p, process_count=2
        )
        for p in range(2)
    ]
    whole = IndexedStream(source, global_batch=8, seed=0, transform=_identity)
    a, b = (next(s.batches(5))[1]["label"] for s in per_process)
    np.testing.assert_array_equal(np.concatenate([a, b]), next(whole.batches(5))[1]["label"])
    assert not set(a) & set(b)


def test_augmentation_is_deterministic_per_seed_epoch_index():
    rng_image = np.random.default_rng(0).integers(0, 255, (40, 50, 3)).astype(np.uint8)
    source = [{"image": rng_image, "label": np.int32(0)}] * 16

    def crop(record, rng):
        return {
            "image": transforms.random_resized_crop(record["image"], rng, 24),
            "label": record["label"],
        }

    first = next(IndexedStream(source, global_batch=4, seed=1, transform=crop).batches(2))[1]
    again = next(IndexedStream(source, global_batch=4, seed=1, transform=crop).batches(2))[1]
    np.testing.assert_array_equal(first["image"], again["image"])
    assert first["image"].shape == (4, 24, 24, 3)


def test_random_resized_crop_and_center_crop_shapes_and_content():
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, 40:] = 255  # Right half white.
    rng = np.random.default_rng(0)
    crops = [transforms.random_resized_crop(image, rng, 32) for _ in range(20)]
    assert all(c.shape == (32, 32, 3) and c.dtype == np.uint8 for c in crops)
    assert len({int(c.mean()) for c in crops}) > 3  # Different regions.
    center = transforms.center_crop(image, 28)
    assert center.shape == (28, 28, 3)
    # The short side goes to 32 (28 / 0.875), so the center crop straddles the edge evenly.
    assert abs(center[:, :14].mean() - 0) < 30 and abs(center[:, 14:].mean() - 255) < 30


def test_decode_png_bytes():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((5, 7, 3), 200, np.uint8)).save(buf, format="PNG")
    out = transforms.decode(buf.getvalue())
    assert out.shape == (5, 7, 3) and out[0, 0, 0] == 200


def test_host_pad_crop_equals_pad_then_crop():
    image = np.random.default_rng(0).integers(0, 255, (9, 7, 3)).astype(np.uint8)
    for seed in range(30):
        for mode in ("constant", "reflect"):
            out = transforms.pad_crop(image, np.random.default_rng(seed), 3, mode)
            dy, dx = np.random.default_rng(seed).integers(0, 7, size=2)
            padded = np.pad(image, ((3, 3), (3, 3), (0, 0)), mode=mode)
            np.testing.assert_array_equal(out, padded[dy : dy + 9, dx : dx + 7])
