"""Classify image files with a trained run or with imported Keras weights (`--mode=predict`).

    results = predict_run(config, workdir, ["cat.jpg", "dog.png"])    # the run's best checkpoint
    results = predict_keras("mobilenet.h5", ["cat.jpg"])               # Keras applications weights
    print(format_predictions(results))

Each result is, in the order of `paths`, either
`{"path": p, "top": [{"index": i, "name": n, "prob": p}, ...]}` (top-k, most probable first) or
`{"path": p, "error": "error: cannot read p: <reason>"}`: one bad file does not stop the others.

Resizing follows how the model saw images at evaluation (`transforms.make_eval_transform`):

- Models trained with the ImageNet recipe (`augment.inception_crop`, and Keras applications
  weights): the short side is resized to size / 0.875 (256 for 224), then the central
  size x size crop (the standard "resize 256, center crop 224" evaluation view).
- Models trained on whole small images (digits upsampled to 32x32, CIFAR, MNIST): the short side
  is resized to the model's input size and the long side center-cropped to a square, which for
  square images is exactly the plain resize the dataset itself got; nothing is squashed and
  nothing of a square picture is cut away.

Big pictures (an 8000x8000 photo) are fitted in PIL, with no full-size NumPy copy: the same
pixels as for any other image. PIL refuses files of over 2 * `PIL.Image.MAX_IMAGE_PIXELS`
(178,956,970) pixels, its guard against decompression bombs; such a file gets one error line.

Class names: the dataset's, except that 1000-class models whose dataset gives no readable names
(WordNet ids such as "n01440764", or a different count) get the ImageNet-1k names shipped in
`cnnjax/data/imagenet_classes.txt`.
"""

import functools
import importlib.resources
import os
import re
import sys
import unicodedata
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnjax import files, inference, runs
from cnnjax.data import pipeline, transforms
from cnnjax.data.folder import shown
from cnnjax.errors import UserError

IMAGENET_CROP_FRACTION = 0.875  # Short side to size / 0.875, then the central crop.
_SYNSET_ID = re.compile(r"n\d{8}$")


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (0 "tench" ... 999 "toilet tissue")."""
    text = importlib.resources.files("cnnjax.data").joinpath("imagenet_classes.txt").read_text()
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 1000, f"imagenet_classes.txt has {len(names)} names, expected 1000"
    return names


def class_names_for(dataset_names, num_classes: int) -> tuple[str, ...]:
    """Names for a model with `num_classes` outputs: the dataset's when they fit and are
    readable, the ImageNet names for 1000 classes, else "class 0", "class 1", ..."""
    names = tuple(str(n) for n in (dataset_names or ()))
    readable = not (names and all(_SYNSET_ID.match(n) for n in names))
    if len(names) == num_classes and readable:
        return names
    if num_classes == 1000:
        return imagenet_class_names()
    if len(names) == num_classes:
        return names
    return tuple(f"class {i}" for i in range(num_classes))


# ----------------------------------------------------------------------------- images


def _read_reason(path: str, error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "is a directory"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, UnidentifiedImageError):
        return "not an image (PIL cannot identify its format)"
    if isinstance(error, Image.DecompressionBombError):
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(found.group(1)):,} pixels" if found else "its size"
        return (
            f"too big to decode: {size}, over PIL's limit of {2 * Image.MAX_IMAGE_PIXELS:,} "
            "(its guard against decompression bombs); scale it down first"
        )
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _open(path: str, channels: int) -> Image.Image:
    """The decoded PIL image of a file, EXIF orientation applied, in mode L (channels=1) or
    RGB, copied only where orientation or mode ask for it. Raises OSError/ValueError-like
    errors on bad files."""
    if files.isdir(path):
        raise IsADirectoryError(path)
    with warnings.catch_warnings():
        # Between MAX_IMAGE_PIXELS and twice that, PIL warns (in several lines) and decodes:
        # a file the user named is read; over twice that it raises (see `_read_reason`).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with files.open_file(path, "rb") as f, Image.open(f) as im:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            mode = "L" if channels == 1 else "RGB"
            return im if im.mode == mode else im.convert(mode)


def read_image(path: str, channels: int) -> np.ndarray:
    """uint8 (H, W, channels) pixels of an image file (EXIF orientation applied; grayscale
    for channels=1, RGB for channels=3). Raises OSError/ValueError-like errors on bad files."""
    return transforms.decode(np.asarray(_open(path, channels)))  # (H, W) -> (H, W, 1).


def fit_image(image: np.ndarray, size, crop_fraction: float = 1.0) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (h, w, C) for a model input of `size` (int or (h, w)).

    Square inputs: short side to size / crop_fraction, then the central crop
    (`transforms.center_crop`); crop_fraction=1.0 keeps the whole short side. Non-square model
    inputs get a plain resize."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h != w:
        return transforms._resize(image, h, w)
    return transforms.center_crop(image, h, crop_fraction)


def _read_fitted(path: str, size, channels: int, crop_fraction: float) -> np.ndarray:
    """`fit_image(read_image(path, channels), size, crop_fraction)`, done on the PIL image:
    the same pixels, and a big picture is never copied into NumPy at full size (an 8000x8000
    PNG: 245 MB instead of 1.1 GB, in half the time)."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    im = _open(path, channels)
    if h != w:
        im = transforms.resize_pil(im, h, w)
    else:
        nh, nw, top, left = transforms.center_crop_box(im.height, im.width, h, crop_fraction)
        im = transforms.resize_pil(im, nh, nw).crop((left, top, left + w, top + h))
    return transforms.decode(np.asarray(im))


