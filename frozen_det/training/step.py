"""One generic train step for any task's loss (frozen_det.tasks.base.LossFn).

Only the trainable partition of the parameters is differentiated and has optimizer state; the
frozen partition rides along as constants, so XLA never builds its backward pass. BatchNorm
statistics come back from the loss function: frozen parts run BN in inference mode and return
theirs unchanged, bit for bit.
"""

from __future__ import annotations

import jax
import optax

from frozen_det.training import partition
from frozen_det.training.state import TrainState


def make_train_step(loss_fn, optimizer: optax.GradientTransformation):
    """Returns step(state, batch, rng) -> (new_state, metrics); jit it with the shardings you need.

    Per-step randomness is `fold_in(rng, step)`, so a resumed run draws the same numbers.
    """

    def step(state: TrainState, batch, rng: jax.Array):
        step_rng = jax.random.fold_in(rng, state.step)

        def objective(trainable):
            params = partition.merge(trainable, state.frozen_params)
            return loss_fn(params, state.batch_stats, batch, step_rng)

        (loss, (metrics, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
        return new_state, metrics

    return step
