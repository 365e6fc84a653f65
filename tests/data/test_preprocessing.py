"""`data.normalization` modes: the values they give, what `data.load` puts on the Dataset, and
the one-line error for an unknown mode."""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from launching import TINY_QUICKSTART, launch

from cnnjax import data as data_lib
from cnnjax.data import pipeline, preprocessing, stats
from cnnjax.errors import UserError


def normalized(pixels, mode, channels=3):
    mean, std = preprocessing.mean_std(mode, channels)
    return np.asarray(pipeline.normalize(np.asarray(pixels, np.uint8), mean, std))


def test_inception_maps_0_to_minus_1_and_255_to_1():
    x = np.array([[0, 0, 0], [255, 255, 255], [0, 255, 0]], np.uint8)
    np.testing.assert_array_equal(
        normalized(x, "inception"), [[-1, -1, -1], [1, 1, 1], [-1, 1, -1]]
    )
    np.testing.assert_array_equal(normalized([[0], [255]], "inception", channels=1), [[-1], [1]])
    mid = normalized([[127, 128, 64]], "inception")
    np.testing.assert_allclose(mid, [[127 / 127.5 - 1, 128 / 127.5 - 1, 64 / 127.5 - 1]], atol=1e-6)


def test_caffe_subtracts_the_imagenet_mean_pixel_without_scaling():
    mean, std = preprocessing.mean_std("caffe", 3)
    x = np.array([[124, 117, 104], [255, 0, 10]], np.float32)
    got = np.asarray(pipeline.normalize(x, mean, std))
    np.testing.assert_allclose(got, x - np.array(preprocessing.CAFFE_MEAN_RGB), atol=1e-4)


def test_dataset_and_imagenet_modes():
    m, s = np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5, 0.6])
    got = preprocessing.mean_std("dataset", 3, m, s)
    np.testing.assert_array_equal(got[0], m.astype(np.float32))
    np.testing.assert_array_equal(got[1], s.astype(np.float32))
    imagenet = preprocessing.mean_std("imagenet", 3)
    np.testing.assert_array_equal(imagenet[0], np.float32(stats.NORMALIZATION["imagenet2012"][0]))


def test_mistakes_are_user_errors_naming_the_choices():
    with pytest.raises(UserError, match="Did you mean 'inception'.*dataset, inception, caffe"):
        preprocessing.check("inceptoin")
    with pytest.raises(UserError, match="for 3-channel .RGB. images, and these have 1"):
        preprocessing.mean_std("caffe", 1)


def test_load_puts_the_mode_on_the_dataset():
    config = ml_collections.ConfigDict({"name": "digits", "image_size": 0})
    ds = data_lib.load(config)
    np.testing.assert_allclose(ds.mean, stats.NORMALIZATION["digits"][0])  # Default: dataset.
    config.normalization = "inception"
    ds = data_lib.load(config)
    np.testing.assert_array_equal(ds.mean, [0.5])
    np.testing.assert_array_equal(ds.std, [0.5])


def test_streamed_datasets_get_the_mode_too(tmp_path):
    config = ml_collections.ConfigDict(
        {
            "name": "tf_flowers",
            "data_dir": str(tmp_path),
            "image_size": 32,
            "feeding": "stream",
            "normalization": "caffe",
        }
    )
    with tfds.testing.mock_data(num_examples=4):
        ds = data_lib.load(config)
    assert not ds.in_memory
    np.testing.assert_allclose(ds.mean * 255, preprocessing.CAFFE_MEAN_RGB, rtol=1e-6)
    np.testing.assert_allclose(ds.std * 255, 1.0, rtol=1e-6)


def test_unknown_normalization_exits_2_with_one_line(tmp_path):
    proc = launch([*TINY_QUICKSTART, f"--workdir={tmp_path}", "--config.data.normalization=tf"])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Unknown data.normalization 'tf'" in lines[0], proc.stderr
    assert "dataset, inception, caffe, imagenet" in lines[0]
