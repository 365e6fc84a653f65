"""`--mode=export`: a trained run as files that run without cnnjax.

    python launch.py --experiment=quickstart --workdir=runs/qs --mode=export

writes into `<workdir>/export/` (`--config.export.dir`):
- `model.stablehlo`: `jax.export` serialized, for CPU, CUDA and TPU, any batch size;
- `model.onnx`: converted by jax2onnx (`pip install -e '.[export]'`), checked in onnxruntime;
- `model.json`: what a user needs to feed them: input name, shape and layout, how to resize,
  the normalization (already inside the graph), output names, class names, and the checks.

Both files are checked against the Flax model on the same batch before anything is written,
and their largest difference is printed and kept in the JSON. Nothing is written when a format
fails: an op the converter cannot express is one line naming it (exit 2). How to use the files
without cnnjax: docs/export.md.
"""

import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import runs
from cnnjax.errors import UserError
from cnnjax.interop import export as export_lib
from cnnjax.modes import predict

FORMATS = ("stablehlo", "onnx")
FILES = {"stablehlo": "model.stablehlo", "onnx": "model.onnx"}
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
    if "onnx" in formats and (missing := export_lib.missing_packages()):
        raise UserError(
            f"ONNX export needs {', '.join(missing)}: pip install -e '.[export]' "
            "(or --config.export.formats=stablehlo for the StableHLO file alone)."
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


def _write_atomically(path: str, data: bytes) -> None:
    """`data` to `path` through a temporary file in the same folder, so a kill or a full disk
    leaves the previous file whole."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # As open() would make it, not mkstemp's 0600.
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def export_run(config, workdir: str, experiment: str = "") -> tuple[str, dict]:
    """Exports the run in `workdir` as `config.export` says: (the folder, the sidecar dict)."""
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
        os.makedirs(out_dir, exist_ok=True)
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
    try:
        for fmt, blob in blobs.items():
            _write_atomically(os.path.join(out_dir, FILES[fmt]), blob)
        text = json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n"
        _write_atomically(os.path.join(out_dir, SIDECAR), text.encode("utf-8"))
    except OSError as e:
        raise UserError(f"Cannot write the export into {out_dir}: {e.strerror or e}.") from e
    return out_dir, sidecar


def run(config, args) -> int:
    if not args.workdir:
        raise UserError("--mode=export needs the run to export: pass --workdir=RUN_DIR.")
    out_dir, sidecar = export_run(config, args.workdir, args.experiment)
    print(f"{args.experiment} @ step {sidecar['checkpoint_step']} exported to {out_dir}:")
    for fmt, name in sidecar["files"].items():
        size = os.path.getsize(os.path.join(out_dir, name)) / 1e6
        diff = sidecar["check"]["max_abs_difference_vs_flax"][fmt]
        print(f"  {name:<16} {size:7.2f} MB   max |exported - flax| = {diff:.1e}")
    print(f"  {SIDECAR:<16} input {sidecar['input']['shape']} NHWC float32 pixels 0..255")
    print("How to run them without cnnjax: docs/export.md")
    return 0
