"""The train state and one generic train step for any task's loss.

Only the trainable partition of the parameters is differentiated and has optimizer state; the
frozen partition rides along as constants, so XLA never builds its backward pass (DESIGN.md
"The freeze switch"). BatchNorm statistics come back from the loss function: frozen parts run BN
in inference mode and return theirs unchanged, bit for bit.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax

from frozen_det.training import partition

# loss_fn(params, batch_stats, batch, rng) -> (loss, (metrics dict, new batch_stats))
LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[dict, Any]]]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any  # trainable partition (differentiated, has optimizer state)
    frozen_params: Any  # frozen partition (constants)
    batch_stats: Any
    opt_state: Any

    def all_params(self):
        return partition.merge(self.params, self.frozen_params)


def create_train_state(variables: Mapping[str, Any], mask: Mapping[str, Any],
                       optimizer: optax.GradientTransformation) -> TrainState:
    """Splits `variables['params']` by the bool `mask` (see `partition.trainable_mask`)."""
    trainable, frozen = partition.split(variables["params"], mask)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=trainable,
        frozen_params=frozen,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=optimizer.init(trainable),
    )


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation):
    """Returns step(state, batch, rng) -> (new_state, metrics); jit it with the shardings you need.

    Per-step randomness is `fold_in(rng, step)`, so a resumed run draws the same numbers.
    """

    def step(state: TrainState, batch: Any, rng: jax.Array):
        step_rng = jax.random.fold_in(rng, state.step)

        def objective(trainable):
            params = partition.merge(trainable, state.frozen_params)
            return loss_fn(params, state.batch_stats, batch, step_rng)

        (loss, (metrics, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state)
        return new_state, metrics

    return step
