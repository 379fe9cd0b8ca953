"""One generic train step for any task's loss (frozen_det.tasks.base.LossFn).

Only the trainable partition of the parameters is differentiated and has optimizer state; the
frozen partition rides along as constants, so XLA never builds its backward pass. BatchNorm
statistics come back from the loss function: frozen parts run BN in inference mode and return
theirs unchanged, bit for bit.

A step whose loss, gradients or update are not finite changes nothing but the step
counter (parameters, BN statistics and optimizer state stay as they were) and reports
`nonfinite` = 1 in its metrics: non-finite numbers never reach the weights or a checkpoint, and
the loop decides whether to stop or go on (`train.nonfinite`) without a per-step host sync.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from frozen_det.training import partition
from frozen_det.training.state import TrainState


def all_finite(tree) -> jax.Array:
    """Whether every element of `tree` is finite (elementwise: a norm overflows for large finite values)."""
    return functools.reduce(
        jnp.logical_and, [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)], jnp.array(True)
    )


def make_train_step(loss_fn, optimizer: optax.GradientTransformation):
    """Returns step(state, batch, rng) -> (new_state, metrics); jit it with the shardings you need.

    Per-step randomness is `fold_in(rng, step)`, so a resumed run draws the same numbers.
    Non-finite steps are no-ops (module docstring).
    """

    def step(state: TrainState, batch, rng: jax.Array):
        step_rng = jax.random.fold_in(rng, state.step)

        def objective(trainable):
            params = partition.merge(trainable, state.frozen_params)
            return loss_fn(params, state.batch_stats, batch, step_rng)

        (loss, (metrics, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & all_finite(grads) & all_finite(updates)

        def unless_nonfinite(new, old):
            return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

        new_state = state.replace(
            step=state.step + 1,
            params=unless_nonfinite(params, state.params),
            batch_stats=unless_nonfinite(batch_stats, state.batch_stats),
            opt_state=unless_nonfinite(opt_state, state.opt_state),
        )
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm, nonfinite=1.0 - finite.astype(jnp.float32))
        return new_state, metrics

    return step
