"""Transfer between runs: `train.init_from` (another run's workdir, any task) restores every
leaf of this model that the other run has with the same path and shape, except those matching a
`train.init_exclude` regex; the rest keeps its fresh initialisation. What was restored, skipped
(excluded, or a shape that differs, e.g. a classifier with other classes) and freshly
initialised is logged and returned as a report.

The other run's checkpoints hold only what it trained; its frozen parameters (e.g. a frozen
ImageNet backbone) come, as in that run, from its own config: the config saved with each
checkpoint rebuilds that run's model and initial variables, and its checkpoint is restored on
top. So a classifier's backbone moves into a detector (`backbone/...` in both), a detector's
backbone into a classifier, and a classifier into another classifier.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections
import numpy as np

from frozen_det.training.checkpointing import Checkpointer
from frozen_det.training.state import TrainState
from frozen_det.tree_paths import flatten, map_paths, overlay

log = logging.getLogger(__name__)


def run_workdir(directory: str) -> str:
    """A run's workdir from its workdir or its `checkpoints/` folder."""
    directory = os.path.abspath(directory.rstrip("/"))
    return os.path.dirname(directory) if os.path.basename(directory) == "checkpoints" else directory


def run_config(checkpointer: Checkpointer, step: int) -> ml_collections.ConfigDict:
    """The complete config a run saved with its checkpoint at `step` (fields that the schemas
    have since dropped are ignored and logged)."""
    from frozen_det import config as config_lib
    from frozen_det.schema import dropping_unknown_fields

    saved = checkpointer.meta(step).get("config")
    if not saved:
        raise ValueError(f"the checkpoint at step {step} in {checkpointer.directory} has no saved config")
    with dropping_unknown_fields() as dropped:
        config = config_lib.complete(ml_collections.ConfigDict(json.loads(saved)))
    if dropped:
        log.info("%s: fields of an earlier version of the config schemas ignored: %s", checkpointer.directory, dropped)
    return config


def load_run_variables(
    directory: str, step: int | None = None, initial: bool = False
) -> tuple[dict, ml_collections.ConfigDict, int]:
    """(the other run's model variables as numpy, its config, the step) from its checkpoint
    (latest unless `step`): its frozen parameters rebuilt from its config, the rest restored.
    `initial`: the variables the run started from instead (its initialisation, pretrained
    weights and `init_from`, as its config rebuilds them), with the config of `step`."""
    from frozen_det.tasks import get_task
    from frozen_det.training import sharding
    from frozen_det.training.state import build_state

    workdir = run_workdir(directory)
    checkpointer = Checkpointer(workdir)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"config.train.init_from={directory}: no checkpoint there; train that run first")
        config = run_config(checkpointer, step)
        task = get_task(config)
        model = task.build_model()
        state, _, _, _ = build_state(config, task, model, sharding.make_mesh(jax.devices()[:1]), train=False)
        if config.train.init_from:  # that run's own starting point, for what it did not train
            state, _ = init_from_run(state, config.train.init_from, config.train.init_exclude)
        if not initial:
            state = checkpointer.restore_model(state, step)
    finally:
        checkpointer.close()
    return jax.tree.map(np.asarray, jax.device_get(state.variables())), config, int(step)


def summarise(report: dict) -> str:
    def sample(key):
        items = report[key]
        return f"{len(items)}" + (f" (e.g. {', '.join(items[:3])})" if items else "")

    return (
        f"restored {sample('restored')}; excluded {sample('excluded')}; shape differs "
        f"{sample('shape_differs')}; freshly initialised, not in the source {sample('not_in_source')}; "
        f"unused leaves of the source {sample('unused_from_source')}"
    )


def init_from_run(state: TrainState, directory: str, exclude=()) -> tuple[TrainState, dict]:
    """`state` with another run's weights (module docstring); step and optimizer state stay."""
    theirs, their_config, step = load_run_variables(directory)
    ours = {"params": state.all_params(), "batch_stats": state.batch_stats}
    restored, report = overlay(ours, theirs, tuple(exclude))
    if not report["restored"]:
        raise ValueError(
            f"config.train.init_from={directory}: no leaf of that run ({their_config.model.type}) matches this "
            f"model by path and shape; {summarise(report)}"
        )
    report = dict(report, source=run_workdir(directory), source_step=step, source_model_type=their_config.model.type)
    log.info("initialised from %s step %d: %s", directory, step, summarise(report))
    params = flatten(restored["params"])
    return state.replace(
        params=map_paths(state.params, lambda p, _: params[p]),
        frozen_params=map_paths(state.frozen_params, lambda p, _: params[p]),
        batch_stats=restored["batch_stats"],
    ), report
