"""The engine's bookkeeping without TensorFlow (frozen_det.data.pipeline): the process layout,
the (epoch, offset) position saved with a checkpoint, and batch assembly.

The engine makes example k of epoch e on process p a function of (seed, e, p, k), for every kind
of example, so the pair (epoch, offset) is the whole position of a train iterator.
"""

from __future__ import annotations

import numpy as np


def process_layout(process_index, process_count) -> tuple[int, int]:
    """(index, count) of this process, JAX's where not given."""
    if process_index is None or process_count is None:
        import jax  # only for the process layout; the data package never touches devices

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    return process_index, process_count


def per_process_batch(global_batch: int, process_count: int, field: str) -> int:
    """The batch each process yields; ``field`` names the config field of ``global_batch``."""
    if global_batch % process_count:
        raise ValueError(f"{field}={global_batch} is not divisible by the {process_count} processes")
    return global_batch // process_count


class ResumablePosition:
    """``state()`` / ``restore(state)`` of a train iterator at (``_epoch``, ``_offset``).

    The iterator sets ``config.seed``, ``split``, ``process_index``, ``process_count``,
    ``batch_size``, ``stats`` and the position; a state restores only into an iterator with the
    same seed, split and process layout (anything else would silently read other examples)."""

    STATE_VERSION = 1

    def state(self) -> dict:
        """A small JSON-able dict; save it with the training checkpoint."""
        return {
            "version": self.STATE_VERSION,
            "epoch": self._epoch,
            "offset": self._offset,
            "seed": int(self.config.seed),
            "split": self.split,
            "process_index": self.process_index,
            "process_count": self.process_count,
            "batch_size": self.batch_size,
            "stats": dict(self.stats),
        }

    def restore(self, state: dict) -> None:
        """Continues from ``state`` (from ``state()`` of an iterator with the same config)."""
        for key, mine in (
            ("seed", int(self.config.seed)),
            ("split", self.split),
            ("process_count", self.process_count),
            ("process_index", self.process_index),
        ):
            if key in state and state[key] != mine:
                raise ValueError(
                    f"pipeline state was saved with {key}={state[key]!r}, this pipeline "
                    f"has {mine!r}: restore with the same data config and process layout"
                )
        if state.get("version") != self.STATE_VERSION:
            raise ValueError(f"pipeline state version {state.get('version')} != {self.STATE_VERSION}")
        self._epoch, self._offset = int(state["epoch"]), int(state["offset"])
        self.stats.update(state.get("stats", {}))
        self._restored()

    def _restored(self) -> None:
        """Hook: drop whatever was read ahead of the old position."""


def stack_examples(examples: list) -> dict:
    """Per-example dicts of numpy arrays -> one dict of batched arrays."""
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def padding_like(example: dict) -> dict:
    """An eval padding example shaped like ``example``: zeros, image_id -1, example_valid
    False (metrics skip it); image_info copied so that rescaling stays finite."""
    out = {k: np.zeros_like(v) for k, v in example.items()}
    out["image_id"] = np.int64(-1)
    out["example_valid"] = np.bool_(False)
    if "image_info" in example:
        out["image_info"] = example["image_info"].copy()
    return out
