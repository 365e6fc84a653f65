"""The classic hand-designed filters of `cnnjax.ops.kernels` applied to one sample image."""

import numpy as np

from cnnjax.ops.conv import conv2d
from cnnjax.ops.kernels import CLASSIC, sobel_magnitude
from cnnjax.viz._figure import new_figure, save
from cnnjax.viz._tiles import as_batch

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as PIL's "L" mode.


def grayscale(image) -> np.ndarray:
    """A uint8 (H, W), (H, W, 1|3) or (1, H, W, C) image as float32 (H, W) in [0, 1]."""
    img = as_batch(image)[0].astype(np.float32) / 255.0
    if img.shape[-1] >= 3:
        return img[..., :3] @ _LUMA
    return img[..., 0]


def _format_kernel(kernel: np.ndarray) -> str:
    """The kernel's rows as aligned text: integers as such, fractions with 3 decimals."""
    k = np.asarray(kernel, np.float64)
    if np.allclose(k, np.round(k)):
        cells = [[f"{int(round(v))}" for v in row] for row in k]
    else:
        cells = [[f"{v:.3f}".replace("0.", ".", 1) for v in row] for row in k]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(" ".join(c.rjust(width) for c in row) for row in cells)


def filter_responses(image) -> dict[str, np.ndarray]:
    """{"original": grey image, each CLASSIC name: its response, "sobel_magnitude": ...}.

    Every filter is applied with "SAME" padding (zeros outside the image), so all the maps
    have the image's size; the border therefore sees an edge when the image is not dark there.
    """
    gray = grayscale(image)
    out = {"original": gray}
    for name, kernel in CLASSIC.items():
        out[name] = np.asarray(conv2d(gray, kernel, padding="SAME"), np.float32)
    out["sobel_magnitude"] = np.asarray(sobel_magnitude(gray), np.float32)
    return out


def classic_kernels(image, *, path: str | None = None, title: str = ""):
    """The grey image, its response to every CLASSIC kernel and the Sobel magnitude.

    Smoothing/sharpening kernels (entries summing to 1) are drawn in grey on the image's
    0..1 scale; edge detectors (summing to 0) with 'RdBu_r' centred at 0; the Sobel magnitude
    with 'magma'. Each panel has a colour bar and its kernel's values in the title.
    """
    responses = filter_responses(image)
    n = len(responses)
    cols = min(5, n)
    rows = -(-n // cols)
    fig, axes = new_figure(rows, cols, figsize=(3.4 * cols, 3.9 * rows + 0.6), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    h, w = responses["original"].shape
    for ax, (name, response) in zip(axes.flat, responses.items(), strict=False):
        kernel = CLASSIC.get(name)
        values = "" if kernel is None else _format_kernel(kernel)
        if name == "original":
            im = ax.imshow(response, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            name = "original (grey)"
            values = f"{h}x{w}"
        elif name == "sobel_magnitude":
            im = ax.imshow(response, cmap="magma", vmin=0, interpolation="nearest")
            values = "sqrt(sobel_x² +\n     sobel_y²)"
        elif abs(float(np.sum(kernel))) < 1e-6:
            limit = float(np.abs(response).max()) or 1.0
            im = ax.imshow(
                response, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
            )
        else:
            im = ax.imshow(response, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, loc="left", fontsize=11, fontweight="bold")
        ax.set_title(values, loc="right", fontsize=8, family="monospace")
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.suptitle(
        (f"{title}\n" if title else "")
        + "classic kernels (cross-correlation, SAME zero padding); "
        + "edge maps: red > 0 > blue",
        fontsize=12,
    )
    fig.tight_layout()
    save(fig, path)
    return fig
