"""Detections before and after NMS (cnnjax.viz.detections)."""

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from viz_testing import check_png

from cnnjax.data import shapes
from cnnjax.tasks import detection
from cnnjax.viz import detections


def test_before_and_after_nms_side_by_side(tmp_path, monkeypatch):
    scenes = shapes.generate(2, image_size=64, seed=3, max_objects=3)
    pred = np.random.default_rng(0).normal(0.0, 1.0, (2, 8, 8, 8)).astype(np.float32)
    before = detection.decode(jnp.asarray(pred))
    after = detection.postprocess(before, max_detections=5)
    saved = []
    monkeypatch.setattr(detections._figure, "save", lambda fig, path: saved.append(fig))
    detections.detections_figure(
        scenes["images"], before, after, shapes.CLASS_NAMES,
        truth_boxes=scenes["boxes"], truth_classes=scenes["classes"],
        min_score=0.0, min_kept_score=0.0, title="t",
    )  # fmt: skip
    fig = saved[0]
    axes = fig.axes
    assert len(axes) == 4  # 2 images x (before, after)
    # Every decoded cell box (64) + the truth before NMS; the <= 5 kept + the truth after
    # (each truth box is two patches: a black outline under white dashes).
    truth = 2 * int((scenes["classes"][0] >= 0).sum())
    assert len(axes[0].patches) == 64 + truth
    kept = int(after["valid"][0].sum())
    assert 1 <= kept <= 5 and len(axes[1].patches) == kept + truth
    assert axes[0].get_title().startswith("before NMS")
    assert axes[1].get_title().startswith("after NMS")
    labels = [t.get_text() for t in axes[1].texts]
    assert len(labels) == kept and all(t.split()[0] in shapes.CLASS_NAMES for t in labels)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [*shapes.CLASS_NAMES, "ground truth"]
    plt.close(fig)


def test_writes_a_png(tmp_path):
    scenes = shapes.generate(3, image_size=64, seed=3, max_objects=3)
    pred = np.random.default_rng(1).normal(0.0, 1.0, (3, 8, 8, 8)).astype(np.float32)
    before = detection.decode(jnp.asarray(pred))
    path = tmp_path / "detections.png"
    detections.detections_figure(
        scenes["images"], before, detection.postprocess(before), shapes.CLASS_NAMES,
        path=str(path),
    )  # fmt: skip
    check_png(path)
