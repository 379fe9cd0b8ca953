"""Resumable training checkpoints with orbax (`workdir/checkpoints`, docs/architecture.md).

A checkpoint holds the trainable state (step, trainable parameters, BatchNorm statistics,
optimizer state) and a JSON item with the input pipeline's position and a fingerprint of the
frozen parameters. Frozen parameters are not written again (the freeze switch, docs/architecture.md
point 4): a resumed run rebuilds them exactly as the first run did (same pretrained weights or
seed) and the fingerprint check refuses to continue if they came out different.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from frozen_det.training.state import TrainState


def fingerprint(tree: Any) -> list[float]:
    """[number of leaves, number of elements, sum, sum of squares] in float64, on the host."""
    leaves = [np.asarray(jax.device_get(x), np.float64) for x in jax.tree.leaves(tree)]
    return [
        float(len(leaves)),
        float(sum(x.size for x in leaves)),
        float(sum(x.sum() for x in leaves)),
        float(sum((x * x).sum() for x in leaves)),
    ]


def _saved_part(state: TrainState) -> dict:
    return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats, "opt_state": state.opt_state}


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with the items 'state' and 'meta'."""

    def __init__(self, workdir: str, *, max_to_keep: int = 3, save_interval_steps: int = 1000):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.save_interval_steps = max(1, int(save_interval_steps))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
            ),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def should_save(self, step: int) -> bool:
        return step % self.save_interval_steps == 0

    def save(self, state: TrainState, meta: dict) -> None:
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_saved_part(state)),
                meta=ocp.args.JsonSave(dict(meta, frozen_fingerprint=fingerprint(state.frozen_params))),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, state: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
        """Restores into the structure (and shardings) of `state`, whose frozen parameters must
        already be the run's. Returns (state, meta)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _saved_part(state))
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        meta = dict(restored["meta"])
        self._check_frozen(meta, state.frozen_params, step)
        part = restored["state"]
        return state.replace(
            step=part["step"], params=part["params"], batch_stats=part["batch_stats"], opt_state=part["opt_state"]
        ), meta

    def _check_frozen(self, meta: dict, frozen: Any, step: int) -> None:
        saved_print = meta.get("frozen_fingerprint")
        if saved_print is not None and not np.allclose(saved_print, fingerprint(frozen), rtol=1e-6, atol=1e-6):
            raise RuntimeError(
                f"the frozen parameters of this run differ from those the checkpoint at step {step} in "
                f"{self.directory} was trained with (different init_checkpoint, seed or train.init_from?); "
                "use the original config or start a new workdir."
            )

    def restore_model(self, state: TrainState, step: int | None = None) -> TrainState:
        """Restores only the step, trainable parameters and BN statistics (inference): the
        optimizer may differ from the one that trained it. The frozen parameters of `state` must
        be the run's (checked by fingerprint)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        # Restored without a target (the saved optimizer state may have any structure), then
        # checked against and laid out like this run's parameters.
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        )
        self._check_frozen(dict(restored["meta"]), state.frozen_params, step)
        restored = restored["state"]
        out = {}
        for key in ("params", "batch_stats"):
            ours = getattr(state, key)
            theirs = restored.get(key, {})
            if jax.tree.structure(ours) != jax.tree.structure(theirs) or any(
                a.shape != b.shape for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs))
            ):
                raise ValueError(
                    f"the {key} of the checkpoint at step {step} in {self.directory} do not "
                    "match this model (a different model config or freeze setting?)"
                )
            out[key] = jax.tree.map(
                lambda new, old: jax.device_put(np.asarray(new, old.dtype), old.sharding), theirs, ours
            )
        return state.replace(step=jax.device_put(np.asarray(restored["step"], np.int32), state.step.sharding), **out)

    def meta(self, step: int | None = None) -> dict:
        """The JSON item saved with the checkpoint at `step` (latest unless given): the input
        pipeline's position, the run's config, the frozen parameters' fingerprint."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class PreemptionFlag:
    """When to save and stop because the job is being preempted.

    One process: SIGTERM (and SIGINT when `catch_interrupt`) sets a flag; `should_stop(step)` is
    then True and the loop saves that step and stops.

    Several processes (a pod slice): the notice reaches some hosts, and a host acting on its own
    flag would enter the collective checkpoint save while the others keep stepping (a hang).
    JAX's preemption sync service (started by `jax.distributed.initialize()`) catches SIGTERM,
    spreads the notice and picks one step for all hosts: `should_stop(step)` is True on every
    host at that same step (`multihost_utils.reached_preemption_sync_point`). Call it once per
    step, from the first step on, on every host. `sync_point` replaces that function (tests).
    """

    def __init__(self, catch_interrupt: bool = False, sync_point=None):
        self._event = threading.Event()
        self._previous = {}
        if sync_point is None and jax.process_count() > 1:
            from jax.experimental import multihost_utils

            sync_point = multihost_utils.reached_preemption_sync_point
        self._sync_point = sync_point
        # With the sync service, its own handler must see SIGTERM: install none of ours.
        if sync_point is None and threading.current_thread() is threading.main_thread():
            signals = [signal.SIGTERM] + ([signal.SIGINT] if catch_interrupt else [])
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        del frame
        self._event.set()

    def should_stop(self, step: int) -> bool:
        if self._sync_point is not None:
            return bool(self._sync_point(step))
        return self._event.is_set()

    def restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
