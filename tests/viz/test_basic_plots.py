"""The end-of-run pictures: training curves and the confusion matrix."""

import matplotlib.image
import numpy as np

from cnnjax.viz import confusion, curves


def test_training_curves_png(tmp_path):
    events = [
        {"step": s, "kind": "train", "loss": 2.0 / s, "accuracy": 1 - 1 / s, "lr": 0.1}
        for s in range(1, 30)
    ]
    events += [
        {"step": s, "kind": "eval", "loss": 2.5 / s, "accuracy": 0.9 - 1 / s} for s in (10, 20, 29)
    ]
    path = tmp_path / "curves.png"
    fig = curves.training_curves(events, title="t", path=str(path))
    assert len(fig.axes) == 3
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 1]
    assert fig.axes[0].get_yscale() == "log"
    assert matplotlib.image.imread(path).shape[1] > 1000


def _loss_tick_labels(low: float, high: float):
    """(major, shown minor) y tick labels of the loss panel for a loss falling high -> low."""
    events = [
        {"step": s, "kind": "train", "loss": high * (low / high) ** (s / 50), "lr": 0.1}
        for s in range(0, 51, 5)
    ]
    ax = curves.training_curves(events).axes[0]
    ax.figure.canvas.draw()
    texts = lambda minor: [
        t.get_text() for t in ax.get_yticklabels(minor=minor) if t.get_text() and t.get_visible()
    ]
    return texts(False), texts(True)


def test_loss_axis_is_labelled_with_plain_numbers():
    # Three decades: the powers of ten as 0.01, 0.1, 1, no minor labels.
    major, minor = _loss_tick_labels(0.004, 2.3)
    assert {"0.01", "0.1", "1"} <= set(major) and minor == []
    # A third of a decade: every minor tick, as plain decimals (the default drew 1.8x10^0).
    major, minor = _loss_tick_labels(1.0, 1.8)
    assert {"1.2", "1.5", "1.8"} <= set(major + minor)
    # Under two decades: the 2s and 5s between the powers of ten.
    major, minor = _loss_tick_labels(0.04, 2.0)
    assert {"0.1", "1"} <= set(major) and {"0.05", "0.2", "0.5"} <= set(minor)
    assert "0.3" not in minor
    assert not any("$" in t or "10^" in t or "e-" in t for t in major + minor)


def test_confusion_matrix_png(tmp_path):
    m = np.array([[5, 1, 0], [0, 4, 2], [1, 0, 7]])
    path = tmp_path / "cm.png"
    fig = confusion.confusion_matrix(m, ["cat", "dog", "bird"], path=str(path))
    ax = fig.axes[0]
    data = ax.images[0].get_array()
    np.testing.assert_allclose(data.sum(axis=1), 1.0)  # Row-normalized colours.
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(str(v) for v in m.flatten() if v)
    assert "accuracy 0.8000" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "bird"]
    assert path.stat().st_size > 10_000


def test_confusion_matrix_of_1000_classes_names_no_ticks(tmp_path):
    rng = np.random.default_rng(0)
    m = rng.integers(0, 3, (1000, 1000))
    path = tmp_path / "cm1000.png"
    fig = confusion.confusion_matrix(m, [f"class_{i}" for i in range(1000)], path=str(path))
    ax = fig.axes[0]
    assert path.stat().st_size > 10_000
    assert not [t.get_text() for t in ax.get_xticklabels() if t.get_text().startswith("class_")]
    assert "index" in ax.get_xlabel()
