"""Host-side image transforms for the streaming pipeline (NumPy + PIL, one image at a time).

Inception-style random-resized crop for training, resize + center crop for evaluation, as in
the standard ImageNet recipes (torchvision's RandomResizedCrop and Resize(256)+CenterCrop(224)).
"""

import io
import math

import numpy as np
from PIL import Image


def decode(image) -> np.ndarray:
    """Encoded bytes (JPEG/PNG) or an array -> uint8 (H, W, C)."""
    if isinstance(image, bytes | bytearray | np.bytes_):
        with Image.open(io.BytesIO(bytes(image))) as im:
            image = np.asarray(im.convert("RGB"))
    image = np.asarray(image)
    return image[..., None] if image.ndim == 2 else image


def resize_pil(im: Image.Image, height: int, width: int) -> Image.Image:
    """What `_resize` does, on a PIL image (no NumPy copy of a big picture): the same pixels."""
    if im.size == (width, height):
        return im
    return im.resize((width, height), Image.BILINEAR, reducing_gap=None)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    squeeze = image.shape[-1] == 1
    out = np.asarray(
        resize_pil(Image.fromarray(image[..., 0] if squeeze else image), height, width)
    )
    return out[..., None] if squeeze else out


def random_resized_crop(
    image: np.ndarray, rng: np.random.Generator, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> np.ndarray:
    """A crop covering `scale` of the area with aspect ratio in `ratio` (log-uniform), resized
    to (size, size). Falls back to the central crop after 10 failed draws (torchvision's rule).
    image: uint8 (H, W, C) -> uint8 (size, size, C)."""
    h, w = image.shape[:2]
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return _resize(image[top : top + ch, left : left + cw], size, size)
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    top, left = (h - ch) // 2, (w - cw) // 2
    return _resize(image[top : top + ch, left : left + cw], size, size)


def center_crop_box(h: int, w: int, size: int, crop_fraction: float = 0.875):
    """(height, width, top, left) of `center_crop` for an h x w image: the size it is resized
    to, and where its central (size, size) crop starts."""
    short = int(round(size / crop_fraction))
    if h <= w:
        nh, nw = short, max(short, int(round(w * short / h)))
    else:
        nw, nh = short, max(short, int(round(h * short / w)))
    return nh, nw, (nh - size) // 2, (nw - size) // 2


def center_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
    """Resize the short side to size / crop_fraction (256 for 224), then the central
    (size, size) crop. image: uint8 (H, W, C) -> uint8 (size, size, C)."""
    nh, nw, top, left = center_crop_box(*image.shape[:2], size, crop_fraction)
    image = _resize(image, nh, nw)
    return image[top : top + size, left : left + size]


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return image[:, ::-1] if rng.random() < 0.5 else image


def pad_crop(
    image: np.ndarray, rng: np.random.Generator, padding: int, mode: str = "constant"
) -> np.ndarray:
    """Pad by `padding` pixels (zeros or reflection) and crop back at a random offset: the host
    twin of `pipeline.random_crop`. image: uint8 (H, W, C)."""
    if padding <= 0:
        return image
    h, w = image.shape[:2]
    dy, dx = (int(v) for v in rng.integers(0, 2 * padding + 1, size=2))
    if mode != "constant":
        padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode=mode)
        return padded[dy : dy + h, dx : dx + w]
    # Zero padding without np.pad (slow on small images): copy the overlap into zeros.
    sy, sx = dy - padding, dx - padding  # Window origin in the unpadded image.
    out = np.zeros_like(image)
    y0, y1, x0, x1 = max(0, sy), min(h, sy + h), max(0, sx), min(w, sx + w)
    out[y0 - sy : y1 - sy, x0 - sx : x1 - sx] = image[y0:y1, x0:x1]
    return out


def cutout(image: np.ndarray, rng: np.random.Generator, size: int, fill) -> np.ndarray:
    """The host twin of `pipeline.cutout`: a `size` square at a random centre set to `fill`."""
    if size <= 0:
        return image
    h, w = image.shape[:2]
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    image = image.copy()
    top, left = max(0, cy - size // 2), max(0, cx - size // 2)
    image[top : cy - size // 2 + size, left : cx - size // 2 + size] = fill
    return image


def make_train_transform(aug_config, image_size: int = 0, fill=0):
    """record {"image", "label"} + rng -> augmented uint8 example, per `config.augment`:
    Inception crop to `image_size` if `augment.inception_crop`, else resize to `image_size` (if
    > 0), then pad-and-crop, flip and cutout (filled with `fill`)."""

    def transform(record: dict, rng: np.random.Generator) -> dict:
        image = decode(record["image"])
        if aug_config.get("inception_crop", False):
            image = random_resized_crop(image, rng, image_size or image.shape[0])
        elif image_size:
            image = _resize(image, image_size, image_size)
        image = pad_crop(image, rng, int(aug_config.crop_padding), aug_config.crop_mode)
        if aug_config.flip:
            image = random_flip(image, rng)
        image = cutout(image, rng, int(aug_config.get("cutout", 0)), fill)
        return {"image": np.ascontiguousarray(image), "label": np.int32(record["label"])}

    return transform


def make_eval_transform(aug_config, image_size: int = 0):
    """The evaluation view: center crop (Inception recipes) or a plain resize. A record's
    "weight" (0: a stand-in for an unreadable file, `folder.FolderSource`) is kept."""

    def transform(record: dict, rng: np.random.Generator | None = None) -> dict:
        del rng
        image = decode(record["image"])
        if aug_config.get("inception_crop", False):
            image = center_crop(image, image_size or image.shape[0])
        elif image_size:
            image = _resize(image, image_size, image_size)
        out = {"image": np.ascontiguousarray(image), "label": np.int32(record["label"])}
        if "weight" in record:
            out["weight"] = np.float32(record["weight"])
        return out

    return transform
