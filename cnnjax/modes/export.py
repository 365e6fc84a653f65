"""`--mode=export`: a trained run as files that run without cnnjax.

    python launch.py --experiment=quickstart --workdir=runs/qs --mode=export

writes into `<workdir>/export/` (`--config.export.dir`):
- `model.stablehlo`: `jax.export` serialized, for CPU, CUDA and TPU, any batch size;
- `model.onnx`: converted by jax2onnx (`pip install -e '.[export]'`), checked in onnxruntime;
- `model.json`: what a user needs to feed them: input name, shape and layout, how to resize,
  the normalization (already inside the graph), output names, class names, and the checks.

Both files are checked against the Flax model on the same batch before anything is written,
and their largest difference is printed and kept in the JSON. Nothing is written when a format
fails: an op the converter cannot express is one line naming it (exit 2), and so is a format
whose packages are missing (with its pip command). The folder holds one export: files of the
previous export that this one did not write (its model.json named them) are removed. How to use
the files without cnnjax: docs/export.md.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import files, runs
from cnnjax.errors import UserError
from cnnjax.interop import export as export_lib
from cnnjax.modes import predict

FORMATS = ("stablehlo", "onnx")
FILES = {"stablehlo": "model.stablehlo", "onnx": "model.onnx"}
_TITLES = {"stablehlo": "StableHLO", "onnx": "ONNX"}
SIDECAR = "model.json"
TOLERANCE = 1e-4  # Largest |exported - Flax| accepted, float32.
CHECK_BATCH = 3  # Images in the check batch: not the batch size anything was traced with.


def _formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in str(text).split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(
            f"--config.export.formats={text!r}: choose from {', '.join(FORMATS)} (comma-separated)."
        )
    for fmt in formats:
        if missing := export_lib.missing_packages(fmt):
            others = [f for f in FORMATS if f != fmt and not export_lib.missing_packages(f)]
            alone = "".join(
                f" (or --config.export.formats={f} for the {_TITLES[f]} file alone)"
                for f in others[:1]
            )
            raise UserError(
                f"{_TITLES[fmt]} export needs {', '.join(missing)} (not installed here): "
                f"{export_lib.REQUIREMENTS[fmt][1]}{alone}."
            )
    return formats


def _restore(config, workdir: str):
    which = str(config.export.checkpoint).lower()
    if which not in ("best", "latest"):
        raise UserError(f"--config.export.checkpoint={which!r}: choose best or latest.")
    exp = runs.open_experiment(config, workdir, needs_data=False)
    exp, state, step = runs.restore_best(config, workdir, exp, latest=which == "latest")
    if step is None:
        raise UserError(
            f"No readable checkpoint in {os.path.join(workdir, 'checkpoints')}: train first "
            f"with the same --experiment and --workdir={workdir}, then export."
        )
    return exp, state, step


def _preprocessing(config, image_shape, mean, std) -> dict:
    h, w, c = image_shape
    fraction = predict._eval_crop_fraction(config)
    if h == w:
        resize = (
            f"resize the short side to {round(h / fraction)} px, then take the central {h}x{w} crop"
        )
    else:
        resize = f"resize to {h}x{w} (height x width)"
    return {
        "color": "grayscale (one channel)" if c == 1 else "RGB",
        "resize": resize,
        "short_side": round(h / fraction) if h == w else None,
        "crop": [h, w],
        "pixel_range": "0..255 as float32 (not scaled)",
        "normalization_inside_graph": "(pixels / 255 - mean) / std, per channel",
        "mean": [float(m) for m in np.asarray(mean).ravel()],
        "std": [float(s) for s in np.asarray(std).ravel()],
    }


def export_run(config, workdir: str, experiment: str = "") -> tuple[str, dict, list[str]]:
    """Exports the run in `workdir` as `config.export` says: (the folder, the sidecar dict, the
    files of the previous export there that this one did not write and removed)."""
    formats = _formats(config.export.formats)
    exp, state, step = _restore(config, workdir)
    data = exp.data
    image_shape = tuple(int(d) for d in data.image_shape)
    class_scores = bool(exp.task.outputs_class_scores)
    fn = export_lib.inference_function(
        exp.model, state.variables, data.mean, data.std, class_scores=class_scores
    )
    check = np.random.default_rng(0).uniform(0, 255, (CHECK_BATCH, *image_shape))
    check = check.astype(np.float32)
    reference = jax.jit(fn)(jnp.asarray(check))
    output_names = ["logits", "probabilities"] if class_scores else ["outputs"]

    blobs, checks = {}, {}
    try:
        for fmt in formats:
            if fmt == "stablehlo":
                blob = export_lib.to_stablehlo(fn, image_shape)
                got = jax.export.deserialize(bytearray(blob)).call(check)
            else:
                blob = export_lib.to_onnx(fn, image_shape, output_names)
                got = export_lib.run_onnx(blob, check)
            diff = export_lib.max_difference(jax.tree.leaves(got), jax.tree.leaves(reference))
            if not diff <= TOLERANCE:
                raise UserError(
                    f"The {fmt} export differs from the model by {diff:.2e} (over {TOLERANCE:g}) "
                    "on the check batch; nothing was written."
                )
            blobs[fmt], checks[fmt] = blob, diff
    except export_lib.ExportError as e:
        others = [f for f in FORMATS if f != "onnx"] if e.fmt == "ONNX" else []
        hint = f" --config.export.formats={others[0]} exports the rest." if others else ""
        raise UserError(f"{e} Nothing was written.{hint}") from e

    out_dir = str(config.export.dir) or os.path.join(workdir, "export")
    try:
        files.makedirs(out_dir)
    except OSError as e:
        raise UserError(f"Cannot create --config.export.dir={out_dir}: {e.strerror}.") from e
    sidecar = {
        "experiment": experiment,
        "model": str(config.model.name),
        "checkpoint_step": int(step),
        "files": {fmt: FILES[fmt] for fmt in formats},
        "input": {
            "name": export_lib.INPUT_NAME,
            "shape": [export_lib.BATCH, *image_shape],
            "layout": "NHWC",
            "dtype": "float32",
        },
        "preprocessing": _preprocessing(exp.config, image_shape, data.mean, data.std),
        "outputs": output_names,
        "class_names": (
            list(predict.class_names_for(data.class_names, data.num_classes))
            if class_scores
            else list(data.class_names)
        ),
        "inference_mode": "BatchNorm running statistics, dropout off",
        "check": {
            "batch": CHECK_BATCH,
            "max_abs_difference_vs_flax": checks,
            "tolerance": TOLERANCE,
        },
        "versions": {"jax": jax.__version__},
    }
    if "onnx" in formats:
        import jax2onnx
        import onnxruntime

        sidecar["onnx_opset"] = export_lib.ONNX_OPSET
        sidecar["versions"].update(
            jax2onnx=getattr(jax2onnx, "__version__", "?"), onnxruntime=onnxruntime.__version__
        )
    stale = [n for n in _previous_files(out_dir) if n not in sidecar["files"].values()]
    try:
        for fmt, blob in blobs.items():
            files.write_atomic(os.path.join(out_dir, FILES[fmt]), blob)
        # Before the new model.json: a kill in between leaves the old one naming the stale
        # files, and the next export removes them.
        removed = [n for n in stale if _remove(os.path.join(out_dir, n))]
        text = json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n"
        files.write_atomic(os.path.join(out_dir, SIDECAR), text.encode("utf-8"))
    except OSError as e:
        raise UserError(f"Cannot write the export into {out_dir}: {e.strerror or e}.") from e
    return out_dir, sidecar, removed


def _previous_files(out_dir: str) -> list[str]:
    """The files the export already in `out_dir` consists of, by its model.json (only the names
    cnnjax writes: a damaged or foreign JSON removes nothing)."""
    try:
        listed = json.loads(files.read_bytes(os.path.join(out_dir, SIDECAR))).get("files", {})
        return [n for n in listed.values() if n in FILES.values()]
    except (OSError, ValueError, AttributeError):
        return []


def _remove(path: str) -> bool:
    try:
        files.remove(path)
        return True
    except FileNotFoundError:
        return False


def run(config, args) -> int:
    if not args.workdir:
        raise UserError("--mode=export needs the run to export: pass --workdir=RUN_DIR.")
    out_dir, sidecar, removed = export_run(config, args.workdir, args.experiment)
    print(f"{args.experiment} @ step {sidecar['checkpoint_step']} exported to {out_dir}:")
    for fmt, name in sidecar["files"].items():
        size = files.size(os.path.join(out_dir, name)) / 1e6
        diff = sidecar["check"]["max_abs_difference_vs_flax"][fmt]
        print(f"  {name:<16} {size:7.2f} MB   max |exported - flax| = {diff:.1e}")
    print(f"  {SIDECAR:<16} input {sidecar['input']['shape']} NHWC float32 pixels 0..255")
    for name in removed:
        print(
            f"  removed {name}: it was the previous export's, not of this step "
            f"(--config.export.formats={','.join(sidecar['files'])} was asked for)"
        )
    print("How to run them without cnnjax: docs/export.md")
    return 0
