"""The end-of-run report: `summary.txt` and the pictures under `plots/`."""

import os

import numpy as np

from cnnjax.train import metrics, writers


def format_report(*, name: str, exp, eval_metrics: dict, n_params: int, elapsed_s: float) -> str:
    """A plain-text summary: run facts, final test metrics, per-class precision/recall/F1."""
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
        f"  loss          {eval_metrics['loss']:.4f}",
        f"  accuracy      {eval_metrics['accuracy']:.4f}",
    ]
    if "top5_accuracy" in eval_metrics:
        lines.append(f"  top-5         {eval_metrics['top5_accuracy']:.4f}")
    lines.append(f"  macro F1      {eval_metrics['macro_f1']:.4f}")
    report = metrics.per_class_report(eval_metrics["confusion"])
    width = max(8, *(len(c) for c in data.class_names))
    lines += ["", f"  {'class':<{width}}  precision  recall     f1  support"]
    for i, cname in enumerate(data.class_names):
        lines.append(
            f"  {cname:<{width}}  {report['precision'][i]:9.4f}  "
            f"{report['recall'][i]:6.4f} {report['f1'][i]:6.4f}  "
            f"{report['support'][i]:7d}"
        )
    return "\n".join(lines) + "\n"


def write_run_report(
    workdir: str, exp, eval_metrics: dict, *, n_params: int, elapsed_s: float, name: str
) -> None:
    from cnnjax.viz import confusion, curves  # Local: matplotlib is imported only here.

    text = format_report(
        name=name, exp=exp, eval_metrics=eval_metrics, n_params=n_params, elapsed_s=elapsed_s
    )
    with open(os.path.join(workdir, "summary.txt"), "w") as f:
        f.write(text)
    plots = os.path.join(workdir, "plots")
    curves.training_curves(
        writers.read_events(workdir), title=name, path=os.path.join(plots, "training_curves.png")
    )
    confusion.confusion_matrix(
        np.asarray(eval_metrics["confusion"]),
        exp.data.class_names,
        title=f"{name}: test confusion matrix",
        path=os.path.join(plots, "confusion_matrix.png"),
    )
