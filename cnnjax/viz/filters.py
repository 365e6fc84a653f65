"""Convolution kernels as pictures: one tile per filter, and histograms of the weights.

Layers are addressed by their "/"-joined parameter path ("conv1", "stage1_block1/conv1",
"block2_sepconv1/sepconv/depthwise"); "auto" means the first convolution of the network.

Order of layers. A params dict only keeps the network's call order straight out of an
un-jitted `model.init`: `jax.jit`, `jax.tree_util` and checkpoint restores sort the keys
alphabetically ("head" < "stage1_block1" < "stem_conv"). So `conv_kernel_paths` orders paths
by name, independently of how the dict was built: components are compared naturally (digits as
numbers, so conv2 < conv10 and block2 < block10) and a component named `stem*`/`input*` comes
first. For the models of `cnnjax.models` this puts the first layer first (conv1, block1_conv1,
stem_conv) and keeps layers in network order within each block.
"""

import re

import numpy as np

from cnnjax.errors import UserError, did_you_mean
from cnnjax.viz._figure import new_figure, save
from cnnjax.viz._tiles import grid_shape, minmax

MAX_CHANNELS = 8
MAX_FILTERS = 64
_FIRST = re.compile(r"^(stem|input)", re.IGNORECASE)


def _unwrap(params):
    """`params`, or the "params" collection of a full variables dict."""
    if hasattr(params, "keys") and "params" in params and hasattr(params["params"], "keys"):
        return params["params"]
    return params


def _natural(component: str):
    tokens = re.findall(r"\d+|\D+", component)
    return [(1, "", int(t)) if t.isdigit() else (0, t, 0) for t in tokens]


def _sort_key(path: str):
    return [(0 if _FIRST.match(c) else 1, _natural(c)) for c in path.split("/")]


def _kernels(params) -> dict[str, np.ndarray]:
    """Every 4-D "kernel" leaf, path (without "/kernel") -> array, in `_sort_key` order."""
    found = {}

    def walk(tree, prefix):
        for key in tree.keys():
            value = tree[key]
            path = f"{prefix}/{key}" if prefix else str(key)
            if hasattr(value, "keys"):
                walk(value, path)
            elif key == "kernel" and np.ndim(value) == 4:
                found[prefix] = value

    walk(_unwrap(params), "")
    return {p: found[p] for p in sorted(found, key=_sort_key)}


def conv_kernel_paths(params) -> list[str]:
    """Paths of every 4-D (kh, kw, cin, cout) kernel, first layer first (see module doc).

    `params` is the "params" collection (or the whole variables dict); paths name the module,
    e.g. "conv1" or "stage1_block1/conv2", without the trailing "/kernel".
    """
    return list(_kernels(params))


def conv_kernel(params, layer_path: str = "auto") -> tuple[str, np.ndarray]:
    """(path, kernel as float32 (kh, kw, cin, cout)) of the layer `layer_path` ("auto": first).

    `layer_path` may name the conv module ("conv1"), its kernel ("conv1/kernel") or a module
    holding exactly one conv kernel; anything else raises `UserError` listing the choices.
    """
    kernels = _kernels(params)
    if not kernels:
        raise UserError("These parameters hold no 4-D convolution kernel to draw.")
    if layer_path in ("auto", "", None):
        path = next(iter(kernels))
    else:
        path = layer_path.strip("/").removesuffix("/kernel")
        if path not in kernels:
            inside = [p for p in kernels if p.startswith(path + "/")]
            if len(inside) != 1:
                choices = ", ".join(inside) if inside else ", ".join(list(kernels)[:12])
                raise UserError(
                    f"No single conv kernel at {layer_path!r}.{did_you_mean(path, kernels)} "
                    f"Conv layers: {choices}{'' if inside or len(kernels) <= 12 else ', ...'}"
                )
            path = inside[0]
    return path, np.asarray(kernels[path], np.float32)


def filter_tiles(kernel: np.ndarray, *, max_channels: int = MAX_CHANNELS) -> np.ndarray:
    """The display tiles of a (kh, kw, cin, cout) kernel, each min-max normalized to [0, 1].

    cin == 3: (cout, kh, kw, 3) RGB tiles. Otherwise (cout, rows, kw) grey tiles: the first
    min(cin, max_channels) input-channel slices stacked top to bottom, one row of kernel each,
    separated by one NaN row (drawn as background).
    """
    kernel = np.asarray(kernel, np.float32)
    kh, kw, cin, cout = kernel.shape
    filters = np.moveaxis(kernel, -1, 0)  # (cout, kh, kw, cin)
    if cin == 3:
        return minmax(filters, axis=(1, 2, 3))
    shown = min(cin, max_channels)
    norm = minmax(filters[..., :shown], axis=(1, 2, 3))
    tiles = np.full((cout, shown * (kh + 1) - 1, kw), np.nan, np.float32)
    for c in range(shown):
        tiles[:, c * (kh + 1) : c * (kh + 1) + kh, :] = norm[..., c]
    return tiles


