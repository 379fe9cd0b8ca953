"""One pass of a jitted function over an eval pipeline, gathered to the host: what every
evaluation loop shares (detections, logits, features, pretext diagnostics).

Each process runs the same number of batches (eval pipelines pad the last one with examples
whose `example_valid` is False); the function's outputs (global arrays) and the batch's host
values named by `carry` are gathered to every process as numpy, and the padding rows dropped.
A pass that takes more than a few seconds shows a progress bar with an ETA (process 0).
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from frozen_det.runtime import progress


def to_host(tree):
    """numpy of a (global or per-process) tree, whole on every process."""
    if jax.process_count() > 1:
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(np.asarray, jax.device_get(tree))


def gathered_outputs(
    fn: Callable,
    variables,
    pipeline,
    input_keys: Sequence[str],
    to_device: Callable | None = None,
    carry: Sequence[str] = (),
) -> Iterator[dict]:
    """Per batch of `pipeline`: `fn(variables, inputs)` (a dict; `inputs` the batch's
    `input_keys`, placed by `to_device`) merged with the batch's `carry` keys, on the host, only
    the rows of real examples (`example_valid`)."""
    batches = progress(
        pipeline,
        f"evaluating {getattr(pipeline, 'split', '')}".strip(),
        total=getattr(pipeline, "num_batches", None),
        unit="batch",
        disable=jax.process_index() > 0,
    )
    for batch in batches:
        inputs = {k: batch[k] for k in input_keys}
        out = to_host(dict(fn(variables, to_device(inputs) if to_device else inputs)))
        host = {k: batch[k] for k in (*carry, "example_valid") if k in batch and k not in out}
        out.update(to_host(host))
        valid = out.pop("example_valid", None)
        if valid is not None:
            valid = valid.astype(bool)
            out = {k: v[valid] for k, v in out.items()}
        yield out