def _load(paths, size, channels: int, crop_fraction: float):
    """[(path, image or None, error line or None)] in the order of `paths`."""
    if channels not in (1, 3):
        raise UserError(f"Prediction needs a model with 1 or 3 input channels, not {channels}.")
    out = []
    for path in paths:
        path = os.fspath(path)
        try:
            image = _read_fitted(path, size, channels, crop_fraction)
            out.append((path, np.ascontiguousarray(image), None))
        except MemoryError:
            error = "not enough memory to decode it; scale it down first"
            out.append((path, None, f"error: cannot read {shown(path)}: {error}"))
        except Exception as e:  # noqa: BLE001 - any unreadable file becomes one error line.
            out.append((path, None, f"error: cannot read {shown(path)}: {_read_reason(path, e)}"))
    return out


def load_images(paths, size, channels: int, *, crop_fraction: float = 1.0):
    """(uint8 (N, size, size, channels) array, ok_paths, errors) for image files.

    Each readable file is decoded with PIL, then fitted with `fit_image` (see the module
    docstring for when `crop_fraction` is 0.875 and when 1.0). Each unreadable or missing file
    gives one line "error: cannot read PATH: REASON" in `errors`; the others are still loaded.
    """
    loaded = _load(paths, size, channels, crop_fraction)
    ok = [(p, im) for p, im, err in loaded if err is None]
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    images = np.stack([im for _, im in ok]) if ok else np.zeros((0, h, w, channels), np.uint8)
    return images, [p for p, _ in ok], [err for _, _, err in loaded if err is not None]


def _as_paths(paths) -> list[str]:
    if isinstance(paths, str | os.PathLike):
        paths = [p for p in os.fspath(paths).split(",") if p]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise UserError("No images to classify: give them with --images=PATH[,PATH...].")
    return paths


# ----------------------------------------------------------------------------- model


def _check_classifier(model, variables, input_shape, dtype) -> int:
    """The number of classes of `model`; a UserError if it does not classify whole images."""
    x = jax.ShapeDtypeStruct((1, *input_shape), dtype)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 2:
        raise UserError(
            f"--mode=predict classifies whole images, but {type(model).__name__} outputs "
            f"{shape if shape is not None else type(out).__name__} per batch, not class scores."
        )
    return int(shape[-1])


def predict(model, variables, images_uint8, mean, std, *, top_k: int = 5):
    """(indices int (N, k), probs float32 (N, k)): the top-k classes by softmax probability,
    most probable first, of uint8 (N, H, W, C) images normalized as (x / 255 - mean) / std."""
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8:
        raise TypeError(f"predict takes uint8 images, got {images.dtype}")
    fn = inference.softmax_fn(
        model, top_k=top_k, transform=lambda x: pipeline.normalize(x, mean, std)
    )
    return inference.in_batches(fn, variables, images)


def predict_preprocessed(model, variables, inputs, *, top_k: int = 5):
    """Like `predict`, for inputs already preprocessed as the model expects (float)."""
    fn = inference.softmax_fn(model, top_k=top_k)
    return inference.in_batches(fn, variables, np.asarray(inputs, np.float32))


def _results(loaded, indices, probs, names) -> list[dict]:
    results, row = [], 0
    for path, _image, error in loaded:
        if error is not None:
            results.append({"path": path, "error": error})
            continue
        top = [
            {"index": int(i), "name": names[int(i)], "prob": float(p)}
            for i, p in zip(indices[row], probs[row], strict=True)
        ]
        results.append({"path": path, "top": top})
        row += 1
    return results


# ----------------------------------------------------------------------------- entry points


def _eval_crop_fraction(config) -> float:
    """0.875 when the run trained and evaluated with the ImageNet recipe, else 1.0."""
    augment = config.get("augment")
    inception = augment is not None and bool(augment.get("inception_crop", False))
    return IMAGENET_CROP_FRACTION if inception else 1.0


