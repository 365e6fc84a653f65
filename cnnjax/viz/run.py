"""`--mode=visualize`: every picture of a run, written under `RUN/plots/`.

Loads the run's best checkpoint (or fresh weights when there is none, which the console and every
title say), predicts the first `viz.max_eval_images` test images, and writes: first-layer
filters and their weight histograms, feature maps of a sample image, Grad-CAM for several test
images, the confusion matrix, the training curves (if the run logged any), the classic kernels
applied to a sample image, the most confident mistakes and, for classifiers that
`cnnjax.models.convolutionalize` supports, the score grid of the convolutionalized classifier
over a larger canvas of test images. Other tasks (`cnnjax.tasks`) get the filters, feature maps,
curves and classic kernels, then their own pictures (`Task.pictures`: boxes for localization,
masks for segmentation, detections before and after NMS for detection).
"""

import os

import jax
import numpy as np

from cnnjax import runs
from cnnjax.data import transforms
from cnnjax.errors import UserError
from cnnjax.train import writers
from cnnjax.viz import (
    confusion,
    curves,
    feature_maps,
    filters,
    gradcam,
    kernels_demo,
    mistakes,
    score_grid,
)


def _test_sample(data, n: int, image_size: int, aug_config):
    """The first `n` test images (uint8 NHWC) and labels, in memory or streamed."""
    if data.in_memory:
        return data.test_images[:n], data.test_labels[:n]
    to_eval = transforms.make_eval_transform(aug_config, image_size)
    records = [to_eval(data.test_source[i]) for i in range(min(n, data.num_test))]
    return (
        np.stack([r["image"] for r in records]),
        np.array([r["label"] for r in records], np.int32),
    )


def _predict(model, variables, images, mean, std, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities (N, classes) for uint8 images, in batches."""
    apply = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False), axis=-1))
    out = []
    for i in range(0, len(images), batch_size):
        x = (images[i : i + batch_size].astype(np.float32) / 255.0 - mean) / std
        out.append(np.asarray(apply(variables, x)))
    return np.concatenate(out).astype(np.float32)


def visualize(config, workdir: str, *, name: str = "") -> dict[str, str]:
    """Writes the pictures of the run in `workdir`; returns {kind: png path}."""
    exp, state, step = runs.restore_best(config, workdir)
    variables = jax.device_get(state.variables)
    data, model, vc = exp.data, exp.model, config.viz
    source = f"checkpoint at step {step}" if step is not None else "FRESH (untrained) weights"
    if step is None:
        print(f"note: no checkpoint in {workdir}: drawing a freshly initialized model", flush=True)
    tag = f"{name or config.model.name} ({source})"
    plots = os.path.join(workdir, "plots")
    out = {}

    def path(kind):
        out[kind] = os.path.join(plots, f"{kind}.png")
        return out[kind]

    if exp.task is not None and exp.task.name != "classification":
        n = int(vc.max_eval_images)
        arrays = {k: v[:n] for k, v in data.arrays("test", exp.task.target_keys).items()}
        _generic_pictures(config, workdir, name, model, variables, data, arrays["image"], tag, path)
        exp.task.pictures(model, variables, arrays, path, tag)
        return out

    images, labels = _test_sample(
        data, int(vc.max_eval_images), int(config.data.image_size), config.augment
    )
    probs = _predict(model, variables, images, data.mean, data.std)
    preds = probs.argmax(axis=-1)
    _generic_pictures(config, workdir, name, model, variables, data, images, tag, path)
    n_cam = int(vc.num_images)
    gradcam.grad_cam_figure(
        model,
        variables,
        images[:n_cam],
        labels[:n_cam],
        data.class_names,
        data.mean,
        data.std,
        layer_path=vc.gradcam_layer or None,
        max_images=n_cam,
        path=path("gradcam"),
        title=tag,
    )
    matrix = np.zeros((data.num_classes, data.num_classes), np.int64)
    np.add.at(matrix, (labels, preds), 1)
    confusion.confusion_matrix(
        matrix,
        data.class_names,
        path=path("confusion_matrix"),
        title=f"{tag}: first {len(labels):,} test images",
    )
    mistakes.most_confident_mistakes(
        images,
        labels,
        probs,
        data.class_names,
        k=int(vc.num_mistakes),
        path=path("mistakes"),
        title=tag,
    )
    _score_grid_picture(model, variables, images, labels, data, path, tag)
    return out


def _score_grid_picture(model, variables, images, labels, data, path, tag) -> None:
    """The classifier convolutionalized and slid over a canvas of 3x3 test images (2x2 above
    64 px): its class scores per window as heat maps. Families `convolutionalize` does not
    support are skipped with a note."""
    side = 3 if images.shape[1] <= 64 else 2
    if len(images) < side * side:
        return
    canvas = score_grid.tile_canvas(images, side, side)
    try:
        probs, stride = score_grid.score_grid(
            model, variables, canvas, data.mean, data.std, images.shape[1:]
        )
    except UserError as e:
        print(f"note: no score-grid picture: {e}", flush=True)
        return
    shown = list(dict.fromkeys(np.asarray(labels[: side * side]).tolist()))[:4]
    score_grid.score_grid_figure(
        canvas,
        probs,
        data.class_names,
        window=tuple(images.shape[1:3]),
        stride=stride,
        classes=shown,
        path=path("score_grid"),
        title=f"{tag}: convolutionalized on {side}x{side} test images",
    )


def _generic_pictures(config, workdir, name, model, variables, data, images, tag, path) -> None:
    """The pictures that need no class prediction: filters, feature maps, curves, kernels."""
    vc = config.viz
    sample = images[int(vc.sample_index) % len(images)]
    layers = [p.strip() for p in str(vc.layers).split(",") if p.strip()] or None
    filters.conv_filters(
        variables["params"],
        vc.filter_layer or "auto",
        path=path("filters"),
        title=f"{tag}: first-layer filters",
    )
    filters.weight_histograms(
        variables["params"], vc.filter_layer or "auto", path=path("filter_histograms"), title=tag
    )
    feature_maps.feature_maps(
        model, variables, sample, data.mean, data.std, layers, path=path("feature_maps"), title=tag
    )
    events = writers.read_events(workdir)
    if events:
        curves.training_curves(
            events, title=name or config.model.name, path=path("training_curves")
        )
    kernels_demo.classic_kernels(
        sample,
        path=path("classic_kernels"),
        title=f"classic kernels on test image {int(vc.sample_index)}",
    )
