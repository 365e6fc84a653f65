"""How long `Checkpoints.save` blocks the training loop, for an experiment's real state.

    python benchmarks/checkpoint_save.py [--experiment=resnet18_cifar] [--saves=8] [--gap=1.0]

Saves the experiment's freshly initialized TrainState (plus its metric sums) `--saves` times,
`--gap` seconds apart (an epoch of training between saves), and prints the median and maximum
time each `save` call kept its caller, leaving out the first (it compiles the device copy).
`--checkpoint_module=path/to/checkpoint.py` times another version of the module (A/B against
an older commit: `git show REV:cnnjax/train/checkpoint.py > /tmp/old.py`).
"""

import argparse
import importlib.util
import os
import statistics
import tempfile
import time

import jax

import experiments
from cnnjax.overrides import apply_overrides
from cnnjax.train import checkpoint, experiment


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="resnet18_cifar")
    p.add_argument("--saves", type=int, default=8)
    p.add_argument("--gap", type=float, default=1.0)
    p.add_argument("--checkpoint_module", default="")
    args = p.parse_args()
    module = checkpoint
    if args.checkpoint_module:
        spec = importlib.util.spec_from_file_location("other_checkpoint", args.checkpoint_module)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    config = apply_overrides(
        experiments.EXPERIMENTS[args.experiment].get_config(), [("data.name", "synthetic")]
    )
    exp = experiment.build(config)
    tree = {"state": exp.init_state(), "train_sums": jax.jit(exp.task.zero_train_sums)()}
    n = sum(x.size for x in jax.tree.leaves(tree))
    ckpts = module.Checkpoints(os.path.join(tempfile.mkdtemp(), "ckpt"), keep=2)
    times = []
    for step in range(1, args.saves + 1):
        t0 = time.perf_counter()
        ckpts.save(step, tree, metrics={"accuracy": 0.1 * step})
        times.append(time.perf_counter() - t0)
        time.sleep(args.gap)
    ckpts.close()
    rest = times[1:] or times
    print(
        f"{args.experiment}: {n:,} numbers on {jax.devices()[0].device_kind}; save blocked the "
        f"caller {statistics.median(rest) * 1e3:.0f} ms median, {max(rest) * 1e3:.0f} ms max "
        f"(saves 2-{args.saves}; the first: {times[0] * 1e3:.0f} ms)"
    )


if __name__ == "__main__":
    main()
