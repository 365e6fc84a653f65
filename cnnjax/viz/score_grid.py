"""A convolutionalized classifier slid over a larger image: its class-score grid as heat maps.

`cnnjax.models.convolutionalize` turns a classifier's dense head into convolutions; on an image
larger than the training size it outputs one class-score vector per window (stride s = the
trunk's total stride). `score_grid` tiles test images into such a larger canvas and runs it;
`score_grid_figure` draws the canvas, one heat map per class (the softmax probability of every
window, placed at the window's centre, over the faded canvas), and the arg-max class of every
window in a fixed palette with a legend.
"""

import math

import jax
import numpy as np
from matplotlib.patches import Patch

from cnnjax.models.convolutionalize import convolutionalize
from cnnjax.viz import _figure, _tiles
from cnnjax.viz.detections import class_color


def tile_canvas(images, rows: int, cols: int) -> np.ndarray:
    """uint8 images (N >= rows*cols, h, w, C) -> one (rows*h, cols*w, C) canvas, row-major."""
    images = _tiles.as_batch(images)
    n, h, w, c = images.shape
    if n < rows * cols:
        raise ValueError(f"need {rows * cols} images for a {rows}x{cols} canvas, got {n}")
    grid = images[: rows * cols].reshape(rows, cols, h, w, c)
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def score_grid(model, variables, canvas, mean, std, input_shape) -> tuple[np.ndarray, int]:
    """(probabilities (H', W', classes), stride) of `model`'s classifier at every window of the
    uint8 `canvas` (H, W, C); `input_shape` is the training input (h, w, C)."""
    conv_model, conv_vars = convolutionalize(model, variables, input_shape=tuple(input_shape))
    x = _tiles.normalize(canvas, mean, std)
    logits = jax.jit(lambda v, x: conv_model.apply(v, x, train=False))(conv_vars, x)
    probs = np.asarray(jax.nn.softmax(logits[0].astype(np.float32), axis=-1))
    gh = probs.shape[0]
    stride = (canvas.shape[0] - input_shape[0]) // (gh - 1) if gh > 1 else input_shape[0]
    return probs, int(stride)


def score_grid_figure(
    canvas,
    probs,
    class_names,
    *,
    window: tuple[int, int],
    stride: int,
    classes=None,
    path: str | None = None,
    title: str = "",
):
    """Canvas, per-class heat maps and the arg-max map of a score grid.

    canvas: uint8 (H, W, C); probs: (H', W', K) softmax scores, cell (i, j) being the window
    of size `window` at pixel (i * stride, j * stride). classes: the class indices to draw a
    heat map for (default: the 4 with the highest peak probability).
    """
    canvas = np.asarray(canvas)
    probs = np.asarray(probs, np.float32)
    gh, gw, k = probs.shape
    if classes is None:
        classes = np.argsort(-probs.reshape(-1, k).max(axis=0), kind="stable")[:4]
    classes = [int(c) for c in classes]
    # Cell (i, j) is centred on pixel i*s + (h - 1) / 2; each cell covers s pixels around it.
    y0 = (window[0] - 1) / 2 - stride / 2
    x0 = (window[1] - 1) / 2 - stride / 2
    extent = (x0, x0 + gw * stride, y0 + gh * stride, y0)
    panels = 2 + len(classes)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig, axes = _figure.new_figure(rows, cols, figsize=(3.6 * cols, 3.5 * rows), squeeze=False)
    axes = axes.ravel()
    h, w = canvas.shape[:2]
    _tiles.show_image(axes[0], canvas, title=f"input {h}x{w} ({gh}x{gw} windows)", fontsize=9)
    gray = canvas.mean(axis=-1) if canvas.ndim == 3 else canvas
    im = None
    for ax, c in zip(axes[1:], classes, strict=False):
        ax.imshow(gray, cmap="gray", vmin=0, vmax=255, alpha=0.5)
        im = ax.imshow(
            probs[..., c], cmap="inferno", vmin=0, vmax=1, alpha=0.75, extent=extent,
            interpolation="nearest",
        )  # fmt: skip
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_axis_off()
        ax.set_title(f"P({_tiles.class_name(class_names, c)}) per window", fontsize=9)
    ax = axes[1 + len(classes)]
    best = probs.argmax(axis=-1)
    colours = np.array([_hex_rgb(class_color(c)) for c in range(k)])
    ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
    ax.imshow(colours[best], alpha=0.6, extent=extent, interpolation="nearest")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title("arg-max class per window", fontsize=9)
    present = sorted(set(best.ravel().tolist()))
    ax.legend(
        handles=[
            Patch(color=class_color(c), label=_tiles.class_name(class_names, c)) for c in present
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(len(present), 5),
        fontsize=7,
        frameon=False,
    )
    for ax in axes[2 + len(classes) :]:
        ax.set_axis_off()
    fig.suptitle(
        title or f"convolutionalized classifier: {window[0]}x{window[1]} windows, stride {stride}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    if im is not None:
        fig.colorbar(im, cax=fig.add_axes((0.92, 0.2, 0.015, 0.6)), label="probability")
    _figure.save(fig, path)
    return path


def _hex_rgb(color: str) -> tuple[float, float, float]:
    color = color.lstrip("#")
    return tuple(int(color[i : i + 2], 16) / 255 for i in (0, 2, 4))
