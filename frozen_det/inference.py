"""A trained run for inference: its task, model and variables from its checkpoint (the
training loop is not involved; `evaluate` and `predict` use this)."""

from __future__ import annotations

import jax

from frozen_det import config as config_lib
from frozen_det.runtime import hide_accelerators_from_tensorflow
from frozen_det.tasks import get_task
from frozen_det.training import sharding
from frozen_det.training.checkpointing import Checkpointer
from frozen_det.training.state import build_state
from frozen_det.training.transfer import init_from_run


def restore_for_inference(config, workdir: str, step: int | None = None):
    """(config resolved, task, model, variables, step) of a run's checkpoint (latest unless
    `step`). Frozen parameters are rebuilt as in training (pretrained weights or seed, checked
    by fingerprint), the rest is restored; `train.init_from` supplies what the run did not
    train, as it did in training."""
    hide_accelerators_from_tensorflow()
    config = config_lib.resolve(config)
    task = get_task(config)
    model = task.build_model()
    state, _, _, _ = build_state(config, task, model, sharding.make_mesh(), train=False)
    if config.train.init_from:
        state, _ = init_from_run(state, config.train.init_from, config.train.init_exclude)
    checkpointer = Checkpointer(workdir)
    try:
        if checkpointer.latest_step() is None:
            raise FileNotFoundError(
                f"no checkpoint in {checkpointer.directory}: train first "
                f"(python -m frozen_det.train --workdir {workdir} ...)"
            )
        state = checkpointer.restore_model(state, step)
    finally:
        checkpointer.close()
    return config, task, model, state.variables(), int(jax.device_get(state.step))
