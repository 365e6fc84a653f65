"""Segmentation: predicted masks next to the truth, in a fixed class palette with a legend."""

import numpy as np
from matplotlib.patches import Patch

from cnnjax.viz._figure import new_figure, save
from cnnjax.viz._tiles import as_batch, show_image

# Class c is always PALETTE[c % len(PALETTE)] (RGB uint8), so pictures of runs compare.
PALETTE = np.array(
    [
        (0, 0, 0),  # class 0 (background for shapes)
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (255, 225, 25),
        (145, 30, 180),
        (70, 240, 240),
        (245, 130, 48),
        (240, 50, 230),
        (210, 245, 60),
        (128, 128, 0),
        (0, 128, 128),
    ],
    np.uint8,
)
IGNORE_COLOR = np.array((128, 128, 128), np.uint8)  # ignored pixels: gray
ALPHA = 0.55  # Mask opacity over the image.


def colorize(mask, ignore_label: int = 255) -> np.ndarray:
    """Label map (..., H, W) -> RGB uint8 (..., H, W, 3) in `PALETTE`; ignored pixels gray."""
    mask = np.asarray(mask).astype(np.int64)
    out = PALETTE[mask % len(PALETTE)]
    return np.where((mask == ignore_label)[..., None], IGNORE_COLOR, out)


def overlay(image, mask, ignore_label: int = 255, alpha: float = ALPHA) -> np.ndarray:
    """The colorized mask blended over a uint8 (H, W, C) image: (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    blend = (1 - alpha) * image[..., :3].astype(np.float32) + alpha * colorize(mask, ignore_label)
    return np.clip(blend + 0.5, 0, 255).astype(np.uint8)


def masks_figure(
    images,
    true_masks,
    pred_masks,
    class_names,
    *,
    ignore_label: int = 255,
    path: str | None = None,
    title: str = "",
):
    """One row per image: the image, the true mask, the predicted mask (with the image's pixel
    accuracy) in the fixed `PALETTE`, and the prediction blended over the image; a legend of
    the class colours below.

    images: uint8 (N, H, W, C); true_masks, pred_masks: (N, H, W) class indices.
    """
    images = as_batch(images)
    true_masks, pred_masks = np.asarray(true_masks), np.asarray(pred_masks)
    n = len(images)
    height = 2.2 * n + 1.2
    fig, axes = new_figure(n, 4, figsize=(9.2, height), squeeze=False)
    for i in range(n):
        valid = true_masks[i] != ignore_label
        acc = float((pred_masks[i] == true_masks[i])[valid].mean()) if valid.any() else np.nan
        first = i == 0
        show_image(axes[i, 0], images[i], title="image" if first else None, fontsize=10)
        show_image(
            axes[i, 1],
            colorize(true_masks[i], ignore_label),
            title="true mask" if first else None,
            fontsize=10,
        )
        show_image(
            axes[i, 2],
            colorize(pred_masks[i], ignore_label),
            title=("predicted mask\n" if first else "") + f"pixel accuracy {acc:.2f}",
            fontsize=9,
        )
        show_image(
            axes[i, 3],
            overlay(images[i], pred_masks[i], ignore_label),
            title="prediction over image" if first else None,
            fontsize=10,
        )
    handles = [
        Patch(facecolor=PALETTE[c % len(PALETTE)] / 255.0, edgecolor="black", label=name)
        for c, name in enumerate(class_names)
    ]
    if np.any(true_masks == ignore_label):
        handles.append(Patch(facecolor=IGNORE_COLOR / 255.0, edgecolor="black", label="ignored"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.5 / height, 1, 1 - 0.15 / height))
    save(fig, path)
    return fig