def predict_run(config, workdir: str, paths, *, top_k: int = 5) -> list[dict]:
    """Top-k predictions for image files with the best (else the latest readable) checkpoint
    of the run in `workdir`. With no checkpoint there, `init.keras_weights` (if set) is used
    through `predict_keras`; otherwise a UserError says to train first."""

    paths = _as_paths(paths)
    keras_weights = ""
    if "init" in config and "keras_weights" in config.init:
        keras_weights = str(config.init.keras_weights or "")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    has_dir = files.isdir(ckpt_dir) and bool(files.listdir(ckpt_dir))
    if keras_weights and not has_dir:
        return predict_keras(keras_weights, paths, top_k=top_k)
    exp = runs.open_experiment(config, workdir, needs_data=False)
    exp, state, step = runs.restore_best(config, workdir, exp)
    if step is None:
        if keras_weights:
            return predict_keras(keras_weights, paths, top_k=top_k)
        raise UserError(
            f"No readable checkpoint in {ckpt_dir}: train first with the same --experiment and "
            f"--workdir={workdir}, or predict with Keras ImageNet weights via "
            "--config.init.keras_weights=FILE.h5."
        )
    data = exp.data
    image_shape = tuple(int(d) for d in data.image_shape)
    variables = state.variables
    num_classes = _check_classifier(exp.model, variables, image_shape, jnp.float32)
    names = class_names_for(data.class_names, num_classes)
    loaded = _load(paths, image_shape[:2], image_shape[2], _eval_crop_fraction(exp.config))
    ok = [im for _, im, err in loaded if err is None]
    indices, probs = np.zeros((0, 0), np.int32), np.zeros((0, 0), np.float32)
    if ok:
        indices, probs = predict(
            exp.model, variables, np.stack(ok), data.mean, data.std, top_k=top_k
        )
    return _results(loaded, indices, probs, names)


def _keras_source(path: str):
    """The Keras model of a `.keras` file (loaded once, read twice below), else the path."""
    if not (path.endswith(".keras") and os.path.isfile(path)):
        return path  # read_layers reads .h5 with h5py and words the errors.
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError:
        return path  # read_layers says how to install Keras.
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one line.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"Cannot load Keras model {path}: {first}") from e


def predict_keras(weights_path, paths, *, top_k: int = 5) -> list[dict]:
    """Top-k predictions for image files with Keras applications weights (`.keras` / `.h5`):
    imported with `cnnjax.interop.keras.import_keras`, fed at the architecture's ImageNet size
    with Keras' own preprocessing ("caffe" BGR mean subtraction or "tf" [-1, 1])."""
    from cnnjax.interop import keras as keras_interop
    from cnnjax.interop.keras_weights import read_layers

    paths = _as_paths(paths)
    source = _keras_source(os.fspath(weights_path))
    layers = read_layers(source)
    architecture = keras_interop.detect_architecture(layers)
    if not any(layer.name in ("predictions", "conv_preds") for layer in layers):
        raise UserError(
            f"{weights_path} has no classifier (Keras include_top=False weights): predicting "
            "ImageNet classes needs the full model's weights."
        )
    model, variables = keras_interop.import_keras(source)
    size = keras_interop.IMAGE_SIZE[architecture]
    shape = getattr(source, "input_shape", None)
    if shape and len(shape) == 4 and all(isinstance(d, int) for d in shape[1:3]):
        size = (int(shape[1]), int(shape[2]))  # A .keras model built for another input size.
    hw = (size, size) if isinstance(size, int) else size
    num_classes = _check_classifier(model, variables, (*hw, 3), jnp.float32)
    names = class_names_for((), num_classes)
    loaded = _load(paths, hw, 3, IMAGENET_CROP_FRACTION)
    ok = [im for _, im, err in loaded if err is None]
    indices, probs = np.zeros((0, 0), np.int32), np.zeros((0, 0), np.float32)
    if ok:
        inputs = keras_interop.preprocess(np.stack(ok).astype(np.float32), architecture)
        indices, probs = predict_preprocessed(model, variables, inputs, top_k=top_k)
    return _results(loaded, indices, probs, names)


def _columns(text: str) -> int:
    """Terminal columns of `text`: 2 for wide (CJK) characters, 0 for combining marks."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def _format_block(result: dict) -> str:
    if "error" in result:
        return result["error"]
    top = result["top"]
    width = max((_columns(t["name"]) for t in top), default=0)
    rank_width = len(str(len(top)))
    lines = [f"{shown(result['path'])}:"]
    for rank, t in enumerate(top, start=1):
        name = t["name"] + " " * (width - _columns(t["name"]))
        lines.append(f"  {rank:>{rank_width}}. {name}  {100 * t['prob']:6.2f}%")
    return "\n".join(lines)


def format_predictions(results: list[dict]) -> str:
    """Readable top-k lists, one block per image, errors as their one line:

    cat.jpg:
      1. tabby cat      87.31%
      2. tiger cat       9.02%
    """
    return "\n".join(_format_block(result) for result in results)


def run(config, args) -> int:
    if not args.images:
        raise UserError("--mode=predict needs images: --images=cat.jpg,dog.png.")
    if not args.workdir and not config.init.keras_weights:
        raise UserError(
            "--mode=predict uses a trained run (--workdir=RUN_DIR) or Keras "
            "weights (--config.init.keras_weights=FILE.h5)."
        )
    results = predict_run(config, args.workdir or "", list(args.images))
    for result in results:  # In order; a file that could not be read is one line on stderr.
        stream = sys.stderr if "error" in result else sys.stdout
        # A terminal that cannot show a class name's letters (an ASCII locale) gets \xe9 escapes.
        encoding = getattr(stream, "encoding", None) or "utf-8"
        text = _format_block(result).encode(encoding, "backslashreplace").decode(encoding)
        print(text, file=stream, flush=True)
    return 0 if any("top" in r for r in results) else 2
