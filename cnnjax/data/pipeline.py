"""On-device input pipeline: the dataset lives on the devices; batches are cut inside jit.

The order of examples is a pure function of (seed, epoch, step): the permutation of epoch `e`
comes from `fold_in(fold_in(key(seed), DATA_STREAM), e)`, and step `s` of that epoch takes the
slice `[s * batch, (s + 1) * batch)` of it. A resumed run therefore sees exactly the batches an
uninterrupted one would.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

DATA_STREAM = 0x0DA7A  # fold_in tag that keeps data keys apart from model keys.


@functools.partial(jax.jit, static_argnums=(2,))
def epoch_permutation(seed: jax.Array, epoch: jax.Array, n: int) -> jax.Array:
    """The shuffled order of `n` training examples in `epoch`: int32 (n,)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), DATA_STREAM), epoch)
    return jax.random.permutation(key, n).astype(jnp.int32)


def take_batch(arrays: dict, perm, step_in_epoch, batch_size: int) -> dict:
    """Gathers batch `step_in_epoch` of an epoch from every per-example array.

    arrays: {"image": (N, H, W, C), "label": (N,), ...any target (N, ...)} -> the same keys
    with (B, ...) rows, all taken at the same indices.
    """
    idx = jax.lax.dynamic_slice_in_dim(perm, step_in_epoch * batch_size, batch_size)
    return {key: jnp.take(value, idx, axis=0) for key, value in arrays.items()}


