"""The end-of-run report: `summary.txt` and the pictures under `plots/`."""

import os

import numpy as np

from cnnjax import files
from cnnjax.errors import MetricsWriteError
from cnnjax.train import writers


def format_report(*, name: str, exp, eval_metrics: dict, n_params: int, elapsed_s: float) -> str:
    """A plain-text summary: run facts, then the task's final test metrics (classification:
    accuracy and per-class precision/recall/F1)."""
    cfg, data = exp.config, exp.data
    lines = [
        f"experiment      {name}",
        f"model           {cfg.model.name} ({n_params:,} trainable parameters)",
        f"data            {data.name}: {data.num_train:,} train, "
        f"{data.num_test:,} test, images {data.image_shape}",
        f"training        {exp.total_steps:,} steps x batch {cfg.batch_size} "
        f"({exp.total_steps / exp.steps_per_epoch:.1f} epochs), {cfg.optim.name} "
        f"lr {cfg.optim.lr} ({cfg.schedule.name})",
        f"wall time       {elapsed_s:.1f} s (this invocation, compile included)",
        "",
        "final test metrics",
    ]
    scalars = {k: v for k, v in eval_metrics.items() if not isinstance(v, np.ndarray)}
    arrays = {k: v for k, v in eval_metrics.items() if isinstance(v, np.ndarray)}
    lines += exp.task.report_lines(scalars, arrays)
    return "\n".join(lines) + "\n"


def write_run_report(
    workdir: str, exp, eval_metrics: dict, *, n_params: int, elapsed_s: float, name: str
) -> None:
    """summary.txt and the plots; `MetricsWriteError` when the disk refuses one of them."""
    try:
        _write_run_report(workdir, exp, eval_metrics, n_params, elapsed_s, name)
    except OSError as e:
        where = e.filename or workdir
        raise MetricsWriteError(
            f"could not write {where}: {writers.os_reason(e)}; training finished and its "
            "checkpoints are saved (re-running writes the report again)"
        ) from None


def _write_run_report(workdir, exp, eval_metrics, n_params, elapsed_s, name) -> None:
    from cnnjax.viz import confusion, curves  # Local: matplotlib is imported only here.

    text = format_report(
        name=name, exp=exp, eval_metrics=eval_metrics, n_params=n_params, elapsed_s=elapsed_s
    )
    # Whole or not at all: a full disk keeps the previous summary.
    files.write_atomic(os.path.join(workdir, "summary.txt"), text)
    plots = os.path.join(workdir, "plots")
    curves.training_curves(
        writers.read_events(workdir), title=name, path=os.path.join(plots, "training_curves.png")
    )
    if "confusion" not in eval_metrics:
        return
    confusion.confusion_matrix(
        np.asarray(eval_metrics["confusion"]),
        exp.data.class_names,
        title=f"{name}: test confusion matrix",
        path=os.path.join(plots, "confusion_matrix.png"),
    )
