"""Optimizers and learning-rate schedules, built by optax from `config.optim` and `config.schedule`.

Every optimizer is the same chain, so weight decay means the same thing everywhere:

    clip -> [decay (coupled)] -> direction (momentum / Adam / RMS) -> [decay (decoupled)] -> -lr

Coupled decay adds `wd * w` to the gradient before momentum, as PyTorch's `weight_decay`
does; decoupled decay adds it after (Loshchilov & Hutter), which is what AdamW always does.
"""

import math

import jax
import ml_collections
import optax

from cnnjax.errors import UserError, did_you_mean

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "piecewise", "cosine", "onecycle")
DECAY_MASKS = ("kernels", "all")


def _warmup_steps(schedule_config, steps_per_epoch: int) -> int:
    return int(schedule_config.warmup_steps) + int(
        round(float(schedule_config.warmup_epochs) * steps_per_epoch)
    )


def create_schedule(
    config, total_steps: int, steps_per_epoch: int, peak_lr: float | None = None
) -> optax.Schedule:
    """The learning rate as a function of the step, `peak_lr` (default `config.optim.lr`) at its
    peak."""
    sc = config.schedule
    lr = float(config.optim.lr) if peak_lr is None else float(peak_lr)
    name = sc.name
    if name not in SCHEDULES:
        raise UserError(
            f"Unknown schedule {name!r}.{did_you_mean(name, SCHEDULES)} "
            f"Choose one of {', '.join(SCHEDULES)}."
        )
    total_steps = max(1, total_steps)
    warmup = min(_warmup_steps(sc, steps_per_epoch), total_steps - 1) if total_steps > 1 else 0
    if name == "onecycle":
        # Warm-up is part of the cycle itself (pct_start): no separate linear warm-up.
        return optax.cosine_onecycle_schedule(
            transition_steps=total_steps,
            peak_value=lr,
            pct_start=float(sc.pct_start),
            div_factor=float(sc.div_factor),
            final_div_factor=float(sc.final_div_factor),
        )
    if name == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0 if warmup else lr,
            peak_value=lr,
            warmup_steps=warmup,
            decay_steps=total_steps,
            end_value=lr * float(sc.end_lr_factor),
        )
    if name == "constant":
        main = optax.constant_schedule(lr)
    else:  # piecewise: boundaries are fractions of the whole run.
        boundaries = {
            int(round(float(b) * total_steps)): float(sc.decay_factor) for b in sc.boundaries
        }
        main = optax.piecewise_constant_schedule(lr, boundaries)
    if not warmup:
        return main
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), lambda step: main(step + warmup)], [warmup]
    )


def decay_mask(params, mode: str):
    """Which parameters weight decay applies to: "kernels" (ndim > 1: no biases, no norm
    scales or offsets) or "all"."""
    if mode not in DECAY_MASKS:
        raise UserError(
            f"Unknown optim.weight_decay_mask {mode!r}; choose one of {', '.join(DECAY_MASKS)}."
        )
    if mode == "all":
        return jax.tree.map(lambda _: True, params)
    return jax.tree.map(lambda p: p.ndim > 1, params)


def updated_optim(optim_config, overrides):
    """`optim_config` with the keys of `overrides` (a phase's changes) replaced; a UserError for
    keys optim does not have, and for lr (a phase sets its own peak lr)."""
    overrides = dict(overrides.items()) if overrides is not None else {}
    unknown = sorted(k for k in overrides if k not in optim_config or k == "lr")
    if unknown:
        valid = ", ".join(k for k in optim_config.keys() if k != "lr")
        raise UserError(
            f"transfer.finetune_optim has {', '.join(unknown)}: it takes keys of optim "
            f"({valid}); phase 2's learning rate is transfer.finetune_lr."
        )
    return ml_collections.ConfigDict({**optim_config.to_dict(), **overrides})


def create_optimizer(
    config, schedule: optax.Schedule, overrides=None
) -> optax.GradientTransformation:
    """The optax chain for `config.optim` driven by `schedule`; `overrides` (a mapping of optim
    keys, e.g. `transfer.finetune_optim` for phase 2) replaces some of optim's values."""
    oc = updated_optim(config.optim, overrides) if overrides else config.optim
    name = oc.name
    if name not in OPTIMIZERS:
        raise UserError(
            f"Unknown optimizer {name!r}.{did_you_mean(name, OPTIMIZERS)} "
            f"Choose one of {', '.join(OPTIMIZERS)}."
        )
    momentum = float(oc.momentum)
    if name == "sgd":
        direction = (
            optax.trace(decay=momentum, nesterov=bool(oc.nesterov))
            if momentum
            else optax.identity()
        )
    elif name in ("adam", "adamw"):
        direction = optax.scale_by_adam(b1=float(oc.b1), b2=float(oc.b2), eps=float(oc.eps))
    else:  # rmsprop, with optional (nesterov) momentum on top as in Keras/PyTorch.
        direction = optax.scale_by_rms(decay=float(oc.rms_decay), eps=float(oc.eps))
        if momentum:
            direction = optax.chain(
                direction, optax.trace(decay=momentum, nesterov=bool(oc.nesterov))
            )

    parts = []
    if float(oc.grad_clip_norm) > 0:
        parts.append(optax.clip_by_global_norm(float(oc.grad_clip_norm)))
    wd = float(oc.weight_decay)
    decoupled = bool(oc.decoupled_weight_decay) or name == "adamw"
    decay = (
        optax.add_decayed_weights(wd, mask=lambda p: decay_mask(p, oc.weight_decay_mask))
        if wd > 0
        else None
    )
    if decay is not None and not decoupled:
        parts.append(decay)
    parts.append(direction)
    if decay is not None and decoupled:
        parts.append(decay)
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)


def steps_for(config, num_train_examples: int) -> tuple[int, int]:
    """(steps_per_epoch, total_steps): `num_train_steps` > 0 wins over `num_epochs`."""
    steps_per_epoch = num_train_examples // int(config.batch_size)
    if steps_per_epoch == 0:
        raise UserError(
            f"batch_size={config.batch_size} is larger than the {num_train_examples} training "
            f"examples; lower it with --config.batch_size={max(1, num_train_examples)} or less."
        )
    if int(config.num_train_steps) > 0:
        return steps_per_epoch, int(config.num_train_steps)
    return steps_per_epoch, int(math.ceil(float(config.num_epochs) * steps_per_epoch))
