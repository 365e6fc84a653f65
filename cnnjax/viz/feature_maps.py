"""Activations of chosen layers for one image, read from the model itself.

`capture` runs the model once with Flax's intermediate capture
(`model.apply(..., capture_intermediates=filter, mutable=["intermediates"])`, the filter
keeping the `__call__` outputs of the requested module paths), so there is no second copy of
the network to keep in sync. A layer path is the "/"-joined module path, as in the params:
"conv1", "block3_conv3", "stage2_block1/conv2", "stage4_block2" (a whole block's output).

Default layers (`default_layers`): the last convolution of each block or stage. Every conv
module (`nn.Conv`, `nn.ConvTranspose`, `nn.ConvLocal`) is listed in call order, leaving out
shortcut convs (a path component containing "proj", "shortcut", "residual" or "downsample")
and convs whose output is 1x1 (a conv used as a classifier). Each conv belongs to a group named
by its first path component, without a `_dw`/`_pw`/`_depthwise`/`_pointwise` part (the two
halves of a separable conv go together) and shortened to its leading `stage<n>`, `block<n>` or
`layer<n>` when it starts with one; the last conv of each group is kept. So:

- vgg* and vgg_blocks: block1_conv2, block2_conv2, ..., block5_conv3;
- resnet*: stem_conv, stage1_block2/conv2, ..., stage4_block<last>/conv2 (or conv3);
- xception: the last separable conv (pointwise) of each of its 14 blocks;
- lenet5 and the seed CNNs (conv1, conv2, ...: no block prefix): every conv;
- mobilenet_v1: conv1, then conv_pw_<i> (the pointwise half of each separable block);
- googlenet: conv1, conv2, conv3, then each inception module's last conv (its pool branch).

When that gives more than `max_layers` groups (mobilenet's 27 convs, xception's 14 blocks),
`max_layers` evenly spaced ones are kept, always including the first and the last.
"""

import math
import re
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import UserError, did_you_mean
from cnnjax.viz._figure import plt, save
from cnnjax.viz._tiles import as_batch, minmax, normalize, show_image

MAX_MAPS = 64
MAX_LAYERS = 6
CONV_TYPES = (nn.Conv, nn.ConvTranspose, nn.ConvLocal)
_SHORTCUT = re.compile(r"proj|shortcut|residual|downsample", re.IGNORECASE)
_GROUP = re.compile(r"^(stage|block|layer)\d+", re.IGNORECASE)
_SEPARABLE = re.compile(r"_(dw|pw|depthwise|pointwise)(?=_|$)", re.IGNORECASE)


class LayerOutput(NamedTuple):
    """One module call: its "/"-joined path, class name, output shape, and whether a conv."""

    path: str
    kind: str
    shape: tuple[int, ...]
    is_conv: bool


def _without_intermediates(variables):
    return {k: v for k, v in variables.items() if k != "intermediates"}


def module_outputs(model, variables, input_shape, dtype=jnp.float32) -> list[LayerOutput]:
    """Every submodule's `__call__` output (array outputs only) in the order the calls return.

    Shapes only: the model is traced with `jax.eval_shape`, nothing is computed. A module
    called several times is listed once (its first call). The model itself is left out.
    """
    records: dict[str, LayerOutput] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = "/".join(context.module.path)
        if context.method_name == "__call__" and path and path not in records:
            if hasattr(out, "shape") and hasattr(out, "dtype"):
                records[path] = LayerOutput(
                    path,
                    type(context.module).__name__,
                    tuple(out.shape),
                    isinstance(context.module, CONV_TYPES),
                )
        return out

    x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return list(records.values())


def _spatial(shape) -> bool:
    return len(shape) == 4 and shape[1] * shape[2] > 1


def _group(path: str) -> str:
    first = _SEPARABLE.sub("", path.split("/")[0])
    match = _GROUP.match(first)
    return match.group(0) if match else first


def default_layers(model, variables, input_shape, *, max_layers: int = MAX_LAYERS) -> list[str]:
    """The last conv of each block/stage, at most `max_layers` of them (rule in module doc)."""
    convs = [
        o.path
        for o in module_outputs(model, variables, input_shape)
        if o.is_conv and _spatial(o.shape) and not _SHORTCUT.search(o.path)
    ]
    last: dict[str, str] = {}
    for p in convs:
        last.pop(_group(p), None)  # Re-insert: dict order = order of each group's last conv.
        last[_group(p)] = p
    layers = list(last.values())
    if len(layers) > max_layers:
        keep = np.unique(np.round(np.linspace(0, len(layers) - 1, max_layers)).astype(int))
        layers = [layers[i] for i in keep]
    return layers


def last_spatial_layer(model, variables, input_shape) -> str:
    """The last module output with a spatial map (N, H, W, C), H * W > 1: the last conv
    stage's output (a ResNet stage's last block, VGG's block5_conv3, LeNet's conv2)."""
    outputs = [o for o in module_outputs(model, variables, input_shape) if _spatial(o.shape)]
    if not outputs:
        raise UserError("This model has no layer with a spatial (N, H, W, C) output.")
    return outputs[-1].path


