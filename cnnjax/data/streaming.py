"""Streaming input for datasets that do not fit in device memory (ImageNet), with grain.

The order is the same pure function of (seed, epoch, step) as the on-device pipeline: epoch `e`
is `pipeline.epoch_permutation(seed, e, n)`, global step `s` of the epoch takes
`perm[s * B:(s + 1) * B]`, and process `p` of `P` reads only its contiguous slice of that batch.
Per-example augmentation draws from `default_rng((seed, epoch, index))`. Nothing about the
stream needs checkpointing: a resumed run rebuilds it from the step.

Decoding and augmentation run in grain's reader threads (PIL releases the GIL while decoding)
with a prefetch buffer, overlapping the device's work on the previous batch.
"""

from collections.abc import Callable, Iterator, Sequence

import grain
import jax
import numpy as np

from cnnjax.data import pipeline

# transform(record, rng) -> {"image": uint8 (H, W, C), "label": int32 scalar}
Transform = Callable[[dict, np.random.Generator], dict]


class IndexedStream:
    """This process's share of each global batch, step by step.

    source: random access (`len`, `__getitem__`), e.g. `tfds.data_source(...)`.
    global_batch: examples per step over all processes (divisible by process_count).
    """

    def __init__(
        self,
        source: Sequence,
        *,
        global_batch: int,
        seed: int,
        transform: Transform,
        num_threads: int = 16,
        prefetch: int = 2,
        process_index: int | None = None,
        process_count: int | None = None,
    ):
        self.source = source
        self.n = len(source)
        self.global_batch = global_batch
        self.steps_per_epoch = self.n // global_batch
        self.seed = int(seed)
        self.transform = transform
        self.num_threads = num_threads
        self.prefetch = prefetch
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if global_batch % self.process_count:
            raise ValueError(
                f"global batch {global_batch} is not divisible by {self.process_count} processes"
            )
        self.local_batch = global_batch // self.process_count

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The permutation of all example indices in `epoch`: int (n,)."""
        return np.asarray(pipeline.epoch_permutation(np.int32(self.seed), epoch, self.n))

    def local_indices(self, epoch: int, first_step: int = 0) -> np.ndarray:
        """This process's example indices for steps first_step.. of `epoch`: (steps, batch)."""
        perm = self.epoch_order(epoch)[: self.steps_per_epoch * self.global_batch]
        per_step = perm.reshape(self.steps_per_epoch, self.process_count, self.local_batch)
        return per_step[first_step:, self.process_index]

    def _example(self, epoch: int, index: int) -> dict:
        rng = np.random.default_rng((self.seed, epoch, int(index)))
        return self.transform(self.source[int(index)], rng)

    def epoch_batches(self, epoch: int, first_step: int = 0) -> Iterator[dict]:
        """Host batches {"image": uint8 (local_batch, H, W, C), "label": int32 (local_batch,)}."""
        indices = self.local_indices(epoch, first_step).reshape(-1)
        ds = (
            grain.MapDataset.source(indices)
            .map(lambda i: self._example(epoch, i))
            .batch(self.local_batch, drop_remainder=True)
        )
        options = grain.ReadOptions(
            num_threads=self.num_threads, prefetch_buffer_size=self.prefetch * self.local_batch
        )
        yield from ds.to_iter_dataset(options)

    def batches(self, start_step: int = 0) -> Iterator[tuple[int, dict]]:
        """(global step, host batch) from `start_step` on, across epochs, forever."""
        epoch, step_in_epoch = divmod(start_step, self.steps_per_epoch)
        step = start_step
        while True:
            for batch in self.epoch_batches(epoch, step_in_epoch):
                yield step, batch
                step += 1
            epoch, step_in_epoch = epoch + 1, 0


def to_global(batch: dict, sharding) -> dict:
    """Assembles per-process host batches into one global array sharded over the mesh."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
