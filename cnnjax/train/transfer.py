"""Transfer learning: initialize from another run or Keras weights, freeze by path pattern.

- `initialize(config, variables)`: copies every parameter and BatchNorm statistic whose path and
  shape match from `init.checkpoint` (a run dir, its checkpoints dir or one step dir) or
  `init.keras_weights` (through `cnnjax.interop.keras`). Paths matching `init.skip_pattern`
  (default: the classifier head) stay freshly initialized; a shape mismatch elsewhere is a
  `UserError` naming the path and both shapes. A report says what was loaded, skipped and new.
- `freeze(tx, pattern)`: frozen parameters get zero updates: no momentum, no weight decay drift
  (`optax.multi_transform` with `set_to_zero`).
- `frozen_batchnorm(pattern)`: an interceptor that runs BatchNorm layers whose parameters are
  frozen on their running statistics (Keras' `trainable=False`), so their statistics stay put.

Paths are "/"-joined parameter paths ("stage1_block1/conv1/kernel"); patterns are `re.search`
regular expressions on them.
"""

import os
import re

import flax.linen as nn
import jax
import numpy as np
import optax

from cnnjax import files
from cnnjax import workdir as workdir_lib
from cnnjax.errors import UserError
from cnnjax.train import checkpoint


def path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def flatten(tree) -> dict[str, object]:
    return {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_pattern(pattern: str, key: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise UserError(f"{key}={pattern!r} is not a valid regular expression: {e}.") from e


def freeze(tx: optax.GradientTransformation, pattern: str) -> optax.GradientTransformation:
    """`tx` for parameters not matching `pattern`, zero updates for those that do."""
    regex = _check_pattern(pattern, "transfer.freeze_pattern")

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda p, _: "frozen" if regex.search(path_str(p)) else "train", params
        )

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def frozen_batchnorm(pattern: str):
    """A `nn.intercept_methods` interceptor: BatchNorm layers whose scale path matches
    `pattern` normalize with their running statistics, in training too, and leave them as they
    are (flax refuses `use_running_average` at call time when the module was built with it, so
    the interceptor computes the inference-mode normalization itself)."""
    regex = _check_pattern(pattern, "transfer.freeze_pattern")

    def interceptor(next_fun, args, kwargs, context):
        m = context.module
        if not (
            isinstance(m, nn.BatchNorm)
            and context.method_name == "__call__"
            and regex.search("/".join(m.path) + "/scale")
        ):
            return next_fun(*args, **kwargs)
        if m.axis not in (-1, (-1,)):
            raise NotImplementedError("frozen BatchNorm supports the channels-last axis only")
        x = args[0]
        dtype = m.dtype or x.dtype
        y = (x - m.get_variable("batch_stats", "mean")) * jax.lax.rsqrt(
            m.get_variable("batch_stats", "var") + m.epsilon
        )
        if m.use_scale:
            y = y * m.get_variable("params", "scale")
        if m.use_bias:
            y = y + m.get_variable("params", "bias")
        return y.astype(dtype)

    return interceptor


def _read_checkpoint(path: str) -> dict:
    """{"params", "batch_stats"} of another run's checkpoint, read through the one checkpoint
    reader (manifest verified, unreadable steps warned about and skipped): `path` is a run
    directory or its checkpoints/ directory (its best step by the run's own `best_metric`,
    else the newest readable one), or one step directory (that step)."""
    path = files.absolute(path)
    if files.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    step = None
    if files.isdir(os.path.join(path, "default")) and os.path.basename(path).isdigit():
        path, step = os.path.dirname(path), int(os.path.basename(path))
    ckpts = None
    if files.isdir(path):
        saved = workdir_lib.read_config(os.path.dirname(path)) or {}
        metric = saved.get("best_metric", "accuracy")
        ckpts = checkpoint.Checkpoints(path, keep=1, best_metric=str(metric), read_only=True)
    if ckpts is None or not ckpts.steps():
        raise UserError(
            f"init.checkpoint={path!r}: no checkpoint there (expected a run "
            "directory, its checkpoints/ directory or one step directory)."
        )
    try:
        if step is None:
            step, tree = ckpts.read_best_arrays()
            which = f"its best by {ckpts.best_metric}" if step == ckpts.best_step() else "newest"
        else:
            tree, which = ckpts.read_arrays(step), "as named"
    except checkpoint.IntegrityError as e:
        raise UserError(
            f"init.checkpoint: the checkpoint at step {step} in {path} is damaged ({e}); "
            "name another step or run."
        ) from None
    finally:
        ckpts.close()
    state = tree["state"]
    print(f"init: reading step {step} of {path} ({which})", flush=True)
    return {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}


def source_variables(init_config) -> dict | None:
    """{"params", "batch_stats"} to initialize from, or None when `init` names nothing."""
    if init_config.checkpoint and init_config.keras_weights:
        raise UserError("Set only one of init.checkpoint and init.keras_weights.")
    if init_config.checkpoint:
        return _read_checkpoint(init_config.checkpoint)
    if init_config.keras_weights:
        from cnnjax.interop import keras

        # rgb=True: cnnjax models read RGB; "caffe" weights get their first conv reversed.
        _, variables, arch = keras.read_keras(init_config.keras_weights, rgb=True)
        print(
            f"init: read Keras {arch} weights {init_config.keras_weights} (trained with "
            f"data.normalization={keras.PREPROCESSING[arch]})",
            flush=True,
        )
        return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    return None


def fresh_start_note(config) -> str:
    """A line for a run that freezes parameters but loads none (no init.keras_weights or
    init.checkpoint): the frozen layers keep their random initialization. "" otherwise."""
    transfer, init = config.get("transfer"), config.get("init")
    if transfer is None or not transfer.freeze_pattern:
        return ""
    if init is not None and (init.checkpoint or init.keras_weights):
        return ""
    note = (
        "init: nothing to load (init.keras_weights and init.checkpoint are empty), so the "
        f"layers transfer.freeze_pattern={transfer.freeze_pattern!r} freezes keep their random "
        f"initialization. For real transfer learning pass Keras ImageNet {config.model.name} "
        "weights (keras.applications saves them under ~/.keras/models/) with "
        "--config.init.keras_weights=FILE.h5, or another run with --config.init.checkpoint=DIR."
    )
    if config.data.get("normalization") == "caffe":
        note += (
            " Caffe inputs are not scaled (about -124..152) and suit only pretrained weights: "
            "a fresh network diverges on them; add --config.data.normalization=dataset."
        )
    return note


def merge(target: dict, source: dict, skip_pattern: str) -> tuple[dict, dict]:
    """Copies matching entries of `source` into `target` ({"params", "batch_stats"} trees).

    Returns (merged, report) with report lists "loaded", "skipped" and "new" of paths.
    """
    skip = _check_pattern(skip_pattern, "init.skip_pattern") if skip_pattern else None
    merged, report = {}, {"loaded": [], "skipped": [], "new": []}
    for collection in ("params", "batch_stats"):
        tgt = target.get(collection) or {}
        src = flatten(source.get(collection) or {})
        values = {}
        for path, value in flatten(tgt).items():
            label = f"{collection}/{path}"
            param_path = path if collection == "params" else path.rsplit("/", 1)[0] + "/scale"
            if skip is not None and skip.search(param_path):
                report["skipped"].append(label)
                values[path] = value
            elif path in src:
                if tuple(np.shape(src[path])) != tuple(value.shape):
                    raise UserError(
                        f"init: {label} has shape {tuple(np.shape(src[path]))} in the source "
                        f"and {tuple(value.shape)} in this model; skip it with "
                        "--config.init.skip_pattern='REGEX' or pick a matching model."
                    )
                values[path] = np.asarray(src[path], dtype=value.dtype)
                report["loaded"].append(label)
            else:
                values[path] = value
                report["new"].append(label)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(tgt)
        merged[collection] = jax.tree_util.tree_unflatten(
            treedef, [values[path_str(p)] for p, _ in leaves]
        )
    return merged, report


def format_report(report: dict) -> str:
    def few(paths):
        return (": " + ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")) if paths else ""

    return (
        f"init: loaded {len(report['loaded'])} arrays, skipped {len(report['skipped'])}"
        f"{few(report['skipped'])}; left new {len(report['new'])}{few(report['new'])}"
    )
