"""Classic hand-designed image filters, as read-only float32 NumPy arrays of shape (k, k).

Use them with `cnnjax.ops.conv2d(image, kernel)` on a (H, W) or (H, W, 1) image. Since
`conv2d` is a cross-correlation, a kernel is applied as printed (not flipped), which fixes the
sign of each edge detector's response as stated below (rows go down, columns go right).
`CLASSIC` maps a name to each filter, for plotting them side by side.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from cnnjax.ops.conv import Padding, conv2d


def _frozen(rows: list[list[float]] | np.ndarray) -> np.ndarray:
    # Module-level constants are shared by every caller: an in-place edit would leak.
    kernel = np.array(rows, dtype=np.float32)
    kernel.flags.writeable = False
    return kernel


def box_blur(size: int = 3) -> np.ndarray:
    """Mean of the size x size neighbourhood: (size, size), every entry 1 / size**2, sum 1."""
    if size < 1:
        raise ValueError(f"box_blur size must be >= 1, got {size}.")
    return _frozen(np.full((size, size), 1.0 / size**2))


def gaussian(size: int = 5, sigma: float = 1.0) -> np.ndarray:
    """Gaussian blur: (size, size), exp(-(dx**2 + dy**2) / (2 sigma**2)) about the centre.

    Sampled at integer offsets from the centre and normalized to sum 1 (so it keeps the mean
    brightness); symmetric under flips and transposition.
    """
    if size < 1 or sigma <= 0:
        raise ValueError(f"gaussian needs size >= 1 and sigma > 0, got size={size}, {sigma=}.")
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel = np.outer(g, g)
    return _frozen(kernel / kernel.sum())


SHARPEN = _frozen([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
"""Sharpen: 5 x centre minus the 4 neighbours, i.e. the image minus its Laplacian. Sums to 1."""

LAPLACIAN = _frozen([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
"""4-neighbour Laplacian (edge detection): sum of the 4 neighbours minus 4 x centre. Sums to 0,
so flat regions give 0; peaks give negative values."""

HORIZONTAL_EDGES = _frozen([[1, 1, 1], [0, 0, 0], [-1, -1, -1]])
"""Prewitt horizontal-edge detector: row above minus row below. Positive where the image gets
darker going down (bright above a horizontal edge). Sums to 0."""

VERTICAL_EDGES = _frozen([[1, 0, -1], [1, 0, -1], [1, 0, -1]])
"""Prewitt vertical-edge detector: column left minus column right. Positive where the image gets
darker going right (bright left of a vertical edge). Sums to 0."""

SOBEL_X = _frozen([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
"""Sobel derivative along x (columns): right minus left, centre row weighted 2. Positive where
the image gets brighter going right. Sums to 0."""

SOBEL_Y = _frozen([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
"""Sobel derivative along y (rows): below minus above, centre column weighted 2. Positive where
the image gets brighter going down. Sums to 0."""


# Jitted so that the two convolutions, squares and root compile as one program.
@functools.partial(jax.jit, static_argnames="padding")
def sobel_magnitude(image: ArrayLike, padding: Padding = "SAME") -> jax.Array:
    """Gradient magnitude sqrt(gx**2 + gy**2), gx and gy the `SOBEL_X` and `SOBEL_Y` responses.

    image: (H, W), (H, W, 1) or (N, H, W, 1). Returns the same shape for "SAME" padding (the
    border then sees the zero padding as an edge), or (H - 2, W - 2)-sized maps for "VALID".
    """
    gx = conv2d(image, SOBEL_X, padding=padding)
    gy = conv2d(image, SOBEL_Y, padding=padding)
    return jnp.sqrt(gx**2 + gy**2)


CLASSIC: dict[str, np.ndarray] = {
    "box_blur": box_blur(),
    "gaussian": gaussian(),
    "sharpen": SHARPEN,
    "laplacian": LAPLACIAN,
    "horizontal_edges": HORIZONTAL_EDGES,
    "vertical_edges": VERTICAL_EDGES,
    "sobel_x": SOBEL_X,
    "sobel_y": SOBEL_Y,
}
"""Every classic filter by name: box_blur (3x3), gaussian (5x5, sigma 1) and the constants."""