def _unknown(paths, model, variables, input_shape):
    known = [o.path for o in module_outputs(model, variables, input_shape)]
    bad = [p for p in paths if p not in known]
    hints = "".join(did_you_mean(p, known) for p in bad[:1])
    return UserError(
        f"No module at {', '.join(map(repr, bad))} in this model.{hints} "
        f"Modules: {', '.join(known[:40])}{', ...' if len(known) > 40 else ''}"
    )


def capture(model, variables, x, layer_paths) -> dict[str, jax.Array]:
    """The outputs of the modules at `layer_paths` for the input `x` (N, H, W, C), eval mode.

    Returns {path: array} in the order of `layer_paths`; a module called several times gives
    its first call's output. Unknown paths raise `UserError` listing the model's modules.
    """
    paths = [layer_paths] if isinstance(layer_paths, str) else list(layer_paths)
    wanted = set(paths)
    x = jnp.asarray(x)
    _, state = model.apply(
        _without_intermediates(variables),
        x,
        train=False,
        capture_intermediates=lambda mdl, method: (
            method == "__call__" and "/".join(mdl.path) in wanted
        ),
        mutable=["intermediates"],
    )
    found = {}
    for p in paths:
        node = state.get("intermediates", {})
        for name in p.split("/"):
            node = node.get(name, {}) if hasattr(node, "get") else {}
        if not hasattr(node, "get") or "__call__" not in node:
            raise _unknown(paths, model, variables, x.shape)
        found[p] = node["__call__"][0]
    return found


def _grid(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def feature_maps(
    model,
    variables,
    image,
    mean,
    std,
    layer_paths=None,
    *,
    max_maps: int = MAX_MAPS,
    path: str | None = None,
    title: str = "",
):
    """The input image, then per layer a square grid of its first `max_maps` channel maps.

    image: uint8 (H, W, C) (or (1, H, W, C)); x = (image / 255 - mean) / std goes in.
    layer_paths: module paths, None for `default_layers`. Each map is min-max scaled on its
    own (viridis), so the colours compare places within a map, not maps with each other.
    """
    images = as_batch(image)[:1]
    x = normalize(images, mean, std)
    if layer_paths is None:
        layer_paths = default_layers(model, variables, x.shape)
    layer_paths = [layer_paths] if isinstance(layer_paths, str) else list(layer_paths)
    acts = capture(model, variables, x, layer_paths)

    panels = len(layer_paths) + 1
    ncols = min(panels, 3)
    nrows = math.ceil(panels / ncols)
    head, foot = 0.7 + 0.25 * bool(title), 0.6
    fig = plt.figure(figsize=(4.3 * ncols, 4.6 * nrows + head + foot))
    top, body, bottom = fig.subfigures(3, 1, height_ratios=(head, 4.6 * nrows, foot))
    subfigs = np.atleast_1d(body.subfigures(nrows, ncols, wspace=0.04, hspace=0.06)).ravel()
    for sf in subfigs[panels:]:
        sf.set_visible(False)

    h, w, c = images.shape[1:]
    ax = subfigs[0].subplots()
    show_image(ax, images[0])
    subfigs[0].suptitle(f"input\n{h}x{w}x{c}", fontsize=11)
    subfigs[0].subplots_adjust(left=0.12, right=0.88, bottom=0.06, top=0.84)

    im = None
    for sf, layer in zip(subfigs[1:panels], layer_paths, strict=True):
        a = np.asarray(acts[layer], np.float32)
        if a.ndim != 4:
            raise UserError(f"{layer!r} outputs shape {a.shape}, not an (N, H, W, C) map.")
        channels = a.shape[-1]
        m = min(channels, max_maps)
        maps = minmax(np.moveaxis(a[0, ..., :m], -1, 0), axis=(1, 2))
        rows, cols = _grid(m)
        axes = np.atleast_1d(sf.subplots(rows, cols, squeeze=False)).ravel()
        for i, tile in enumerate(axes):
            if i >= m:
                tile.remove()
                continue
            im = tile.imshow(maps[i], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            tile.set_axis_off()
        shown = f", first {m} shown" if m < channels else ""
        if not np.isfinite(a).all():
            shown += " (NaN/inf values!)"
        sf.suptitle(
            f"{layer}\n{channels} channels of {a.shape[1]}x{a.shape[2]}{shown}", fontsize=11
        )
        sf.subplots_adjust(left=0.03, right=0.97, bottom=0.03, top=0.84, wspace=0.08, hspace=0.08)

    top.suptitle(
        (f"{title}\n" if title else "") + "feature maps (each map min-max scaled on its own)",
        fontsize=13,
        y=0.6,
    )
    if im is not None:
        cax = bottom.add_axes((0.3, 0.55, 0.4, 0.18))
        cbar = bottom.colorbar(im, cax=cax, orientation="horizontal")
        cbar.set_label("activation: 0 = the map's min, 1 = its max", fontsize=9)
    save(fig, path)
    return fig
