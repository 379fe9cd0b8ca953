"""Place converted arrays into a Flax variables tree, reporting every mismatch at once.

Converters translate a foreign checkpoint into a flat ``{"collection/path/to/leaf": array}``
dict ('params/stage1/block0/conv1/kernel', 'batch_stats/stem/bn/mean', ...). This module checks
that mapping against the variables our model actually has and builds the tree. A key that does
not map or a shape that does not match is an error listing *all* offending names, so a user
fixing a converter sees the whole picture in one run.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from frozen_det.tree_paths import flatten, matches_any, unflatten


class CheckpointMismatchError(ValueError):
    pass


def assign_by_path(
    target_variables: Mapping[str, Any],
    mapped: Mapping[str, np.ndarray],
    *,
    source: str,
    ignore_unmapped: Sequence[str] = (),
) -> dict[str, Any]:
    """Returns `target_variables` with every leaf replaced by `mapped[path]` (as float32 numpy
    for float leaves).

    `target_variables` may hold arrays or `jax.ShapeDtypeStruct`s (from `jax.eval_shape`).
    `ignore_unmapped` lists regexes of target paths allowed to keep their initial value (e.g.
    adapters, which no classification checkpoint has); they must then hold real arrays.
    """
    target = flatten(target_variables)
    missing = [k for k in target if k not in mapped and not matches_any(k, ignore_unmapped)]
    unused = [k for k in mapped if k not in target]
    wrong_shape = [
        f"{k}: checkpoint {tuple(np.shape(mapped[k]))} vs model {tuple(target[k].shape)}"
        for k in target
        if k in mapped and tuple(np.shape(mapped[k])) != tuple(target[k].shape)
    ]
    if missing or unused or wrong_shape:
        lines = [f"cannot load {source} into the model:"]
        if missing:
            lines.append(f"  {len(missing)} model variables have no value in the checkpoint: " + ", ".join(missing))
        if unused:
            lines.append(f"  {len(unused)} converted checkpoint entries match no model variable: " + ", ".join(unused))
        if wrong_shape:
            lines.append(f"  {len(wrong_shape)} shapes differ: " + "; ".join(wrong_shape))
        lines.append("  Check that the model config (depth/variant, num_classes) matches the checkpoint.")
        raise CheckpointMismatchError("\n".join(lines))
    out = {}
    for k, leaf in target.items():
        if k in mapped:
            value = np.asarray(mapped[k])
            out[k] = value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
        else:
            out[k] = leaf
    return unflatten(out)
