"""Grad-CAM (Selvaraju et al. 2017): where in the image a conv layer saw the evidence for a class.

For a conv layer with activations A (N, h, w, K) and the logit y_c of class c:
alpha_k = mean over (h, w) of dy_c / dA_k (one weight per channel), cam = ReLU(sum_k alpha_k A_k),
upsampled bilinearly to the image size and min-max scaled to [0, 1] per image.

How the gradient is taken. The layer's output is intercepted with `flax.linen.intercept_methods`
during one `model.apply`: the interceptor keeps A (returned as auxiliary output) and hands the
rest of the network A + delta, delta an all-zero array of A's shape. `jax.vjp` with respect to
delta then gives dy/dA for any cotangent, i.e. for any class, from a single forward pass, with
the model's code untouched (no `perturb` calls needed in the models) and the logits unchanged
(delta is zero). Batches are fine: in eval mode images do not interact, so the cotangent
one_hot(class_i) per row yields each image's own gradient.

Default layer: the last module output with a spatial map (N, H, W, C), H * W > 1, i.e. the last
conv stage (`feature_maps.last_spatial_layer`): a ResNet's last block, VGG's block5_conv3, the
last separable conv of Xception, LeNet's conv2.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.cm
import matplotlib.colors
import numpy as np

from cnnjax.errors import UserError
from cnnjax.viz._figure import new_figure, save
from cnnjax.viz._tiles import as_batch, class_name, normalize, show_image
from cnnjax.viz.feature_maps import last_spatial_layer, module_outputs

CMAP = "jet"
ALPHA = 0.45


def _forward(model, variables, x, layer_path):
    """delta -> (logits, activations of `layer_path`), delta added to that layer's output."""

    def f(delta):
        seen = {}

        def intercept(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if (
                context.method_name == "__call__"
                and "/".join(context.module.path) == layer_path
                and "a" not in seen
            ):
                seen["a"] = out
                out = out + delta.astype(out.dtype)
            return out

        with nn.intercept_methods(intercept):
            logits = model.apply(variables, x, train=False)
        return logits, seen["a"]

    return f


def _layer_shape(model, variables, x_shape, layer_path):
    for o in module_outputs(model, variables, x_shape):
        if o.path == layer_path:
            if len(o.shape) != 4:
                raise UserError(
                    f"Grad-CAM needs a (N, H, W, C) layer; {layer_path!r} outputs {o.shape}."
                )
            return o.shape
    known = [o.path for o in module_outputs(model, variables, x_shape) if len(o.shape) == 4]
    raise UserError(
        f"No module {layer_path!r} with a spatial output. Layers: {', '.join(known[-20:])}"
    )


def _cams(acts, grads, size):
    """ReLU(sum_k mean(grad_k) A_k), bilinear to `size` (H, W), min-max per image."""
    weights = grads.mean(axis=(1, 2))  # (N, K)
    cam = jax.nn.relu(jnp.einsum("nhwk,nk->nhw", acts, weights))
    cam = jax.image.resize(cam, (cam.shape[0], *size), method="bilinear")
    lo = cam.min(axis=(1, 2), keepdims=True)
    span = cam.max(axis=(1, 2), keepdims=True) - lo
    cam = jnp.where(span > 0, (cam - lo) / jnp.where(span > 0, span, 1.0), 0.0)
    return np.asarray(cam, np.float32)


def _classes(class_index, n, default):
    if class_index is None:
        return np.asarray(default)
    classes = np.broadcast_to(np.asarray(class_index, np.int64), (n,))
    return classes.copy()


def grad_cam_multi(model, variables, x, class_sets, *, layer_path=None):
    """Grad-CAM of normalized input x (N, H, W, C) for several class choices in one pass.

    class_sets: a list whose items are None (the predicted class), an int, or N ints.
    Returns (list of heat maps (N, H, W) in [0, 1], logits (N, classes), layer path).
    """
    x = jnp.asarray(x, jnp.float32)
    if layer_path is None:
        layer_path = last_spatial_layer(model, variables, x.shape)
    shape = _layer_shape(model, variables, x.shape, layer_path)
    f = _forward(model, variables, x, layer_path)
    logits, pullback, acts = jax.vjp(f, jnp.zeros(shape, jnp.float32), has_aux=True)
    if logits.ndim != 2:
        raise UserError(f"Grad-CAM needs (N, classes) logits; the model returns {logits.shape}.")
    predicted = np.asarray(jnp.argmax(logits, axis=-1))
    heatmaps = []
    for choice in class_sets:
        classes = _classes(choice, x.shape[0], predicted)
        if classes.min() < 0 or classes.max() >= logits.shape[-1]:
            raise UserError(f"class_index out of range [0, {logits.shape[-1]}): {choice}.")
        (grads,) = pullback(jax.nn.one_hot(classes, logits.shape[-1], dtype=logits.dtype))
        heatmaps.append(_cams(acts.astype(jnp.float32), grads, x.shape[1:3]))
    return heatmaps, np.asarray(logits, np.float32), layer_path


def grad_cam(model, variables, images, mean, std, *, layer_path=None, class_index=None):
    """Grad-CAM heat maps of uint8 images (N, H, W, C) normalized by (mean, std).

    class_index: None for each image's predicted class, an int for one class for all, or N
    ints. layer_path: the conv layer's module path (default in the module doc).
    Returns (heatmaps float32 (N, H, W) in [0, 1], predicted classes int (N,)).
    """
    x = normalize(images, mean, std)
    (heatmaps,), logits, _ = grad_cam_multi(
        model, variables, x, [class_index], layer_path=layer_path
    )
    return heatmaps, logits.argmax(axis=-1)


def _overlay(ax, image, heat):
    show_image(ax, image)
    h, w = heat.shape
    return ax.imshow(
        heat,
        cmap=CMAP,
        alpha=ALPHA,
        vmin=0.0,
        vmax=1.0,
        interpolation="bilinear",
        extent=(-0.5, w - 0.5, h - 0.5, -0.5),
    )


def grad_cam_figure(
    model,
    variables,
    images,
    labels,
    class_names,
    mean,
    std,
    *,
    layer_path=None,
    max_images: int = 8,
    path: str | None = None,
    title: str = "",
):
    """One row per image (the first `max_images`): the image, the Grad-CAM overlay for the
    predicted class ("pred: dog (0.87)", the softmax probability) and for the true class."""
    images = as_batch(images)[:max_images]
    labels = np.asarray(labels).reshape(-1)[: len(images)]
    x = normalize(images, mean, std)
    (pred_maps, true_maps), logits, layer = grad_cam_multi(
        model, variables, x, [None, labels], layer_path=layer_path
    )
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    preds = probs.argmax(axis=-1)
    n = len(images)
    fig, axes = new_figure(n, 3, figsize=(8.4, 2.7 * n + 0.8), squeeze=False)
    im = None
    for i in range(n):
        p, t = int(preds[i]), int(labels[i])
        colour = "tab:green" if p == t else "tab:red"
        show_image(axes[i, 0], images[i], title=f"image {i}", fontsize=10)
        im = _overlay(axes[i, 1], images[i], pred_maps[i])
        axes[i, 1].set_title(
            f"pred: {class_name(class_names, p)} ({probs[i, p]:.2f})", color=colour, fontsize=10
        )
        axes[i, 1].set_axis_off()
        _overlay(axes[i, 2], images[i], true_maps[i])
        axes[i, 2].set_title(f"true: {class_name(class_names, t)}", fontsize=10)
        axes[i, 2].set_axis_off()
    fig.suptitle((f"{title}\n" if title else "") + f"Grad-CAM at {layer}", fontsize=12)
    fig.tight_layout()
    if im is not None:
        mappable = matplotlib.cm.ScalarMappable(
            norm=matplotlib.colors.Normalize(0.0, 1.0), cmap=CMAP
        )
        cbar = fig.colorbar(mappable, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
        cbar.set_label("Grad-CAM (1 = strongest evidence for the class)")
    save(fig, path)
    return fig
