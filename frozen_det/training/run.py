"""A training run as an object: `Run(workdir)` is what a run's directory holds and rebuilds.

    run = Run("runs/bccd_frozen")          # the config saved with its latest checkpoint
    run = Run(workdir, config)             # or the given one (an experiment file, overrides)
    run.steps, run.latest_step             # the checkpoints it kept
    run.check_step(step)                   # a step it kept (None: the latest), else an error listing them
    run.config, run.task, run.model        # resolved config, its task, the flax module
    run.variables(step=None)               # {"params", "batch_stats"} at a step (latest)
    run.initial_variables()                # what the run started from (init, pretrained, init_from)

Every consumer of a trained run opens it here: `evaluate`, `predict`, transfer between runs
(`train.init_from`), weight drift, feature analyses, pseudo-boxes from a classification run, the
studies. Variables are rebuilt the way training built them: the model is initialised from the
config's seed, the backbone's pretrained weights are loaded, `train.init_from` supplies the part
of another run this run did not train, and the checkpoint (which holds only the trainable part,
docs/architecture.md "The freeze switch") is restored on top, its frozen part checked by
fingerprint. Reading "the latest step" reads the newest step that is readable: a damaged
checkpoint is reported in one line and passed over (frozen_det.training.checkpointing).
"""

from __future__ import annotations

import json
import logging

import jax
import ml_collections
import numpy as np

from frozen_det import config as config_lib
from frozen_det.evaluation.drift import weight_drift
from frozen_det.runtime import check_run_dir, hide_accelerators_from_tensorflow
from frozen_det.schema import dropping_unknown_fields
from frozen_det.strategies import OUTSIDE_THE_BACKBONE
from frozen_det.tasks import get_task
from frozen_det.training import sharding
from frozen_det.training.checkpointing import Checkpointer
from frozen_det.training.state import TrainState, build_state
from frozen_det.training.transfer import overlay_run_variables

log = logging.getLogger(__name__)


