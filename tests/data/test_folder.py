"""Image folders: classes from train/, exact pixels, colour modes, resizing, the cache, errors."""

import os

import numpy as np
import pytest
from PIL import Image

from cnnjax.data import folder
from cnnjax.errors import UserError


@pytest.fixture(autouse=True)
def _default_cache_places(monkeypatch):
    """These tests check where the cache goes by default: without the suite's own
    CNNJAX_DATA_CACHE (tests/conftest.py), which would take precedence."""
    monkeypatch.delenv("CNNJAX_DATA_CACHE", raising=False)


def write_tree(root, layout, *, size=(6, 5), mode="RGB", seed=0):
    """layout: {"train/cat": 3, ...} -> that many PNGs per folder; returns {path: pixels}."""
    rng = np.random.default_rng(seed)
    written = {}
    for sub, count in layout.items():
        os.makedirs(os.path.join(root, sub), exist_ok=True)
        for i in range(count):
            shape = (*size, 3) if mode == "RGB" else size
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            path = os.path.join(root, sub, f"img{i}.png")
            Image.fromarray(pixels, mode).save(path)
            written[path] = pixels
    return written


LAYOUT = {"train/dog": 2, "train/cat": 3, "test/cat": 1, "test/dog": 2}


@pytest.fixture
def tree(tmp_path):
    root = str(tmp_path / "pets")
    return root, write_tree(root, LAYOUT)


