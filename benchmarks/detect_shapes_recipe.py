"""Standalone recipe search for `detect_shapes`: the grid detector on multi-object `shapes`.

Trains `cnnjax.models.detector.GridDetector` with `cnnjax.tasks.detection`'s loss on scenes of
up to `--max_objects` shapes and prints the test mAP@0.5 (VOC all-point) after each eval, with
the wall time so far. No trainer, checkpoints or logs: a quick way to compare recipes.

    python benchmarks/detect_shapes_recipe.py --epochs=10 --image_size=64 --lr=3e-3
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax.data import shapes
from cnnjax.models.detector import GridDetector
from cnnjax.tasks import detection


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--max_objects", type=int, default=4)
    p.add_argument("--num_train", type=int, default=4000)
    p.add_argument("--num_test", type=int, default=1000)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--filters", default="16,32,64")
    p.add_argument("--extra", default="64,64")
    p.add_argument("--box_weight", type=float, default=5.0)
    p.add_argument("--flip", action="store_true")
    p.add_argument("--evals", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    t0 = time.perf_counter()

    def split(n, seed):
        s = shapes.generate(n, image_size=a.image_size, seed=seed, max_objects=a.max_objects)
        return s["images"], s["boxes"], s["classes"]

    tr_x, tr_b, tr_c = split(a.num_train, shapes.TRAIN_SEED)
    te_x, te_b, te_c = split(a.num_test, shapes.TEST_SEED)
    mean = tr_x.reshape(-1, 3).mean(0) / 255.0
    std = tr_x.reshape(-1, 3).std(0) / 255.0
    print(f"data {time.perf_counter() - t0:.1f}s; objects/image {np.mean((tr_c >= 0).sum(1)):.2f}")

    model = GridDetector(
        num_classes=3,
        filters=tuple(int(f) for f in a.filters.split(",")),
        extra_convs=tuple(int(f) for f in a.extra.split(",") if f),
    )
    norm = lambda x: (x.astype(jnp.float32) / 255.0 - mean) / std
    variables = model.init(jax.random.key(a.seed), norm(tr_x[:2]), train=False)
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    spe = a.num_train // a.batch_size
    total = int(a.epochs * spe)
    sched = optax.warmup_cosine_decay_schedule(0.0, a.lr, min(spe, total // 10), total)
    if a.weight_decay:
        tx = optax.adamw(sched, weight_decay=a.weight_decay)
    else:
        tx = optax.adam(sched)
    opt_state = tx.init(variables["params"])
    dx, db, dc = jnp.asarray(tr_x), jnp.asarray(tr_b), jnp.asarray(tr_c)

    @jax.jit
    def step(params, stats, opt_state, i):
        epoch = i // spe
        key = jax.random.fold_in(jax.random.key(a.seed + 1), epoch)
        perm = jax.random.permutation(key, a.num_train)
        idx = jax.lax.dynamic_slice_in_dim(perm, (i % spe) * a.batch_size, a.batch_size)
        x, b, c = dx[idx], db[idx], dc[idx]
        if a.flip:
            f = jax.random.bernoulli(jax.random.fold_in(key, i), 0.5, (a.batch_size,))
            x = jnp.where(f[:, None, None, None], x[:, :, ::-1], x)
            flipped = jnp.stack([b[..., 0], 1 - b[..., 3], b[..., 2], 1 - b[..., 1]], -1)
            b = jnp.where(f[:, None, None] & (c >= 0)[..., None], flipped, b)

        def loss_fn(params):
            out, mut = model.apply(
                {"params": params, "batch_stats": stats}, norm(x), train=True,
                mutable=["batch_stats"],
            )  # fmt: skip
            loss, parts = detection.detection_loss(out, b, c, box_weight=a.box_weight)
            return loss.mean(), (mut["batch_stats"], {k: v.mean() for k, v in parts.items()})

        (loss, (stats, parts)), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, upd), stats, opt_state, loss, parts

    @jax.jit
    def predict(params, stats, x):
        out = model.apply({"params": params, "batch_stats": stats}, norm(x), train=False)
        return detection.detect(out)

    def evaluate(params, stats):
        outs = [predict(params, stats, te_x[i : i + 250]) for i in range(0, a.num_test, 250)]
        det = {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in outs[0]}
        return detection.mean_average_precision(det, te_b, te_c, 3)

    params, stats = variables["params"], variables["batch_stats"]
    print(f"{n_params:,} params, {total} steps of {a.batch_size} ({a.epochs} epochs)")
    eval_at = {int(round(total * (k + 1) / a.evals)) for k in range(a.evals)}
    t1 = time.perf_counter()
    for i in range(total):
        params, stats, opt_state, loss, parts = step(params, stats, opt_state, i)
        if (i + 1) in eval_at:
            m, per_class = evaluate(params, stats)
            parts = {k: round(float(v), 3) for k, v in parts.items()}
            print(
                f"step {i + 1} epoch {(i + 1) / spe:.1f} loss {float(loss):.3f} {parts} "
                f"mAP@0.5 {m:.4f} per-class {np.round(per_class, 3)} "
                f"train {time.perf_counter() - t1:.0f}s total {time.perf_counter() - t0:.0f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
