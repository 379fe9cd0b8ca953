"""Resumable training checkpoints with orbax (`workdir/checkpoints`, docs/architecture.md).

A checkpoint holds the trainable state (step, trainable parameters, BatchNorm statistics,
optimizer state) and a JSON item with the input pipeline's position and a fingerprint of the
frozen parameters. Frozen parameters are not written again (the freeze switch, docs/architecture.md
point 4): a resumed run rebuilds them exactly as the first run did (same pretrained weights or
seed) and the fingerprint check refuses to continue if they came out different.

Faults. orbax writes a step into a temporary folder and renames it when complete, so a process
killed while saving leaves no partial step behind. A step damaged afterwards (a truncated or
deleted file, a disk error) is *unreadable*: reading it reports that in one line
(`UnreadableCheckpoint`, naming the step and the reason) and reading "the latest step" falls
back to the newest step that reads, which is why a run keeps at least two
(`train.keep_checkpoints`). Training that resumes past unreadable steps moves them to
`WORKDIR/checkpoints_unreadable/` (kept for a post-mortem, out of orbax's way), so that it can
save those steps again.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from frozen_det.training.state import TrainState

log = logging.getLogger(__name__)


class UnreadableCheckpoint(ValueError):
    """A checkpoint step that exists but cannot be read (damaged files); the message names it."""


# What orbax and tensorstore raise on damaged files: tensorstore's errors are ValueErrors, a
# damaged JSON item a JSONDecodeError (a ValueError), a missing file an OSError or KeyError.
_READ_ERRORS = (ValueError, OSError, KeyError, TypeError)


def _reason(error: Exception) -> str:
    """One line of a read error: tensorstore's messages end with a JSON dump of the whole spec."""
    text = " ".join(str(error).split())
    text = text.split(" [tensorstore_spec=")[0]
    return f"{type(error).__name__}: {text[:300]}"


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

    def __init__(self, workdir: str, *, max_to_keep: int = 3, save_interval_steps: int = 1000, writer: bool = False):
        """`writer`: the run's train loop, which creates the folder and clears the temporary
        folders of saves a kill interrupted (a reader must not: the run may be saving now)."""
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.save_interval_steps = max(1, int(save_interval_steps))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=writer,
                cleanup_tmp_directories=writer,
                enable_async_checkpointing=False,
            ),
            item_names=("state", "meta"),
        )
        # orbax clears those temporary folders on a thread of its own; finish it here, before the
        # run touches the folder or anything patches the file functions it calls (TFDS's mock
        # data redirects epath while `as_dataset` runs: the clearing then listed the wrong folder).
        cleanup = getattr(self.manager, "_cleanup_tmp_directory_future", None)
        if cleanup is not None:
            cleanup.result()

    def latest_step(self) -> int | None:
        """The newest step on disk (readable or not: `restore` and `restore_model` fall back)."""
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

    def _read(self, step: int, **items) -> dict:
        """orbax's restore of `items` at `step`. A step whose files do not read raises
        UnreadableCheckpoint; one that reads but does not fit the target (another model config)
        raises orbax's error: falling back past it would hide the user's mistake."""
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**items))
        except _READ_ERRORS as e:
            if self._readable(step):
                raise
            raise UnreadableCheckpoint(
                f"checkpoint step {step} in {self.directory} is unreadable ({_reason(e)})"
            ) from e

    def _readable(self, step: int) -> bool:
        """Whether every file of `step` reads (restored as saved, without a target)."""
        try:
            self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
            )
        except _READ_ERRORS:
            return False
        return True

    def _newest_readable(self, read: Callable[[int], Any], step: int | None) -> tuple[int, Any, list[int]]:
        """(step, read(step), the newer unreadable steps passed over): `step` if given, else the
        newest step that reads, each unreadable one reported in one warning line."""
        if step is not None:
            try:
                return step, read(step), []
            except UnreadableCheckpoint as e:
                others = [s for s in sorted(self.all_steps()) if s != step]
                raise UnreadableCheckpoint(f"{e}; the other steps kept: {others}") from e
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        passed = []
        for candidate in steps:
            try:
                return candidate, read(candidate), passed
            except UnreadableCheckpoint as e:
                older = [s for s in steps if s < candidate]
                log.warning("%s; %s", e, f"falling back to step {older[0]}" if older else "no older step")
                passed.append(candidate)
        raise UnreadableCheckpoint(
            f"no readable checkpoint in {self.directory} (steps {sorted(steps)}, all damaged); start a new workdir"
        )

    def set_aside(self, steps: list[int]) -> None:
        """Moves unreadable `steps` to WORKDIR/checkpoints_unreadable/ (module docstring)."""
        if not steps:
            return
        if jax.process_index() == 0:
            target = self.directory + "_unreadable"
            os.makedirs(target, exist_ok=True)
            for step in steps:
                destination = os.path.join(target, str(step))
                if os.path.exists(destination):
                    shutil.rmtree(destination)
                shutil.move(os.path.join(self.directory, str(step)), destination)
            log.warning("moved unreadable checkpoint steps %s to %s", steps, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("frozen_det: unreadable checkpoints set aside")
        self.manager.reload()

    def restore(self, state: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
        """Restores into the structure (and shardings) of `state`, whose frozen parameters must
        already be the run's. Returns (state, meta). Without `step`: the newest readable step,
        the unreadable newer ones set aside (training resumes and saves them again)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _saved_part(state))
        step, restored, unreadable = self._newest_readable(
            lambda s: self._read(s, state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()), step
        )
        self.set_aside(unreadable)
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
        be the run's (checked by fingerprint). Without `step`: the newest readable step (the
        run's folder is left as it is: another process may be training it)."""
        # Restored without a target (the saved optimizer state may have any structure), then
        # checked against and laid out like this run's parameters.
        step, restored, _ = self._newest_readable(
            lambda s: self._read(s, state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()), step
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
        pipeline's position, the run's config, the frozen parameters' fingerprint; without
        `step`, that of the newest step whose JSON reads."""
        _, restored, _ = self._newest_readable(lambda s: self._read(s, meta=ocp.args.JsonRestore()), step)
        return dict(restored["meta"])

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class PreemptionFlag:
    """When to save and stop because the job is being preempted or interrupted.

    One process: SIGTERM (and SIGINT, Ctrl-C, when `catch_interrupt`) sets a flag;
    `should_stop(step)` is then True and the loop saves that step and stops. The first Ctrl-C
    says so on stderr and gives SIGINT back to its previous handler, so a second one aborts at
    once (without saving). `interrupted` tells a Ctrl-C from a preemption notice.

    Several processes (a pod slice): the notice reaches some hosts, and a host acting on its own
    flag would enter the collective checkpoint save while the others keep stepping (a hang).
    JAX's preemption sync service (started by `jax.distributed.initialize()`) catches SIGTERM,
    spreads the notice and picks one step for all hosts: `should_stop(step)` is True on every
    host at that same step (`multihost_utils.reached_preemption_sync_point`). Call it once per
    step, from the first step on, on every host. `sync_point` replaces that function (tests).
    """

    def __init__(self, catch_interrupt: bool = False, sync_point=None):
        self._event = threading.Event()
        self.interrupted = False
        self._previous = {}
        if sync_point is None and jax.process_count() > 1:
            from jax.experimental import multihost_utils

            sync_point = multihost_utils.reached_preemption_sync_point
        self._sync_point = sync_point
        # With the sync service, its own handler must see SIGTERM: install none of ours.
        if sync_point is None and threading.current_thread() is threading.main_thread():
            signals = [signal.SIGTERM] + ([signal.SIGINT] if catch_interrupt else [])
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle) or signal.SIG_DFL  # None: set in C

    def _handle(self, signum, frame):
        del frame
        self._event.set()
        if signum == signal.SIGINT:
            self.interrupted = True
            signal.signal(signal.SIGINT, self._previous[signal.SIGINT])
            print(
                "\ninterrupted: saving a checkpoint after this step, then stopping (Ctrl-C again: stop without saving)",
                file=sys.stderr,
                flush=True,
            )

    def should_stop(self, step: int) -> bool:
        if self._sync_point is not None:
            return bool(self._sync_point(step))
        return self._event.is_set()

    def restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
