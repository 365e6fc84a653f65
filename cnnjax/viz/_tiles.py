"""Helpers shared by the picture modules: input normalization, image tiles and grid shapes."""

import math

import numpy as np


def as_batch(images) -> np.ndarray:
    """uint8 images as (N, H, W, C): a single (H, W, C) or (H, W) image gets the missing axes."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[..., None]
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), (H, W, C) or (H, W), got {images.shape}.")
    return images


def normalize(images, mean, std) -> np.ndarray:
    """The model's input: (images / 255 - mean) / std, float32 (N, H, W, C)."""
    images = as_batch(images).astype(np.float32) / 255.0
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    return (images - mean) / std


def minmax(a, axis=None) -> np.ndarray:
    """`a` scaled to [0, 1] over `axis` (all axes by default); constant slices become 0."""
    a = np.asarray(a, np.float64)
    lo = a.min(axis=axis, keepdims=True)
    span = a.max(axis=axis, keepdims=True) - lo
    out = np.divide(a - lo, span, out=np.zeros_like(a), where=span > 0)
    return out.astype(np.float32)


def grid_shape(n: int, tile_aspect: float = 1.0) -> tuple[int, int]:
    """(rows, cols) holding `n` tiles of width/height `tile_aspect` in a near-square grid."""
    if n <= 0:
        return 1, 1
    cols = max(1, min(n, round(math.sqrt(n / max(tile_aspect, 1e-6)))))
    rows = math.ceil(n / cols)
    return rows, cols


def show_image(ax, image, *, title: str | None = None, **title_kwargs):
    """A uint8 (H, W, 1|3) or (H, W) image, pixels kept sharp (nearest), axis off."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        im = ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        im = ax.imshow(image[..., :3], interpolation="nearest")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title, **title_kwargs)
    return im


def class_name(class_names, index: int) -> str:
    """The display name of class `index` (the index itself when there are no names)."""
    if class_names is not None and 0 <= index < len(class_names):
        return str(class_names[index])
    return str(index)
