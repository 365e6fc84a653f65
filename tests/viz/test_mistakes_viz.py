"""The most confident mistakes (cnnjax.viz.mistakes)."""

import numpy as np
from viz_testing import check_png

from cnnjax.viz import mistakes


def _data():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    probs = np.full((8, 3), 0.05)
    confident = {0: (1, 0.90), 1: (1, 0.99), 2: (0, 0.60), 3: (2, 0.97), 5: (0, 0.70), 6: (2, 0.8)}
    for i, (pred, p) in confident.items():
        probs[i, pred] = p
    probs[4, 1] = 0.5  # Label 4 is out of the 3 classes: always wrong, pred 1 at 0.5.
    probs[7, 0] = 0.4
    return labels, probs


def test_chooses_the_most_confident_wrong_ones_in_order():
    labels, probs = _data()
    # Right: image 1 (label 1, pred 1). Wrong, by confidence: 3 (.97), 0 (.90), 6 (.80),
    # 5 (.70), 2 (.60), 4 (.50), 7 (.40).
    assert mistakes.confident_mistakes(labels, probs, k=4).tolist() == [3, 0, 6, 5]
    assert mistakes.confident_mistakes(labels, probs, k=100).tolist() == [3, 0, 6, 5, 2, 4, 7]


def test_grid_titles(tmp_path):
    labels, probs = _data()
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8)
    path = tmp_path / "mistakes.png"
    fig = mistakes.most_confident_mistakes(
        images, labels, probs, ["cat", "dog", "bird"], k=3, path=str(path)
    )
    tiles = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in tiles] == [
        "true: 3 / pred: bird (0.97)",  # No name for class 3: its index.
        "true: cat / pred: dog (0.90)",
        "true: 6 / pred: bird (0.80)",
    ]
    np.testing.assert_array_equal(tiles[0].images[0].get_array(), images[3, ..., 0])
    assert "3 of 7 wrong out of 8 images" in fig._suptitle.get_text()
    check_png(path)


def test_no_mistakes(tmp_path):
    labels = np.array([0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    images = np.zeros((3, 8, 8, 3), np.uint8)
    path = tmp_path / "none.png"
    fig = mistakes.most_confident_mistakes(images, labels, probs, ["a", "b"], path=str(path))
    assert not any(ax.images for ax in fig.axes)
    assert any(t.get_text() == "no mistakes" for ax in fig.axes for t in ax.texts)
    assert "no mistakes on 3 images" in fig._suptitle.get_text()
    check_png(path, min_bytes=2_000, min_width=200)
