"""The embedded digits: the real 1,797 UCI images, a fixed stratified split, offline."""

import numpy as np

from cnnjax import data as data_lib
from cnnjax.data import digits
from experiments import quickstart


def test_raw_data_is_the_uci_test_set():
    images, labels = digits._load_raw()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.max() == 16 and images.min() == 0
    # Class counts of the UCI optdigits test part (and sklearn.datasets.load_digits).
    np.testing.assert_array_equal(
        np.bincount(labels), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    )


def test_split_is_fixed_stratified_and_disjoint():
    _, labels = digits._load_raw()
    train, test = digits.split_indices(labels)
    assert len(train) + len(test) == 1797 and not set(train) & set(test)
    per_class = np.bincount(labels[test]) / np.bincount(labels)
    np.testing.assert_allclose(per_class, 0.2, atol=0.01)
    train2, test2 = digits.split_indices(labels)
    np.testing.assert_array_equal(test, test2)


def test_quickstart_dataset_is_32x32_uint8():
    ds = data_lib.load(quickstart.get_config().data)
    assert ds.image_shape == (32, 32, 1) and ds.train_images.dtype == np.uint8
    assert ds.num_classes == 10 and ds.class_names[3] == "3"
    assert len(ds.train_labels) == 1438 and len(ds.test_labels) == 359
    # Upsampling keeps the content: mean intensity close to the 8x8 original's.
    raw = digits.load()
    assert abs(ds.test_images.mean() - raw["test_images"].mean()) < 3.0
