"""What a checkpoint's manifest (sha256 of every file) costs each process, saving and restoring
a ResNet-50-sized tree with one or several processes.

    python benchmarks/checkpoint_verify.py --processes=1 [--copies=4] [--repeats=3]
    python benchmarks/checkpoint_verify.py --processes=2

The tree: ResNet-50's parameter shapes (ImageNet, 25.6M numbers) `--copies` times (4: the
parameters and three optimizer-sized copies, 102M float32, 409 MB), replicated on a mesh of
`--processes` CPU processes (jax.distributed over gloo, one device each, on this machine),
saved locally. Per process, medians of `--repeats`:

- save: how long each `save` call kept the calling (training) thread, saves `--gap` seconds
  apart as in training (a call also commits the save before it: with several processes, that
  is where the manifest was hashed); and, apart, how long hashing the whole step takes;
- restore: `Checkpoints._verify` of the step (what every restore checks first: this process's
  share of the hashing, and with several processes the verdict they agree on), and the whole
  `restore_latest`.

The page cache is warm (the files were just written): hashing, not the disk, is timed.
`--checkpoint_module=path/to/checkpoint.py` times another version of the module (A/B against
an older commit: `git show REV:cnnjax/train/checkpoint.py > /tmp/old.py`).
"""

import argparse
import importlib.util
import os
import statistics
import tempfile
import time

import processes


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gap", type=float, default=5.0, help="Seconds of 'training' between saves.")
    p.add_argument("--dir", default="", help="Where to save (default: a new temporary folder).")
    p.add_argument("--checkpoint_module", default="")
    p.add_argument("--process_id", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.process_id >= 0:
        return worker(args)
    directory = args.dir or os.path.join(tempfile.mkdtemp(prefix="ckpt-verify-"), "ckpt")
    processes.run_workers(__file__, args.processes, extra=[f"--dir={directory}"])


def worker(args):
    processes.one_device_per_process()
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from cnnjax import parallel
    from cnnjax.models.registry import MODELS
    from cnnjax.train import checkpoint

    if args.processes > 1:
        parallel.initialize_distributed(
            f"localhost:{args.port}", args.processes, args.process_id, mode="on"
        )
    module = checkpoint
    if args.checkpoint_module:
        spec = importlib.util.spec_from_file_location("other_checkpoint", args.checkpoint_module)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

    model = MODELS["resnet50"](num_classes=1000)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), np.zeros((1, 224, 224, 3), np.float32), train=False)
    )["params"]
    rng = np.random.default_rng(0)
    host = {
        f"copy{c}": jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32), shapes)
        for c in range(args.copies)
    }
    mesh = parallel.make_mesh()
    tree = parallel.replicate(host, mesh)
    target = checkpoint.abstract_like(tree, jax.tree.map(lambda _: parallel.replicated(mesh), tree))
    n = sum(x.size for x in jax.tree.leaves(tree))

    # Saves as the training loop makes them, `--gap` seconds of training apart: each `save`
    # call also commits the save before it (with several processes, that is where the manifest
    # used to be hashed, on this thread).
    ckpts = module.Checkpoints(args.dir, keep=2)
    saves = []
    for step in range(1, args.repeats + 2):
        t0 = time.perf_counter()
        ckpts.save(step, tree)
        saves.append(time.perf_counter() - t0)
        time.sleep(args.gap)
    t0 = time.perf_counter()
    ckpts.close()
    closed = time.perf_counter() - t0
    step = args.repeats + 1
    step_dir = os.path.join(args.dir, str(step))
    hashing = ""
    if jax.process_index() == 0:
        t0 = time.perf_counter()
        module._file_digests(step_dir)
        hashing = f"; hashing the whole step takes {ms([time.perf_counter() - t0])}"
    if jax.process_count() > 1:  # Process 1's verify should not time process 0's hashing.
        multihost_utils.sync_global_devices("hashed")

    verifies, restores = [], []
    for _ in range(args.repeats):
        ckpts = module.Checkpoints(args.dir, keep=2)
        t0 = time.perf_counter()
        ckpts._verify(step)
        verifies.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        got, _ = ckpts.restore_latest(target)
        restores.append(time.perf_counter() - t0)
        assert got == step
        ckpts.close()

    size = sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(step_dir)
        for name in names
    )
    print(
        f"process {jax.process_index()}/{jax.process_count()}: {n / 1e6:.0f}M float32, "
        f"{size / 1e6:.0f} MB on disk; save kept the caller {ms(saves[1:])} (saves 2-{step}, "
        f"the last close {ms([closed])}){hashing}; restore: verify {ms(verifies)}, whole "
        f"restore_latest {ms(restores)} (medians of {args.repeats})",
        flush=True,
    )


def ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e3:.0f} ms"


if __name__ == "__main__":
    main()