def test_classes_labels_and_exact_pixels(tree):
    root, written = tree
    out = folder.load_folder(root)
    assert out["class_names"] == ("cat", "dog")
    assert out["train_images"].shape == (5, 6, 5, 3) and out["train_images"].dtype == np.uint8
    assert out["test_images"].shape == (3, 6, 5, 3)
    np.testing.assert_array_equal(out["train_labels"], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(out["test_labels"], [0, 1, 1])
    assert out["train_labels"].dtype == np.int32
    # Files are sorted within a class: train/cat/img0.png comes first, test/dog/img1.png last.
    np.testing.assert_array_equal(out["train_images"][0], written[f"{root}/train/cat/img0.png"])
    np.testing.assert_array_equal(out["test_images"][-1], written[f"{root}/test/dog/img1.png"])


def test_grayscale_sets_keep_one_channel_and_mixed_sets_become_rgb(tmp_path):
    root = str(tmp_path / "gray")
    written = write_tree(root, {"train/a": 2, "test/a": 1}, mode="L")
    out = folder.load_folder(root)
    assert out["train_images"].shape == (2, 6, 5, 1)
    first = written[f"{root}/train/a/img0.png"]
    np.testing.assert_array_equal(out["train_images"][0, ..., 0], first)
    write_tree(root, {"train/b": 1, "test/b": 1}, mode="RGB")
    mixed = folder.load_folder(root)
    assert mixed["train_images"].shape == (3, 6, 5, 3)
    gray = mixed["train_images"][0]
    np.testing.assert_array_equal(gray, np.repeat(gray[..., :1], 3, axis=-1))


def test_image_size_resizes_every_image(tmp_path):
    root = str(tmp_path / "sizes")
    write_tree(root, {"train/a": 1, "test/a": 1}, size=(6, 5))
    write_tree(root, {"train/b": 1, "test/b": 1}, size=(9, 12), seed=1)
    out = folder.load_folder(root, image_size=4)
    assert out["train_images"].shape == (2, 4, 4, 3) and out["test_images"].shape == (2, 4, 4, 3)


def test_differing_sizes_name_two_files_and_the_fix(tmp_path):
    root = str(tmp_path / "sizes")
    write_tree(root, {"train/a": 1, "test/a": 1}, size=(6, 5))
    write_tree(root, {"train/b": 1, "test/b": 1}, size=(9, 12), seed=1)
    with pytest.raises(UserError, match=r"train/a/img0.png is 5x6.*train/b/img0.png is 12x9"):
        folder.load_folder(root)
    with pytest.raises(UserError, match="--config.data.image_size"):
        folder.load_folder(root)


def test_second_load_comes_from_the_cache(tree, monkeypatch):
    root, _ = tree
    first = folder.load_folder(root)
    cache_files = os.listdir(os.path.join(root, ".cnnjax_cache"))
    assert len(cache_files) == 1 and cache_files[0].endswith(".npz")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(folder, "_decode", no_decoding)
    second = folder.load_folder(root)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert second["class_names"] == ("cat", "dog")


def test_changes_rebuild_the_cache_and_drop_the_stale_file(tree):
    root, _ = tree
    folder.load_folder(root)
    write_tree(root, {"train/cat": 4}, seed=7)  # Adds img3.png, rewrites img0..2.png.
    out = folder.load_folder(root)
    assert len(out["train_labels"]) == 6
    assert len(os.listdir(os.path.join(root, ".cnnjax_cache"))) == 1
    resized = folder.load_folder(root, image_size=3)  # image_size is part of the key.
    assert resized["train_images"].shape[1:3] == (3, 3)


def test_unwritable_cache_dir_falls_back_to_home(tree, tmp_path, monkeypatch):
    root, _ = tree
    with open(os.path.join(root, ".cnnjax_cache"), "w") as f:
        f.write("a file where the cache folder would go")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder.load_folder(root)
    assert len(os.listdir(tmp_path / "home" / ".cache" / "cnnjax")) == 1


def test_cache_directory_from_the_environment(tree, tmp_path, monkeypatch):
    root, _ = tree
    monkeypatch.setenv("CNNJAX_DATA_CACHE", "off")
    folder.load_folder(root)
    assert not os.path.exists(os.path.join(root, ".cnnjax_cache"))
    monkeypatch.setenv("CNNJAX_DATA_CACHE", str(tmp_path / "chosen"))
    folder.load_folder(root)
    assert len(os.listdir(tmp_path / "chosen")) == 1
    assert not os.path.exists(os.path.join(root, ".cnnjax_cache"))


def test_explicit_cache_dir(tree, tmp_path):
    root, _ = tree
    folder.load_folder(root, cache_dir=str(tmp_path / "cache"))
    assert len(os.listdir(tmp_path / "cache")) == 1
    assert not os.path.exists(os.path.join(root, ".cnnjax_cache"))


@pytest.mark.parametrize(
    "layout, remove, match",
    [
        ({}, None, "does not exist"),
        ({"test/a": 1}, None, "no train/ subfolder"),
        ({"train/a": 1}, None, "no test/ subfolder"),
        ({"train": 0, "test": 0}, None, "holds no class folders"),
        ({"train/a": 1, "test/a": 1, "test/zebra": 1}, None, "zebra exist in .*test/ but not"),
        ({"train/a": 1, "train/b": 0, "test/a": 1}, None, r"\bb in .*train/ hold no"),
        ({"train/a": 1, "test/a": 1}, "test/a/img0.png", "No images .*test/"),
    ],
)
def test_user_errors(tmp_path, layout, remove, match):
    root = str(tmp_path / "data")
    if layout:
        write_tree(root, layout)
    if remove:
        os.remove(os.path.join(root, remove))
    with pytest.raises(UserError, match=match):
        folder.load_folder(root)


def test_unreadable_images_are_named_and_skipped(tree, capsys):
    root, _ = tree
    before = folder.load_folder(root)
    bad = os.path.join(root, "train", "dog", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"not a png")
    good = os.path.join(root, "train", "cat", "img0.png")
    truncated = os.path.join(root, "train", "cat", "truncated.png")
    with open(good, "rb") as f, open(truncated, "wb") as out:
        out.write(f.read()[:40])
    loaded = folder.load_folder(root)
    lines = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(lines) == 2 and any(bad in line for line in lines), lines
    assert any(truncated in line for line in lines), lines
    np.testing.assert_array_equal(loaded["train_images"], before["train_images"])
    np.testing.assert_array_equal(loaded["train_labels"], before["train_labels"])


def test_a_split_without_a_readable_image_is_a_user_error(tmp_path):
    root = str(tmp_path / "data")
    write_tree(root, {"train/a": 1, "train/b": 1, "test/a": 1})
    with open(os.path.join(root, "test", "a", "img0.png"), "wb") as f:
        f.write(b"junk")
    with pytest.raises(UserError, match="No readable image in .*test/"):
        folder.load_folder(root)


def test_non_images_and_hidden_files_are_ignored(tree):
    root, _ = tree
    for name in ("notes.txt", "._img0.png"):
        with open(os.path.join(root, "train", "cat", name), "wb") as f:
            f.write(b"junk")
    assert len(folder.load_folder(root)["train_labels"]) == 5


def test_worker_processes_decode_the_same_pixels_in_the_same_order(tmp_path, monkeypatch):
    root = str(tmp_path / "many")
    write_tree(root, {"train/a": 7, "train/b": 6, "test/a": 3, "test/b": 2})
    serial = folder.load_folder(root, cache_dir=str(tmp_path / "c1"), num_workers=1)
    monkeypatch.setattr(folder, "_MIN_FILES_FOR_PROCESSES", 1)
    parallel = folder.load_folder(root, cache_dir=str(tmp_path / "c2"), num_workers=2)
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(parallel[key], serial[key])


def _data_config(root, **kw):
    import ml_collections

    return ml_collections.ConfigDict({"name": f"folder:{root}", "image_size": 0, **kw})


def test_streamed_folder_reads_the_same_images_and_labels(tmp_path):
    from cnnjax import data
    from cnnjax.data import transforms

    root = str(tmp_path / "pets")
    write_tree(root, LAYOUT, size=(6, 6))
    memory = data.load(_data_config(root, image_size=6))
    streamed = data.load(_data_config(root, image_size=6, feeding="stream"))
    assert memory.in_memory and not streamed.in_memory
    assert streamed.image_shape == (6, 6, 3) and streamed.class_names == ("cat", "dog")
    assert (streamed.num_train, streamed.num_test) == (5, 3)
    for split, images, labels, source in (
        ("train", memory.train_images, memory.train_labels, streamed.train_source),
        ("test", memory.test_images, memory.test_labels, streamed.test_source),
    ):
        for i in range(len(source)):
            record = source[i]
            np.testing.assert_array_equal(transforms.decode(record["image"]), images[i], split)
            assert int(record["label"]) == int(labels[i])
    # Streamed statistics are estimated from decoded samples (resized to 64 px): close, not equal.
    np.testing.assert_allclose(streamed.mean, memory.mean, atol=0.02)


def test_big_folders_stream_and_need_an_image_size(tmp_path, monkeypatch):
    from cnnjax import data

    root = str(tmp_path / "pets")
    write_tree(root, LAYOUT, size=(6, 6))
    assert folder.pixel_bytes(root) == 8 * 6 * 6 * 3  # From the first image's header.
    assert folder.pixel_bytes(root, 10) == 8 * 10 * 10 * 3
    monkeypatch.setattr(data, "IN_MEMORY_LIMIT_BYTES", 100)  # "Too big for the devices."
    assert not data.load(_data_config(root, image_size=6)).in_memory
    with pytest.raises(UserError, match="image_size"):
        data.load(_data_config(root))
