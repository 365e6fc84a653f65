"""`--mode=visualize`: every picture of a run, written under `RUN/plots/` (`--config.viz.dir`).

Loads the run's best checkpoint (or fresh weights when there is none, which the console and every
title say), predicts the first `viz.max_eval_images` test images, and writes: first-layer
filters and their weight histograms, feature maps of a sample image, Grad-CAM for several test
images, the confusion matrix, the training curves (if the run logged any), the classic kernels
applied to a sample image, the most confident mistakes and, for classifiers that
`cnnjax.models.convolutionalize` supports, the score grid of the convolutionalized classifier
over a larger canvas of test images. Every task gets the filters, feature maps, curves and
classic kernels here; the rest are the task's own (`Task.pictures`: the ones above for
classification, boxes for localization, masks for segmentation, detections before and after
NMS for detection).
"""

import errno
import os
import signal
import sys
import tempfile

import jax

from cnnjax import files, runs
from cnnjax.errors import UserError
from cnnjax.train import writers

# Exit code after SIGTERM: 128 + 15, what the signal's default action gives, so a scheduler
# still reads "terminated"; the run is only read, so there is nothing to save first.
TERMINATED = 143
# A write that names no file (a full disk while a picture is written) is still the plots'.
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class _Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler while the pictures are drawn (a
    BaseException, like KeyboardInterrupt: no `except Exception` on the way swallows it)."""


def _on_sigterm(signum, frame):
    raise _Terminated


def run(config, args) -> int:
    if not args.workdir:
        raise UserError(
            "--mode=visualize draws a run: pass --workdir=RUN_DIR (a run without "
            "checkpoints is drawn with fresh weights)."
        )
    plots = plots_dir(config, args.workdir)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        written = visualize(config, args.workdir, name=args.experiment)
    except _Terminated:
        print(
            f"error: terminated (SIGTERM) while drawing; the pictures finished so far are in "
            f"{plots} (each whole), the run is untouched.",
            file=sys.stderr,
            flush=True,
        )
        return TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous)
    for kind, path in written.items():
        print(f"{kind:<18} {path}")
    return 0


def plots_dir(config, workdir: str) -> str:
    """Where the pictures go: `viz.dir`, else WORKDIR/plots."""
    folder = str(config.viz.get("dir", "") or "")
    return files.absolute(folder or os.path.join(workdir, "plots"))


def _cannot_write(plots: str, error: OSError) -> UserError:
    return UserError(
        f"Cannot write the pictures into {plots}: {error.strerror or error}. Draw them into "
        "another folder with --config.viz.dir=/a/writable/folder."
    )


def _require_writable(plots: str) -> None:
    """A UserError now, before the run is read, when `plots` cannot be created or written (a
    read-only workdir, a full disk)."""
    try:
        files.makedirs(plots)
        if not files.is_uri(plots):  # Object storage: the first picture's upload tells.
            with tempfile.TemporaryFile(dir=plots):
                pass
    except OSError as e:
        raise _cannot_write(plots, e) from None


def visualize(config, workdir: str, *, name: str = "") -> dict[str, str]:
    """Writes the pictures of the run in `workdir` into `plots_dir`; returns {kind: path}."""
    plots = plots_dir(config, workdir)
    _require_writable(plots)
    try:
        return _draw(config, workdir, name, plots)
    except OSError as e:
        ours = str(e.filename).startswith(plots) if e.filename else e.errno in _WRITE_ERRORS
        if not ours:
            raise
        raise _cannot_write(plots, e) from None


def _draw(config, workdir: str, name: str, plots: str) -> dict[str, str]:
    exp, state, step = runs.restore_best(config, workdir)
    variables = jax.device_get(state.variables)
    data, model = exp.data, exp.model
    source = f"checkpoint at step {step}" if step is not None else "FRESH (untrained) weights"
    if step is None:
        print(f"note: no checkpoint in {workdir}: drawing a freshly initialized model", flush=True)
    tag = f"{name or config.model.name} ({source})"
    out = {}

    def path(kind):
        out[kind] = os.path.join(plots, f"{kind}.png")
        return out[kind]

    sample = exp.task.test_sample(int(config.viz.max_eval_images))
    _generic_pictures(config, workdir, name, model, variables, data, sample["image"], tag, path)
    exp.task.pictures(model, variables, sample, path, tag)
    return out


def _generic_pictures(config, workdir, name, model, variables, data, images, tag, path) -> None:
    """The pictures that need no class prediction: filters, feature maps, curves, kernels."""
    # Local: matplotlib is imported by the one mode that draws, not by every command.
    from cnnjax.viz import curves, feature_maps, filters, kernels_demo

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
