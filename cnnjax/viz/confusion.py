"""The confusion matrix: counts in the cells, colour by row-normalized recall."""

import numpy as np

from cnnjax.viz._figure import new_figure, save

MAX_NAMED_CLASSES = 60  # Above this, the axes show class indices, not a name per tick.


def confusion_matrix(
    confusion: np.ndarray, class_names, *, title: str = "", path: str | None = None
):
    """confusion: (C, C) counts, rows = true class, columns = predicted class."""
    confusion = np.asarray(confusion)
    n = confusion.shape[0]
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, np.float64), where=rows > 0)
    size = min(max(5.0, 0.55 * n + 2.5), 24.0)
    fig, ax = new_figure(figsize=(size + 1.2, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of the true class (recall on the diagonal)")
    names = [str(c) for c in class_names]
    if n <= MAX_NAMED_CLASSES:
        ax.set_xticks(
            range(n),
            names,
            rotation=45 if max(map(len, names)) > 3 else 0,
            ha="right" if max(map(len, names)) > 3 else "center",
        )
        ax.set_yticks(range(n), names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    else:  # 1000 names would be unreadable and take matplotlib half a minute to lay out.
        ax.set_xlabel(f"predicted class index (0-{n - 1}; names in summary.txt)")
        ax.set_ylabel("true class index")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(confusion[i, j])),
                        ha="center",
                        va="center",
                        fontsize=8 if n > 12 else 10,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    total = confusion.sum()
    acc = np.trace(confusion) / total if total else 0.0
    ax.set_title((f"{title}\n" if title else "") + f"accuracy {acc:.4f} on {int(total):,} images")
    fig.tight_layout()
    save(fig, path, crop=False)
    return fig