def conv_filters(
    params,
    layer_path: str = "auto",
    *,
    max_filters: int = MAX_FILTERS,
    max_channels: int = MAX_CHANNELS,
    path: str | None = None,
    title: str = "",
):
    """The filters of one conv layer, one tile per filter (the first `max_filters`).

    Each filter is min-max normalized on its own. With 3 input channels a tile is the RGB
    filter; otherwise it is a column of grey slices, one per input channel (the first
    `max_channels`; the title says when some are left out).
    """
    layer, kernel = conv_kernel(params, layer_path)
    kh, kw, cin, cout = kernel.shape
    n = min(cout, max_filters)
    tiles = filter_tiles(kernel[..., :n], max_channels=max_channels)
    rgb = cin == 3
    tile_h, tile_w = tiles.shape[1:3]
    if tile_h == kh:  # One slice per filter: a near-square grid of square-ish tiles.
        rows, cols = grid_shape(n, tile_w / tile_h)
        inch = 1.0 / max(kh, kw)
    else:  # A column of channel slices per filter: bands of up to 32 columns side by side.
        cols = min(n, 32)
        rows = -(-n // cols)
        inch = 0.45 / max(kh, kw)
    # Each column also holds its gaps; the channel labels need room left of each band.
    gap = 0.2 if tile_h == kh else 0.08
    width = cols * (tile_w * inch + gap) + (0 if tile_h == kh else 0.4)
    height = rows * (tile_h * inch + 0.25)
    scale = min(1.0, 15.0 / width, 15.0 / height)
    if width * scale < 4.5:  # Room for the title.
        scale = min(4.5 / width, 15.0 / height)
    fig, axes = new_figure(
        rows,
        cols,
        figsize=(width * scale + (0 if rgb else 1.2), height * scale + 1.0),
        squeeze=False,
        layout="constrained",
    )
    space = 0.06 if tile_h == kh else 0.01
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.02, wspace=space, hspace=0.02)
    im = None
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        if rgb:
            im = ax.imshow(tiles[i], interpolation="nearest")
        else:
            im = ax.imshow(
                np.ma.masked_invalid(tiles[i]),
                cmap="gray",
                vmin=0.0,
                vmax=1.0,
                interpolation="nearest",
            )
        if n <= 32 or i % 8 == 0:  # Filter indices (every 8th one for many filters).
            ax.set_title(str(i), fontsize=7, pad=2)
        if not rgb and tile_h > kh and i % cols == 0:  # Input-channel labels, left of a band.
            for c in range(min(cin, max_channels)):
                ax.text(
                    -0.8,
                    c * (kh + 1) + (kh - 1) / 2,
                    f"in {c}",
                    ha="right",
                    va="center",
                    fontsize=6,
                )
    details = f"{layer}: {cout} filters of {kh}x{kw}x{cin}, min-max normalized per filter"
    notes = []
    if n < cout:
        notes.append(f"first {n} of {cout} filters")
    if not rgb and cin > 1:
        shown = min(cin, max_channels)
        cut = f" (the first {shown} of {cin})" if shown < cin else ""
        notes.append(f"one column per filter, one row per input channel{cut}")
    if notes:
        details += "\n" + "; ".join(notes)
    fig.suptitle((f"{title}\n" if title else "") + details, fontsize=10)
    if not rgb and im is not None:
        cbar = fig.colorbar(im, ax=axes, fraction=0.04, pad=0.02, shrink=0.8)
        cbar.set_label("normalized weight (0 = filter min, 1 = max)", fontsize=8)
    save(fig, path)
    return fig


def weight_histograms(
    params,
    layer_path: str = "auto",
    *,
    bins: int | None = None,
    path: str | None = None,
    title: str = "",
):
    """Two histograms of one conv layer's weights: raw, and min-max normalized per filter.

    bins: per histogram; by default sqrt(number of weights), between 10 and 60.
    """
    layer, kernel = conv_kernel(params, layer_path)
    raw = kernel.ravel()
    bins = bins or int(np.clip(np.sqrt(raw.size), 10, 60))
    norm = minmax(np.moveaxis(kernel, -1, 0), axis=(1, 2, 3)).ravel()
    fig, (ax_raw, ax_norm) = new_figure(1, 2, figsize=(11, 4))
    ax_raw.hist(raw, bins=bins, color="tab:blue", alpha=0.85)
    ax_raw.axvline(0.0, color="black", lw=0.8, ls="--")
    ax_raw.set_title(f"raw weights (mean {raw.mean():+.3g}, std {raw.std():.3g})")
    ax_raw.set_xlabel("weight")
    ax_norm.hist(norm, bins=bins, range=(0.0, 1.0), color="tab:orange", alpha=0.85)
    ax_norm.set_title("min-max normalized per filter")
    ax_norm.set_xlabel("normalized weight")
    for ax in (ax_raw, ax_norm):
        ax.set_ylabel("count")
        ax.grid(alpha=0.3)
    kh, kw, cin, cout = kernel.shape
    fig.suptitle(
        (f"{title}\n" if title else "") + f"{layer}: {raw.size:,} weights ({kh}x{kw}x{cin}x{cout})"
    )
    fig.tight_layout()
    save(fig, path)
    return fig
