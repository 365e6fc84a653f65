"""Training-step throughput for any registered model, batch size and dtype, as a Markdown table.

    python benchmarks/train_step.py --models=resnet18:stem=cifar,lenet5 --batch=64,512 \
        --dtype=bfloat16 --image_size=32 [--steps=20]

Each row is `cnnjax.modes.benchmark.time_train_step`: the training loop's own fused step (batch
cut + augmentation + forward + backward + update) on device-resident synthetic data, timed after
warm-up with `block_until_ready`. Paste the table into benchmarks/RESULTS.md with this command.
"""

import argparse

from cnnjax import runtime

# launch.py's default (before JAX starts): no YNNPACK fusions; XLA_FLAGS can say otherwise.
runtime.tune_xla_cpu()

from cnnjax.modes import benchmark  # noqa: E402
from cnnjax.overrides import apply_overrides  # noqa: E402
from experiments import base  # noqa: E402


def _model_spec(spec: str) -> list[tuple[str, str]]:
    name, *kwargs = spec.split(":")
    pairs = [("model.name", name)]
    for kv in kwargs:
        key, value = kv.split("=", 1)
        pairs.append((f"model.{key}", value))
    return pairs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18:stem=cifar")
    p.add_argument("--batch", default="512")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()

    print("| model | batch | dtype | images/s | ms/step | compile s | MFU |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for spec in args.models.split(","):
        for batch in args.batch.split(","):
            config = apply_overrides(
                base.get_base_config().lock(),
                [
                    *_model_spec(spec),
                    ("data.name", "synthetic"),
                    ("batch_size", batch),
                    ("dtype", args.dtype),
                    ("data.image_size", str(args.image_size)),
                    ("data.synthetic.channels", str(args.channels)),
                    ("data.synthetic.num_classes", str(args.num_classes)),
                    ("augment.crop_padding", "4"),
                    ("augment.flip", "true"),
                ],
            )
            t = benchmark.time_train_step(config, steps_per_run=args.steps, warmup=args.warmup)
            mfu = f"{100 * t.mfu:.1f}%" if t.mfu is not None else "n/a"
            print(
                f"| {spec} | {batch} | {args.dtype} | {t.images_per_sec:,.0f} | "
                f"{t.ms_per_step:.2f} | {t.compile_s:.1f} | {mfu} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
