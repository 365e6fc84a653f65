"""TFDS by name without TensorFlow: mocked datasets, a tiny dataset written by TFDS's own
writer, the real CIFAR-10 subset in ../shared (skipped when absent), and the user errors."""

import importlib.util
import os
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from cnnjax.data import tfds_source
from cnnjax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_TFDS = os.path.join(ROOT, "..", "shared", "tensorflow_datasets")
needs_shared = pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHARED_TFDS, "cifar10")),
    reason="../shared/tensorflow_datasets (real CIFAR-10 subset) is absent",
)


class CnnjaxTinyGray(tfds.core.GeneratorBasedBuilder):
    """10 train / 4 test grayscale images of two sizes (6x5 and 7x5), 3 classes.

    Written as array_record by TFDS itself: its writer needs no TensorFlow when images arrive
    as PIL images (only encoding NumPy arrays calls tf.image).
    """

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(None, None, 1)),
                "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(10), "test": self._generate_examples(4)}

    def _generate_examples(self, n):
        rng = np.random.default_rng(n)
        for i in range(n):
            pixels = rng.integers(0, 256, (6 + i % 2, 5), dtype=np.uint8)
            yield i, {"image": Image.fromarray(pixels), "label": i % 3}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    CnnjaxTinyGray(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


@pytest.mark.parametrize(
    "name, shape, num_classes, first_class",
    # cifar10's code learns its class names from the downloaded files, so without metadata
    # files the mock only knows "0".."9"; the real subset below checks "airplane".
    [("cifar10", (32, 32, 3), 10, "0"), ("mnist", (28, 28, 1), 10, "0")],
)
def test_mock_data_reads_through_data_source(tmp_path, name, shape, num_classes, first_class):
    # mock_data patches builder.as_data_source (random examples, any data_dir, no slicing).
    with tfds.testing.mock_data(num_examples=40):
        out = tfds_source.load_tfds(name, data_dir=str(tmp_path))
    assert out["train_images"].shape == (40, *shape) and out["train_images"].dtype == np.uint8
    assert out["test_images"].shape == (40, *shape)
    assert out["train_labels"].dtype == np.int32 and out["train_labels"].shape == (40,)
    assert out["train_labels"].min() >= 0 and out["train_labels"].max() < num_classes
    assert len(out["class_names"]) == num_classes and out["class_names"][0] == first_class


def test_thread_count_does_not_change_the_result(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_source, "_MIN_PIXELS_FOR_THREADS", 1)  # Threads for 32x32 too.
    with tfds.testing.mock_data(num_examples=600):
        source = tfds_source.data_source("cifar10", "train", data_dir=str(tmp_path))
        one = tfds_source.read_examples(source, "image", "label", num_threads=1)
        many = tfds_source.read_examples(source, "image", "label", num_threads=4)
    np.testing.assert_array_equal(one[0], many[0])
    np.testing.assert_array_equal(one[1], many[1])


def test_tiny_dataset_written_without_tensorflow(tiny_dir):
    out = tfds_source.load_tfds("cnnjax_tiny_gray", data_dir=tiny_dir, image_size=8)
    assert out["train_images"].shape == (10, 8, 8, 1) and out["test_images"].shape == (4, 8, 8, 1)
    assert out["class_names"] == ("a", "b", "c")
    np.testing.assert_array_equal(np.bincount(out["train_labels"]), [4, 3, 3])
    assert tfds_source.split_size("cnnjax_tiny_gray", "train[:50%]", tiny_dir) == 5
    half = tfds_source.load_tfds(
        "cnnjax_tiny_gray", data_dir=tiny_dir, train_split="train[:50%]", image_size=8
    )
    assert len(half["train_labels"]) == 5


def test_decoded_arrays_are_cached_until_the_files_change(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNJAX_DATA_CACHE", str(tmp_path / "cache"))
    first = tfds_source.load_tfds("cnnjax_tiny_gray", data_dir=tiny_dir, image_size=8)
    (cached,) = os.listdir(tmp_path / "cache" / "tfds")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache holds the arrays")

    with monkeypatch.context() as m:
        m.setattr(tfds_source, "read_examples", no_decoding)
        again = tfds_source.load_tfds("cnnjax_tiny_gray", data_dir=tiny_dir, image_size=8)
    assert again["class_names"] == first["class_names"] == ("a", "b", "c")
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(again[key], first[key])

    # Other settings are another copy, kept beside the first; a changed data file invalidates
    # both, and each new copy replaces the stale one of its settings.
    tfds_source.load_tfds("cnnjax_tiny_gray", data_dir=tiny_dir, image_size=6)
    listing = lambda: set(os.listdir(tmp_path / "cache" / "tfds"))  # noqa: E731
    (resized,) = listing() - {cached}
    data_file = next(
        os.path.join(root, f)
        for root, _, files in os.walk(tiny_dir)
        for f in files
        if "array_record" in f
    )
    stat = os.stat(data_file)
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    tfds_source.load_tfds("cnnjax_tiny_gray", data_dir=tiny_dir, image_size=6)
    (changed,) = listing() - {cached}
    assert changed != resized and len(listing()) == 2

    # A damaged copy is decoded again and replaced.
    with open(tmp_path / "cache" / "tfds" / changed, "wb") as f:
        f.write(b"PK\x03\x04 not a whole zip file")
    repaired = tfds_source.load_tfds("cnnjax_tiny_gray", data_dir=tiny_dir, image_size=6)
    assert repaired["train_images"].shape == (10, 6, 6, 1)
    with monkeypatch.context() as m:
        m.setattr(tfds_source, "read_examples", no_decoding)
        tfds_source.load_tfds("cnnjax_tiny_gray", data_dir=tiny_dir, image_size=6)


def test_no_cache_when_off_or_mocked(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNJAX_DATA_CACHE", "off")
    tfds_source.load_tfds("cnnjax_tiny_gray", data_dir=tiny_dir, image_size=8)
    assert sorted(os.listdir(tmp_path)) == []  # Neither ~/.cache nor a folder named "off".
    # Mock examples of a really prepared dataset are random: never cached, never served from
    # the real data's copy.
    monkeypatch.setenv("CNNJAX_DATA_CACHE", str(tmp_path / "cache"))
    with tfds.testing.mock_data(num_examples=8, data_dir=tiny_dir):
        mocked = tfds_source.load_tfds("cnnjax_tiny_gray", data_dir=tiny_dir, image_size=8)
    assert len(mocked["train_labels"]) == 8
    assert not (tmp_path / "cache").exists()


def test_differing_image_sizes_ask_for_image_size(tiny_dir):
    with pytest.raises(UserError, match="--config.data.image_size"):
        tfds_source.load_tfds("cnnjax_tiny_gray", data_dir=tiny_dir)


@pytest.fixture(scope="module")
def cifar():
    return tfds_source.load_tfds("cifar10", data_dir=SHARED_TFDS)


@needs_shared
def test_real_cifar10_subset(cifar):
    assert cifar["train_images"].shape == (5000, 32, 32, 3)
    assert cifar["test_images"].shape == (1000, 32, 32, 3)
    assert cifar["train_images"].dtype == np.uint8 and cifar["train_labels"].dtype == np.int32
    assert cifar["class_names"][:2] == ("airplane", "automobile")
    assert len(cifar["class_names"]) == 10
    np.testing.assert_array_equal(np.bincount(cifar["train_labels"]), [500] * 10)
    np.testing.assert_array_equal(np.bincount(cifar["test_labels"]), [100] * 10)
    # Real photos, not blank decodes: mean brightness near CIFAR-10's (about 120 of 255).
    assert 100 < cifar["train_images"].mean() < 140


@needs_shared
def test_small_images_are_read_in_one_thread():
    source = tfds_source.data_source("cifar10", "train[:10%]", data_dir=SHARED_TFDS)
    readers = set()

    class Recorded:
        def __len__(self):
            return len(source)

        def __getitem__(self, i):
            readers.add(threading.get_ident())
            return source[i]

    images, _ = tfds_source.read_examples(Recorded(), "image", "label", num_threads=4)
    assert images.shape == (500, 32, 32, 3)
    assert readers == {threading.get_ident()}  # 32x32 PNGs decode faster without threads.


@needs_shared
def test_decoding_a_big_split_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNJAX_DATA_CACHE", str(tmp_path / "cache"))
    tfds_source.load_tfds("cifar10", data_dir=SHARED_TFDS)
    lines = capsys.readouterr().out.splitlines()
    # The 5,000 training images are a wait worth announcing (tests have no terminal: lines, not
    # a bar); the 1,000 test images are not.
    assert (
        lines[0] == "cifar10 train: decoding 5,000 images once; later runs read the decoded cache"
    )
    assert lines[1].startswith("cifar10 train: 5,000 images decoded in ") and len(lines) == 2
    tfds_source.load_tfds("cifar10", data_dir=SHARED_TFDS)  # From the cache: quiet.
    assert capsys.readouterr().out == ""


@needs_shared
def test_real_cifar10_slices():
    assert tfds_source.split_size("cifar10", "train[:10%]", SHARED_TFDS) == 500
    source = tfds_source.data_source("cifar10", "train[:10%]", data_dir=SHARED_TFDS)
    assert len(source) == 500
    images, labels = tfds_source.read_examples(source, "image", "label")
    assert images.shape == (500, 32, 32, 3) and labels.shape == (500,)


@needs_shared
def test_data_dir_from_environment(monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", SHARED_TFDS)
    assert tfds_source.resolve_data_dir(None) == os.path.abspath(SHARED_TFDS)
    assert tfds_source.resolve_data_dir("/elsewhere") == "/elsewhere"
    assert tfds_source.split_size("cifar10", "test", None) == 1000


@needs_shared
def test_bad_split_names_the_splits():
    with pytest.raises(UserError, match=r"'validation'.*train, test"):
        tfds_source.load_tfds("cifar10", data_dir=SHARED_TFDS, train_split="validation")


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
    with pytest.raises(UserError) as error:
        tfds_source.load_tfds("cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert "'cifar10'" in message and str(tmp_path) in message
    assert f"tfds build cifar10 --data_dir={tmp_path} --file_format=array_record" in message
    assert "pip install 'cnnjax[prepare]'" in message and "--config.data.data_dir" in message
    assert "manual" not in message  # cifar10 downloads by itself.


def test_manual_download_datasets_name_the_files_and_manual_dir(tmp_path):
    with pytest.raises(UserError) as error:
        tfds_source.load_tfds("imagenet2012", data_dir=str(tmp_path))
    message = str(error.value)
    assert "cannot be downloaded automatically" in message
    assert "ILSVRC2012_img_train.tar" in message  # TFDS's own instructions, on one line.
    assert f"tfds build imagenet2012 --data_dir={tmp_path}" in message
    assert "--manual_dir=" in message and "\n" not in message


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow would download"
)
def test_download_without_tensorflow_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="needs TensorFlow.*tfds build cifar10"):
        tfds_source.load_tfds("cifar10", data_dir=str(tmp_path), download=True)


def test_unknown_name_suggests_close_ones(tmp_path):
    with pytest.raises(UserError, match=r"Unknown TFDS dataset 'cifar_10'.*'cifar10'"):
        tfds_source.load_tfds("cifar_10", data_dir=str(tmp_path))