def normalize(images, mean, std):
    """uint8 (..., C) -> float32 standardized per channel: (x / 255 - mean) / std."""
    x = images.astype(jnp.float32) * (1.0 / 255.0)
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def random_crop(images, rng, padding: int, mode: str = "constant"):
    """Pads each image by `padding` pixels ("constant" zeros or "reflect") and crops back
    to its size at a random offset per image. images: (B, H, W, C)."""
    if padding <= 0:
        return images
    b, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode=mode)
    offsets = jax.random.randint(rng, (b, 2), 0, 2 * padding + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def random_flip(images, rng):
    """Mirrors each image left-right with probability 1/2. images: (B, H, W, C)."""
    flip = jax.random.bernoulli(rng, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)


def crop_offsets(rng, batch: int, padding: int) -> jax.Array:
    """The (dy, dx) offsets `random_crop` draws from `rng`: int32 (batch, 2) in [0, 2 padding]."""
    return jax.random.randint(rng, (batch, 2), 0, 2 * padding + 1)


def crop_at(arrays, offsets, padding: int, mode: str = "constant", fill=0):
    """Pads arrays (B, H, W, ...) by `padding` pixels on both spatial axes ("constant" with
    `fill`, or "reflect") and crops each back to (H, W) at its `offsets` (B, 2): what
    `random_crop` does to images, for masks that must follow them."""
    h, w = arrays.shape[1:3]
    pad = ((0, 0), (padding, padding), (padding, padding)) + ((0, 0),) * (arrays.ndim - 3)
    if mode == "constant":
        padded = jnp.pad(arrays, pad, constant_values=jnp.asarray(fill, arrays.dtype))
    else:
        padded = jnp.pad(arrays, pad, mode=mode)

    def crop(x, off):
        start = (off[0], off[1]) + (0,) * (x.ndim - 2)
        return jax.lax.dynamic_slice(x, start, (h, w, *x.shape[2:]))

    return jax.vmap(crop)(padded, offsets)


def shift_boxes(boxes, offsets, padding: int, image_hw):
    """Normalized boxes (B, ..., 4) as (ymin, xmin, ymax, xmax) after a crop at `offsets`
    (B, 2): moved by (padding - offset) / size and clipped to the image (empty stays empty)."""
    size = jnp.asarray(image_hw, jnp.float32)
    shift = (padding - offsets.astype(jnp.float32)) / size
    shift = shift.reshape((shift.shape[0],) + (1,) * (boxes.ndim - 2) + (2,))
    return jnp.clip(boxes + jnp.concatenate([shift, shift], axis=-1), 0.0, 1.0)


def flip_flags(rng, batch: int) -> jax.Array:
    """The flips `random_flip` draws from `rng`: bool (batch,)."""
    return jax.random.bernoulli(rng, 0.5, (batch, 1, 1, 1)).reshape(batch)


def flip_where(arrays, flip):
    """Mirrors arrays (B, H, W, ...) left-right where `flip` (B,) is true."""
    flip = flip.reshape((-1,) + (1,) * (arrays.ndim - 1))
    return jnp.where(flip, arrays[:, :, ::-1], arrays)


def flip_boxes_where(boxes, flip):
    """Normalized boxes (B, ..., 4) mirrored left-right where `flip` (B,) is true."""
    mirrored = jnp.stack(
        [boxes[..., 0], 1.0 - boxes[..., 3], boxes[..., 2], 1.0 - boxes[..., 1]], axis=-1
    )
    return jnp.where(flip.reshape((-1,) + (1,) * (boxes.ndim - 1)), mirrored, boxes)


def cutout(images, rng, size: int, fill):
    """Sets a `size` x `size` square at a random centre of each image to `fill` (per channel);
    squares are clipped at the border (DeVries & Taylor 2017). images: (B, H, W, C)."""
    if size <= 0:
        return images
    b, h, w, _ = images.shape
    cy_rng, cx_rng = jax.random.split(rng)
    cy = jax.random.randint(cy_rng, (b, 1, 1), 0, h)
    cx = jax.random.randint(cx_rng, (b, 1, 1), 0, w)
    ys, xs = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
    lo = size // 2
    inside = (ys >= cy - lo) & (ys < cy - lo + size) & (xs >= cx - lo) & (xs < cx - lo + size)
    fill = jnp.asarray(fill, images.dtype)
    return jnp.where(inside[..., None], fill, images)


def augment(images, rng, aug_config, fill=0):
    """Training-time augmentation of a uint8 batch (before normalization, so crop padding is
    black as in torchvision), per `config.augment`. `fill`: cutout value per channel."""
    crop_rng, flip_rng, cut_rng = jax.random.split(rng, 3)
    if aug_config.crop_padding > 0:
        images = random_crop(images, crop_rng, aug_config.crop_padding, aug_config.crop_mode)
    if aug_config.flip:
        images = random_flip(images, flip_rng)
    if aug_config.get("cutout", 0) > 0:
        images = cutout(images, cut_rng, int(aug_config.cutout), fill)
    return images


# Keys of per-example arrays whose geometry follows the image (`augment_batch`).
BOX_KEYS = ("box", "boxes")  # normalized (ymin, xmin, ymax, xmax): (N, 4) or (N, K, 4)
MASK_KEYS = ("mask",)  # per-pixel labels (N, H, W)


def augment_batch(batch: dict, rng, aug_config, fill=0, mask_fill: int = 255) -> dict:
    """`augment` applied jointly to an image batch and its geometric targets.

    batch: {"image": uint8 (B, H, W, C), optional "box" (B, 4) / "boxes" (B, K, 4) normalized,
    optional "mask" (B, H, W) labels, any other key passed through}. The same crop offsets and
    flips move boxes and masks with their image; crop padding of a mask is `mask_fill` (the
    ignore label: those pixels are not scene). Cutout paints the image only. With only "image"
    and "label" the image is exactly `augment(batch["image"], rng, ...)`.
    """
    out = dict(batch)
    b, h, w = batch["image"].shape[:3]
    crop_rng, flip_rng, cut_rng = jax.random.split(rng, 3)  # As `augment` splits.
    padding = int(aug_config.crop_padding)
    if padding > 0:
        out["image"] = random_crop(out["image"], crop_rng, padding, aug_config.crop_mode)
        offsets = crop_offsets(crop_rng, b, padding)  # The offsets random_crop just drew.
        for key in MASK_KEYS:
            if key in out:
                out[key] = crop_at(out[key], offsets, padding, aug_config.crop_mode, mask_fill)
        for key in BOX_KEYS:
            if key in out:
                out[key] = shift_boxes(out[key], offsets, padding, (h, w))
    if aug_config.flip:
        out["image"] = random_flip(out["image"], flip_rng)
        flip = flip_flags(flip_rng, b)  # The flips random_flip just drew.
        for key in MASK_KEYS:
            if key in out:
                out[key] = flip_where(out[key], flip)
        for key in BOX_KEYS:
            if key in out:
                out[key] = flip_boxes_where(out[key], flip)
    if aug_config.get("cutout", 0) > 0:
        out["image"] = cutout(out["image"], cut_rng, int(aug_config.cutout), fill)
    return out


def pad_for_eval(arrays: dict, batch_size: int) -> dict:
    """Pads a split to whole batches: every array (N, ...) -> (num_batches, batch_size, ...),
    plus "weight" float32 (num_batches, batch_size): 1 for real examples, 0 for padding.

    Padded rows repeat row 0 and carry weight 0, so metrics summed with the weight are exact.
    ("weight", not "mask": "mask" is the segmentation target.)
    """
    n = len(next(iter(arrays.values())))
    num_batches = max(1, -(-n // batch_size))
    pad = num_batches * batch_size - n
    idx = np.concatenate([np.arange(n), np.zeros(pad, np.int64)])
    weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    shape = (num_batches, batch_size)
    out = {key: np.asarray(v)[idx].reshape(shape + np.shape(v)[1:]) for key, v in arrays.items()}
    out["weight"] = weight.reshape(shape)
    return out
