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


def take_batch(images, labels, perm, step_in_epoch, batch_size: int):
    """Gathers batch `step_in_epoch` of an epoch: images (B, H, W, C), labels (B,)."""
    idx = jax.lax.dynamic_slice_in_dim(perm, step_in_epoch * batch_size, batch_size)
    return jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0)


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


def pad_for_eval(images: np.ndarray, labels: np.ndarray, batch_size: int):
    """Pads a split to whole batches: returns images (B, batch, ...), labels, mask (B, batch).

    Padded rows repeat row 0 and carry mask 0, so metrics summed with the mask are exact.
    """
    n = len(images)
    num_batches = max(1, -(-n // batch_size))
    pad = num_batches * batch_size - n
    idx = np.concatenate([np.arange(n), np.zeros(pad, np.int64)])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    shape = (num_batches, batch_size)
    return (
        images[idx].reshape(shape + images.shape[1:]),
        labels[idx].reshape(shape),
        mask.reshape(shape),
    )
