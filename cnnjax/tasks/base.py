"""The task contract: what a run learns, from which targets, with which loss and metrics.

The trainer (`cnnjax.train`: feeds, steps, loop, report) knows nothing about labels, boxes or
masks; it asks the run's task (`cnnjax.tasks.get_task(config, data)`, chosen by
`config.task`). A task is a subclass of `Task`, built as `Task(config, data)`, that provides:

- `target_keys`: the per-example arrays the on-device feed uploads and batches besides
  "image", by their `Dataset.arrays` names ("label", "box", "mask", "boxes", "classes", ...;
  "index", each example's position in its split, lets `eval_sums` place per-example results).
  The constructor checks that the dataset carries them (`require_targets`) and raises
  `UserError` otherwise.
- `build_model(dtype) -> flax.linen.Module`, called as `model(x, train=...)` on normalized
  float (B, H, W, C) images. Its output may be any pytree (an array of logits, or a dict such
  as {"logits": (B, K), "box": (B, 4)}); only the task's `loss`/`eval_sums` read it.
- `augment(batch, rng, fill) -> batch`: training augmentation on device of the uint8 batch
  {"image": (B, H, W, C), target: (B, ...)} before normalization; geometric transforms must
  move the targets with the image (default: `pipeline.augment_batch`, which handles "box",
  "boxes" and "mask"). Runs inside the fused jitted step.
- `loss(outputs, batch) -> (scalar loss, sums)`: the training objective of one batch (the
  gradient is taken of the scalar) and a dict of float32 scalars *summed* over the batch.
  `sums` must contain "loss_sum" (the loop checks it for NaN/inf) and "count" (examples).
- `zero_train_sums() -> dict`: zeros with exactly the keys and dtypes of `loss`'s sums (the
  loop accumulates them between log steps and checkpoints them).
- `train_metrics(host_sums) -> dict[str, float]`: the logged train metrics from accumulated
  sums; must contain "loss". `progress_metric` names the one the progress bar shows as "acc".
- `eval_sums(outputs, batch) -> dict`: summed evaluation metrics of one padded test batch.
  `batch["weight"]` float32 (B,) is 1 for real examples and 0 for padding: every sum must be
  weighted by it so the result over the padded split is exact. Any array shapes are fine
  (scalars, confusion matrices); they are added across batches.
- `finalize(sums) -> (scalars, arrays)`: host-side. `scalars` (str -> float/int) go into the
  eval events of metrics.jsonl and TensorBoard and must contain "loss" and `config.best_metric`;
  `arrays` (str -> np.ndarray, e.g. "confusion") go to the report and pictures only.
- `eval_line(scalars) -> str`: the console line after each evaluation during training.
- `test_line(scalars) -> str`: the console line of `--mode=eval`.
- `test_sample(n) -> dict`: the first `n` test examples, uint8 "image" and the targets, in
  memory (also for a streamed dataset), for the pictures.
- `report_lines(scalars, arrays) -> list[str]`: the "final test metrics" part of summary.txt.
- `pictures(model, variables, sample, path, tag) -> None`: task pictures for
  `--mode=visualize` (after the pictures every task gets: filters, feature maps, curves,
  classic kernels); `sample` is `test_sample(viz.max_eval_images)`, `path(kind)` gives the
  PNG path of a picture kind.

The streaming (grain) feed serves classification only: other tasks need the dataset in memory
(`requires_device_feed`), which `feeds.make_feeds` enforces with a `UserError`.
"""

from typing import Any

import numpy as np

from cnnjax.data import pipeline
from cnnjax.errors import UserError


class Task:
    """Base class of the tasks; see the module docstring for the contract."""

    name: str = ""
    target_keys: tuple[str, ...] = ()
    progress_metric: str = "accuracy"
    requires_device_feed: bool = True
    # Whether the model outputs one (B, classes) logits array, so that class probabilities can
    # be averaged (flip test-time augmentation) or ranked (predict, pictures).
    outputs_class_scores: bool = False
    mask_fill: int = 255  # What crop padding writes into a "mask" target (an ignore label).

    def __init__(self, config, data):
        self.config, self.data = config, data

    # -- data ------------------------------------------------------------------------------

    def require_targets(self) -> None:
        """UserError unless the in-memory dataset carries every key of `target_keys`."""
        data = self.data
        if not data.in_memory:
            raise UserError(
                f"task={self.name!r} needs the dataset in memory ({data.name} is streamed); "
                "set --config.data.image_size to a size that fits, or use task=classification."
            )
        missing = [
            k
            for k in self.target_keys
            if k not in ("label", "index") and k not in data.train_targets
        ]
        if missing:
            have = ", ".join(["label", *sorted(data.train_targets)])
            raise UserError(
                f"task={self.name!r} needs {', '.join(missing)} targets, but dataset "
                f"{data.name!r} has only: {have}. Use a dataset with them (e.g. shapes)."
            )

    def augment(self, batch: dict, rng, fill) -> dict:
        return pipeline.augment_batch(
            batch, rng, self.config.augment, fill=fill, mask_fill=self.mask_fill
        )

    # -- model and objective ---------------------------------------------------------------

    def build_model(self, dtype) -> Any:
        raise NotImplementedError

    def loss(self, outputs, batch: dict):
        raise NotImplementedError

    def zero_train_sums(self) -> dict:
        raise NotImplementedError

    def train_metrics(self, host_sums: dict) -> dict[str, float]:
        raise NotImplementedError

    # -- evaluation ------------------------------------------------------------------------

    def eval_sums(self, outputs, batch: dict) -> dict:
        raise NotImplementedError

    def finalize(self, sums: dict) -> tuple[dict, dict]:
        raise NotImplementedError

    def eval_line(self, scalars: dict) -> str:
        keys = ["loss", *(k for k in scalars if k != "loss" and k != "num_examples")]
        return " ".join(f"{k}={scalars[k]:.4f}" for k in keys if isinstance(scalars[k], float))

    def test_line(self, scalars: dict) -> str:
        """`--mode=eval`'s line after "NAME @ step N: ": every scalar metric."""
        metrics = [f"{k} {v:.4f}" for k, v in scalars.items() if isinstance(v, float)]
        return f"test {', '.join(metrics)}"

    def report_lines(self, scalars: dict, arrays: dict) -> list[str]:
        del arrays
        return [f"  {k:<14}{v:.4f}" for k, v in scalars.items() if isinstance(v, float)]

    def test_sample(self, n: int) -> dict:
        return {k: v[:n] for k, v in self.data.arrays("test", self.target_keys).items()}

    def pictures(self, model, variables, sample: dict, path, tag: str) -> None:
        del model, variables, sample, path, tag


def model_kwargs(config, *, set_by_task=("num_classes",)) -> dict:
    """Every key under `config.model` except "name": the model constructor's arguments.

    UserError for a key in `set_by_task`: the task derives it (e.g. num_classes from the
    dataset), so a value in the config would contradict the data."""
    for key in set_by_task:
        if key in config.model:
            raise UserError(
                f"--config.model.{key} is not a setting: the task sets it from the dataset "
                f"({config.data.name}). Remove it; to use fewer classes, pick a dataset "
                "with fewer."
            )
    return {k: v for k, v in config.model.items() if k != "name"}


def safe_div(a, b) -> float:
    return float(a) / float(b) if float(b) > 0 else float("nan")


def as_host(tree) -> dict:
    """Device sums -> NumPy on the host."""
    import jax

    return {k: np.asarray(v) for k, v in jax.device_get(tree).items()}