class Run:
    """A run's workdir (module docstring). `config`: the config to rebuild the run with (complete
    or partial; resolved here); None reads the one saved with the latest checkpoint. `mesh`: where
    the variables are laid out (default: every device)."""

    def __init__(self, workdir: str, config=None, mesh=None):
        self.workdir = check_run_dir(workdir)
        self._checkpointer = Checkpointer(self.workdir)
        self._given_config = config
        self._mesh = mesh
        self._config = self._task = self._model = self._initial_state = None

    # ------------------------------------------------------------------ what the directory holds

    @property
    def steps(self) -> list[int]:
        return sorted(self._checkpointer.all_steps())

    @property
    def latest_step(self) -> int | None:
        return self._checkpointer.latest_step()

    def check_step(self, step: int | None) -> int | None:
        """`step` if the run kept it (None, "the latest", if it kept any); otherwise an error
        that lists the steps it kept. Cheap: call it before building anything."""
        steps = self.steps
        if not steps:
            raise FileNotFoundError(f"{self.workdir}: no checkpoint yet; train (or resume) the run first")
        if step is not None and int(step) not in steps:
            raise ValueError(f"--step {step}: {self.workdir} has no checkpoint at step {step}; it kept steps {steps}")
        return None if step is None else int(step)

    def meta(self, step: int | None = None) -> dict:
        """The JSON saved with the checkpoint at `step` (latest): input position, config, fingerprint."""
        return self._checkpointer.meta(self.check_step(step))

    def saved_config(self, step: int | None = None) -> ml_collections.ConfigDict:
        """The complete config the run saved with its checkpoint at `step` (latest); fields that
        the schemas have since dropped are ignored and logged."""
        saved = self.meta(step).get("config")
        if not saved:
            raise ValueError(f"the checkpoints in {self._checkpointer.directory} have no saved config; give --config")
        with dropping_unknown_fields() as dropped:
            config = config_lib.complete(ml_collections.ConfigDict(json.loads(saved)))
        if dropped:
            log.info("%s: fields of an earlier version of the config schemas ignored: %s", self.workdir, dropped)
        return config

    # ------------------------------------------------------------------ what it rebuilds

    @property
    def config(self) -> ml_collections.ConfigDict:
        if self._config is None:
            given = self._given_config if self._given_config is not None else self.saved_config()
            self._config = config_lib.resolve(given)
        return self._config

    @property
    def task(self):
        if self._task is None:
            self._task = get_task(self.config)
        return self._task

    @property
    def model(self):
        if self._model is None:
            self._model = self.task.build_model()
        return self._model

    def _initial(self) -> TrainState:
        if self._initial_state is None:
            self._initial_state = starting_state(self.config, self.task, self.model, self._mesh)
        return self._initial_state

    def initial_variables(self) -> dict:
        """{"params", "batch_stats"} the run started from: its initialisation, the backbone's
        pretrained weights and `train.init_from`, as its config rebuilds them."""
        return self._initial().variables()

    def restored_state(self, step: int | None = None) -> TrainState:
        """The inference state at `step` (latest): the checkpoint's trainable part restored onto
        the initial state (whose frozen part is checked against the checkpoint's fingerprint)."""
        return self._checkpointer.restore_model(self._initial(), self.check_step(step))

    def variables(self, step: int | None = None) -> dict:
        """{"params", "batch_stats"} at `step` (latest)."""
        return self.restored_state(step).variables()

    def drift(self) -> dict:
        """{step: weight_drift(initial variables, variables at step)} over every checkpoint the
        run kept (frozen_det.evaluation.drift; keep more with `train.keep_checkpoints`)."""
        self.check_step(None)
        initial = jax.device_get(self.initial_variables())
        return {step: weight_drift(initial, jax.device_get(self.variables(step))) for step in self.steps}

    def close(self) -> None:
        self._checkpointer.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def starting_state(config, task, model, mesh=None) -> TrainState:
    """The state a run of `config` starts from, in the inference layout (no optimizer is needed
    to restore or to run it): initialisation, the backbone's pretrained weights, `train.init_from`."""
    hide_accelerators_from_tensorflow()
    state, _, _, _ = build_state(config, task, model, mesh if mesh is not None else sharding.make_mesh(), train=False)
    state, _ = other_runs_weights(state, config)
    return state


def other_runs_weights(state: TrainState, config) -> tuple[TrainState, dict]:
    """`state` with the weights of other runs: `train.init_from` (less `train.init_exclude`),
    then the backbone of `train.backbone_from`. -> (state, {"init_from" / "backbone_from":
    its report}) for the transfers the config asks for."""
    reports = {}
    if config.train.init_from:
        state, reports["init_from"] = init_from(state, config.train.init_from, config.train.init_exclude)
    if config.train.get("backbone_from"):
        state, reports["backbone_from"] = init_from(state, config.train.backbone_from, OUTSIDE_THE_BACKBONE)
    return state, reports


def pretrained_model(config, mesh=None) -> tuple:
    """(resolved config, task, model, variables) of a config without a run: the variables it
    starts from (e.g. a classifier's packaged ImageNet head, a detector's pretrained backbone)."""
    config = config_lib.resolve(config)
    task = get_task(config)
    model = task.build_model()
    return config, task, model, starting_state(config, task, model, mesh).variables()


def init_from(state: TrainState, directory: str, exclude=()) -> tuple[TrainState, dict]:
    """`state` with another run's weights (`train.init_from`, frozen_det.training.transfer); its
    step and optimizer state stay. Returns (state, report)."""
    with Run(directory, mesh=sharding.make_mesh(jax.devices()[:1])) as source:
        restored = source.restored_state()  # the newest readable step
        theirs = jax.tree.map(np.asarray, jax.device_get(restored.variables()))
        description = dict(
            source=source.workdir, source_step=int(restored.step), source_model_type=source.config.model.type
        )
    return overlay_run_variables(state, theirs, exclude, description)
