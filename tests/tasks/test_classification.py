"""The classification task: what it refuses before any training."""

import types

import ml_collections
import pytest

from cnnjax.errors import UserError
from cnnjax.tasks.classification import Classification, for_labels


def test_one_class_is_a_user_error():
    data = types.SimpleNamespace(name="folder:/x", num_classes=1)
    with pytest.raises(UserError, match="folder:/x has 1 class: a classifier needs at least two"):
        Classification(ml_collections.ConfigDict({"label_smoothing": 0.0}), data)


def test_two_classes_are_enough():
    assert for_labels(2).data.num_classes == 2
