"""Classification with localization: true and predicted boxes over test images."""

import numpy as np
from matplotlib.patches import Rectangle

from cnnjax.ops.boxes import box_iou
from cnnjax.viz._figure import new_figure, save
from cnnjax.viz._tiles import as_batch, class_name, grid_shape, show_image

TRUE_COLOR, PRED_COLOR = "#2ca02c", "#ff7f0e"  # green truth, orange prediction


def _rectangle(box, h: int, w: int, color: str, style: str) -> Rectangle:
    """A normalized (ymin, xmin, ymax, xmax) box as a patch in pixel coordinates (pixel edges
    at -0.5 in imshow's axes)."""
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return Rectangle(
        (xmin * w - 0.5, ymin * h - 0.5),
        (xmax - xmin) * w,
        (ymax - ymin) * h,
        fill=False,
        edgecolor=color,
        linewidth=2,
        linestyle=style,
    )


def boxes_figure(
    images,
    true_labels,
    true_boxes,
    pred_labels,
    pred_boxes,
    class_names,
    *,
    path: str | None = None,
    title: str = "",
):
    """A grid of images with the true box (solid green) and the predicted one (dashed orange),
    titled "pred: square (true: square)" and the IoU of the two boxes.

    images: uint8 (N, H, W, C); *_labels: (N,); *_boxes: (N, 4) normalized
    (ymin, xmin, ymax, xmax).
    """
    images = as_batch(images)
    true_boxes, pred_boxes = np.asarray(true_boxes), np.asarray(pred_boxes)
    ious = np.asarray(box_iou(pred_boxes, true_boxes))
    n, h, w = images.shape[:3]
    rows, cols = grid_shape(n)
    fig, axes = new_figure(rows, cols, figsize=(2.6 * cols, 2.8 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, ax in zip(range(n), axes.flat, strict=False):
        t, p = int(true_labels[i]), int(pred_labels[i])
        show_image(
            ax,
            images[i],
            title=f"pred: {class_name(class_names, p)} (true: {class_name(class_names, t)})\n"
            f"IoU {ious[i]:.2f}",
            fontsize=9,
            color="black" if t == p else "red",
        )
        ax.add_patch(_rectangle(true_boxes[i], h, w, TRUE_COLOR, "-"))
        ax.add_patch(_rectangle(pred_boxes[i], h, w, PRED_COLOR, "--"))
    fig.suptitle(
        (f"{title}\n" if title else "")
        + f"mean IoU {ious.mean():.3f} over these {n} images; red title: wrong class",
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, path)
    return fig
