"""Detections over images: every cell's box before non-maximum suppression, the kept ones after.

One row per image, two panels side by side: "before NMS" draws every decoded cell box above
`min_score` (thin, faded by score: the course's "one object detected several times"), "after
NMS" the kept detections above `min_kept_score` with "class score" labels. Ground-truth boxes are
dashed white in both. Colours are a fixed palette by class, with a legend.
"""

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from cnnjax.viz import _figure, _tiles

# A fixed palette: matplotlib's tab10, then tab20's lighter shades; class i always gets
# PALETTE[i % 20], whatever the picture, so a class keeps its colour across pictures.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip


def class_color(index: int) -> str:
    return PALETTE[int(index) % len(PALETTE)]


def _box(ax, box, size, color, *, lw=1.5, alpha=1.0, ls="-"):
    """Draws a normalized (ymin, xmin, ymax, xmax) box on an image of `size` (H, W) pixels."""
    h, w = size
    y0, x0, y1, x1 = np.asarray(box, np.float64) * [h, w, h, w]
    # imshow puts pixel i's centre at i, so the image spans [-0.5, W - 0.5].
    ax.add_patch(
        Rectangle(
            (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=color, lw=lw, alpha=alpha, ls=ls
        )
    )


def detections_figure(
    images,
    before: dict,
    after: dict,
    class_names,
    *,
    truth_boxes=None,
    truth_classes=None,
    min_score: float = 0.05,
    min_kept_score: float = 0.3,
    path: str | None = None,
    title: str = "",
):
    """Before/after-NMS detections for each image.

    images: uint8 (N, H, W, C). before: {"boxes" (N, A, 4), "scores" (N, A), "classes" (N, A)}
    every cell's decoded detection (`cnnjax.tasks.detection.decode`); after: the same plus
    "valid" (N, M) (`postprocess`). Boxes normalized (ymin, xmin, ymax, xmax).
    truth_boxes (N, K, 4) / truth_classes (N, K) (-1 padding): drawn dashed when given.
    Returns the figure's path (None without one).
    """
    images = _tiles.as_batch(images)
    n, h, w = images.shape[:3]
    before = {k: np.asarray(v) for k, v in before.items()}
    after = {k: np.asarray(v) for k, v in after.items()}
    fig, axes = _figure.new_figure(n, 2, figsize=(6.4, 3.2 * n + 0.6), squeeze=False)
    for i in range(n):
        for col, label in enumerate(("before NMS", "after NMS")):
            ax = axes[i, col]
            _tiles.show_image(ax, images[i])
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            if truth_boxes is not None:
                for box, cls in zip(truth_boxes[i], truth_classes[i], strict=True):
                    if cls >= 0:  # White dashes on black: visible on light and dark scenes.
                        _box(ax, box, (h, w), "black", lw=1.6, alpha=0.6)
                        _box(ax, box, (h, w), "white", lw=1.2, ls="--")
            if col == 0:
                keep = before["scores"][i] > min_score
                for box, score, cls in zip(
                    before["boxes"][i][keep],
                    before["scores"][i][keep],
                    before["classes"][i][keep],
                    strict=True,
                ):
                    _box(ax, box, (h, w), class_color(cls), lw=1.0, alpha=0.25 + 0.75 * score)
                ax.set_title(f"{label}: {int(keep.sum())} cells > {min_score:g}", fontsize=9)
            else:
                keep = after["valid"][i] & (after["scores"][i] > min_kept_score)
                for box, score, cls in zip(
                    after["boxes"][i][keep],
                    after["scores"][i][keep],
                    after["classes"][i][keep],
                    strict=True,
                ):
                    _box(ax, box, (h, w), class_color(cls), lw=2.0)
                    y0, x0 = box[0] * h, box[1] * w
                    inside = y0 < 0.12 * h  # No room above the box: label inside it.
                    ax.text(
                        x0 - 0.5,
                        y0 - 0.5,
                        f"{_tiles.class_name(class_names, int(cls))} {score:.2f}",
                        color="black",
                        fontsize=7,
                        va="top" if inside else "bottom",
                        bbox={"fc": class_color(cls), "ec": "none", "pad": 1, "alpha": 0.9},
                        clip_on=True,
                    )
                ax.set_title(f"{label}: {int(keep.sum())} kept > {min_kept_score:g}", fontsize=9)
    handles = [
        Line2D([], [], color=class_color(c), lw=2, label=_tiles.class_name(class_names, c))
        for c in range(len(class_names))
    ]
    if truth_boxes is not None:
        handles.append(Line2D([], [], color="gray", lw=1.2, ls="--", label="ground truth"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    # Room in inches for the legend below and the title above, whatever the number of rows.
    inches = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, 0.35 / inches, 1, 1 - (0.45 if title else 0.0) / inches))
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / inches, va="top")
    _figure.save(fig, path)
    return path
