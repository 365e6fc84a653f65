"""The classification pictures of `--mode=visualize`: Grad-CAM, the confusion matrix of the
sample, its most confident mistakes and the score grid of the convolutionalized classifier."""

import numpy as np

from cnnjax import inference
from cnnjax.errors import UserError
from cnnjax.viz import confusion, gradcam, mistakes, score_grid


def draw(task, model, variables, sample: dict, path, tag: str) -> None:
    """Writes the pictures for `sample` ({"image": uint8 (N, H, W, C), "label": (N,)})."""
    data, vc = task.data, task.config.viz
    images, labels = sample["image"], sample["label"]
    probs = inference.class_probabilities(model, variables, images, data.mean, data.std)
    preds = probs.argmax(axis=-1)
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
    _score_grid(model, variables, images, labels, data, path, tag)


def _score_grid(model, variables, images, labels, data, path, tag) -> None:
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
