"""The test images the model got wrong with the most confidence."""

import numpy as np

from cnnjax.viz._figure import new_figure, save
from cnnjax.viz._tiles import as_batch, class_name, grid_shape, show_image


def confident_mistakes(labels, probs, k: int = 16) -> np.ndarray:
    """Indices of the (up to) k wrong predictions with the highest predicted probability.

    labels: (N,) true classes; probs: (N, C) class probabilities. Ordered by decreasing
    confidence, ties by index (a stable sort).
    """
    labels = np.asarray(labels).reshape(-1)
    probs = np.asarray(probs)
    preds = probs.argmax(axis=-1)
    wrong = np.flatnonzero(preds != labels)
    confidence = probs[wrong, preds[wrong]]
    order = np.argsort(-confidence, kind="stable")
    return wrong[order[:k]]


def most_confident_mistakes(
    images, labels, probs, class_names, *, k: int = 16, path: str | None = None, title: str = ""
):
    """A grid of the k most confident mistakes, titled "true: 3 / pred: 8 (0.97)".

    images: uint8 (N, H, W, C); labels: (N,); probs: (N, C) softmax probabilities. With no
    mistake at all the figure says so.
    """
    images = as_batch(images)
    labels = np.asarray(labels).reshape(-1)
    probs = np.asarray(probs)
    chosen = confident_mistakes(labels, probs, k)
    n_wrong = int((probs.argmax(axis=-1) != labels).sum())
    header = (f"{title}\n" if title else "") + (
        f"most confident mistakes: {len(chosen)} of {n_wrong} wrong out of {len(labels):,} images"
    )
    if len(chosen) == 0:
        fig, ax = new_figure(figsize=(5, 3))
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=20, color="tab:green")
        ax.set_axis_off()
        fig.suptitle((f"{title}\n" if title else "") + f"no mistakes on {len(labels):,} images")
        fig.tight_layout()
        save(fig, path)
        return fig
    rows, cols = grid_shape(len(chosen))
    fig, axes = new_figure(rows, cols, figsize=(2.3 * cols, 2.5 * rows + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, chosen, strict=False):
        p = int(probs[i].argmax())
        show_image(
            ax,
            images[i],
            title=(
                f"true: {class_name(class_names, int(labels[i]))} / "
                f"pred: {class_name(class_names, p)} ({probs[i, p]:.2f})"
            ),
            fontsize=9,
        )
    fig.suptitle(header, fontsize=11)
    fig.tight_layout()
    save(fig, path)
    return fig
