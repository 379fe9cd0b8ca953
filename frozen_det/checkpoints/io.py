"""Converted weights on disk: an orbax checkpoint of Flax variables plus a small JSON card.

Layout of a converted checkpoint directory::

    DIR/variables/   orbax StandardCheckpointer tree {'params': ..., 'batch_stats': ...}
    DIR/card.json    {"architecture": ..., "source": ..., "preprocessing": {...}, ...}

`model.backbone.init_checkpoint = DIR` in a config loads it into the backbone.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
import orbax.checkpoint as ocp

from frozen_det.checkpoints.mapping import assign_by_path
from frozen_det.tree_paths import flatten, matches_any

CARD = "card.json"
VARIABLES = "variables"


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """Writes `variables` and `card` under `directory` (created; must not already hold a checkpoint)."""
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, VARIABLES)
    if os.path.exists(target):
        raise FileExistsError(f"{target} exists; choose a new output directory or delete it first.")
    tree = {k: v for k, v in variables.items()}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(target, tree)
        checkpointer.wait_until_finished()
    with open(os.path.join(directory, CARD), "w") as f:
        json.dump(dict(card), f, indent=2, sort_keys=True)
    return directory


def read_card(directory: str | os.PathLike) -> dict[str, Any]:
    with open(os.path.join(os.fspath(directory), CARD)) as f:
        return json.load(f)


def load_variables(directory: str | os.PathLike) -> dict[str, Any]:
    """The saved variables as nested dicts of numpy arrays."""
    directory = os.path.abspath(os.fspath(directory))
    target = os.path.join(directory, VARIABLES)
    if not os.path.isdir(target):
        raise FileNotFoundError(
            f"no converted checkpoint at {directory} (expected {VARIABLES}/ and {CARD}); create one "
            "with `python tools/convert_checkpoint.py`."
        )
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(target)
    return _to_numpy(restored)


def load_into(
    target_variables: Mapping[str, Any], directory: str | os.PathLike, *, skip_saved: Sequence[str] = (), **kwargs
) -> dict[str, Any]:
    """Loads a converted checkpoint into the structure of `target_variables`, checking every
    name and shape (see `assign_by_path`). Saved entries matching a `skip_saved` regex are not
    loaded (e.g. an ImageNet head the model was built without)."""
    saved = {k: v for k, v in flatten(load_variables(directory)).items() if not matches_any(k, skip_saved)}
    return assign_by_path(target_variables, saved, source=os.fspath(directory), **kwargs)


def _to_numpy(tree):
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)
