"""Training curves from a run's `metrics.jsonl`: loss, accuracy and learning rate."""

import math

from matplotlib import ticker

from cnnjax.viz._figure import new_figure, save


def plain_log_ticks(ax) -> None:
    """Labels a log-scaled y axis with plain numbers (0.05, 0.1, 2) instead of powers of ten:
    easier to read for losses, and no mathtext to parse (a third of a small figure's time).
    Like matplotlib's default, minor ticks are labelled only over a few decades: all of them
    within half a decade, the 2s and 5s within two."""

    def label(value, _pos, minor):
        if value <= 0:
            return ""
        if minor:
            low, high = sorted(ax.get_ylim())
            decades = math.log10(high / low) if low > 0 else math.inf
            mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
            shown = decades <= 0.5 or (decades <= 2 and round(mantissa) in (2, 5))
            if not shown:
                return ""
        return f"{value:g}"

    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, p: label(v, p, False)))
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, p: label(v, p, True)))


def training_curves(events: list[dict], *, title: str = "", path: str | None = None):
    """Loss (train and eval), accuracy (train and eval) and learning rate against the step.

    events: the dicts of `metrics.jsonl` ("kind" is "train" or "eval").
    """
    train = [e for e in events if e.get("kind") == "train"]
    evals = [e for e in events if e.get("kind") == "eval"]
    fig, axes = new_figure(1, 3, figsize=(15, 4.2))
    # Segmentation runs log pixel accuracy instead (cnnjax.tasks.segmentation).
    acc = "accuracy" if any("accuracy" in e for e in events) else "pixel_accuracy"
    panels = (("loss", "loss"), (acc, acc.replace("_", " ")), ("lr", "learning rate"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        tr = [(e["step"], e[key]) for e in train if isinstance(e.get(key), int | float)]
        if tr:
            ax.plot(*zip(*tr, strict=True), label="train", color="tab:blue", lw=1.5)
        ev = [(e["step"], e[key]) for e in evals if isinstance(e.get(key), int | float)]
        if ev:
            ax.plot(
                *zip(*ev, strict=True), label="test", color="tab:orange", lw=2, marker="o", ms=3
            )
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if key == acc:
            ax.set_ylim(0, 1.0)
            if ev:
                best = max(ev, key=lambda p: p[1])
                ax.annotate(
                    f"best {best[1]:.3f}",
                    best,
                    textcoords="offset points",
                    xytext=(-40, -18),
                    fontsize=9,
                    color="tab:orange",
                )
        if key == "loss" and tr and min(v for _, v in tr) > 0:
            ax.set_yscale("log")
            plain_log_ticks(ax)
        if tr or ev:
            if key != "lr":
                ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save(fig, path, crop=False)
    return fig
