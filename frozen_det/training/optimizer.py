"""Learning-rate schedules and the optimizer over the trainable partition.

The optimizer only ever sees trainable parameters (frozen ones are not in its pytree), so
frozen parts have no optimizer state and no weight decay by construction.

SGD follows Keras' momentum form (docs/reference.md §2.13): v <- m v - lr g; w <- w + v. It
folds the learning rate into the velocity, so right after a learning-rate drop it differs from
optax.sgd (which scales the accumulated trace by the new rate). L2 regularisation on kernels
(factor wd/2 in the loss, i.e. wd * w in the gradient) is added before the momentum step.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from frozen_det.training.partition import decay_mask


def learning_rate_schedule(schedule, total_steps: int) -> optax.Schedule:
    """`config.train.schedule` (frozen_det.config.train_defaults) -> optax schedule."""
    name = schedule.name
    base = float(schedule.base_lr)
    warmup_steps = int(schedule.warmup_steps)
    warmup_lr = float(schedule.warmup_lr)
    if name == "constant":
        main = optax.constant_schedule(base)
    elif name == "warmup_piecewise":
        boundaries = [int(b) for b in schedule.boundaries]
        multipliers = (
            [float(m) for m in schedule.multipliers]
            if schedule.multipliers
            else [0.1 ** (i + 1) for i in range(len(boundaries))]
        )

        def main(step):  # absolute step: the drops are at the listed steps, warm-up included
            factor = jnp.ones((), jnp.float32)
            for boundary, multiplier in zip(boundaries, multipliers):
                factor = jnp.where(step >= boundary, multiplier, factor)
            return base * factor
    elif name == "warmup_cosine":

        def main(step):
            progress = jnp.clip((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0, 1.0)
            return base * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    else:
        raise ValueError(f"train.schedule.name={name!r}: use warmup_piecewise, warmup_cosine or constant.")
    if warmup_steps <= 0:
        return main

    def with_warmup(step):
        # Linear warm-up from warmup_lr to the schedule's value (TF-Vision LinearWarmup).
        fraction = jnp.minimum(step, warmup_steps) / warmup_steps
        warm = warmup_lr + fraction * (main(warmup_steps) - warmup_lr)
        return jnp.where(step < warmup_steps, warm, main(step))

    return with_warmup


class KerasMomentumState(NamedTuple):
    count: jax.Array
    velocity: Any


def keras_momentum_sgd(
    learning_rate: optax.ScalarOrSchedule, momentum: float = 0.9, nesterov: bool = False
) -> optax.GradientTransformation:
    """Keras SGD: v = m v - lr g; update = v (or m v - lr g with Nesterov)."""

    def init(params):
        return KerasMomentumState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        velocity = jax.tree.map(lambda v, g: momentum * v - lr * g, state.velocity, grads)
        if nesterov:
            updates = jax.tree.map(lambda v, g: momentum * v - lr * g, velocity, grads)
        else:
            updates = velocity
        return updates, KerasMomentumState(state.count + 1, velocity)

    return optax.GradientTransformation(init, update)


def _path(key_path) -> str:
    """A jax key path as frozen_det.tree_paths writes it: "backbone/stem/conv/kernel"."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in key_path)


def scale_by_path_rules(rules: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
    """Per-module learning-rate multipliers: each update times the multiplier of the first
    (regex, multiplier) rule whose regex `re.search`es its parameter path (1 where none does).
    Applied last in the chain, this equals scaling that parameter's learning rate, for Keras SGD
    (momentum is linear in the rate) and AdamW (its decoupled decay is scaled by the rate too).
    A rule that matches no trainable parameter is refused at init (a typo, or a frozen part)."""
    rules = tuple((str(pattern), float(multiplier)) for pattern, multiplier in rules)

    def multiplier(key_path) -> float:
        path = _path(key_path)
        return next((m for pattern, m in rules if re.search(pattern, path)), 1.0)

    def init(params):
        paths = [_path(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        for pattern, _ in rules:
            if not any(re.search(pattern, path) for path in paths):
                raise ValueError(
                    f"config.train.lr_multipliers: {pattern!r} matches no trainable parameter "
                    f"(paths look like {paths[0]!r}; frozen parameters have no learning rate)"
                )
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(
            lambda kp, u: u if multiplier(kp) == 1.0 else u * jnp.asarray(multiplier(kp), u.dtype), updates
        )
        return scaled, state

    return optax.GradientTransformation(init, update)


def build_optimizer(train_config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, learning-rate schedule) from a complete `config.train`."""
    schedule = learning_rate_schedule(train_config.schedule, int(train_config.total_steps))
    opt = train_config.optimizer
    wd = float(train_config.weight_decay)
    parts = []
    if train_config.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(float(train_config.grad_clip_norm)))
    if opt.name == "sgd":
        if wd:
            parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
        parts.append(keras_momentum_sgd(schedule, float(opt.momentum), bool(opt.nesterov)))
    elif opt.name == "adamw":
        parts.append(optax.adamw(schedule, b1=float(opt.b1), b2=float(opt.b2), weight_decay=wd, mask=decay_mask))
    else:
        raise ValueError(f"train.optimizer.name={opt.name!r}: use 'sgd' or 'adamw'.")
    if train_config.lr_multipliers:
        parts.append(scale_by_path_rules(train_config.lr_multipliers))
    return optax.chain(*parts), schedule
