"""Device mesh, batch and parameter shardings (docs/architecture.md, "Rules that keep it TPU-ready").

One `jax.jit` step serves any number of devices and hosts: the global batch is sharded on the
mesh's "data" axis; parameters are replicated unless a path rule shards them (e.g. FSDP for
large heads). BatchNorm statistics are computed on the global batch because the step is
written for the global array and XLA inserts the cross-device reductions.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from frozen_det.tree_paths import first_match, key_path_string

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Each process's numpy batch -> global arrays sharded on the data axis."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def state_shardings(
    tree: Any, mesh: Mesh, rules: Sequence[tuple[str, str]] = (), fsdp_min_size: int | None = None
) -> Any:
    """NamedShardings for any (possibly abstract) pytree: parameters, optimizer state, a whole
    train state. Leaves are named by their '/'-joined key path (e.g.
    'params/box_heads_0/fc0/kernel', 'opt_state/1/velocity/box_heads_0/fc0/kernel').

    `rules`: (regex, "fsdp" | "replicate") pairs (frozen_det.tree_paths); the first match wins.
    "fsdp" shards the largest dimension divisible by the mesh size on the data axis.
    `fsdp_min_size`: additionally FSDP-shard every leaf with at least this many elements.
    Everything else is replicated.
    """

    def spec_for(path, leaf) -> NamedSharding:
        name = key_path_string(path)
        shape = tuple(getattr(leaf, "shape", ()))
        mode = first_match(name, rules)
        if mode is None and fsdp_min_size is not None and int(np.prod(shape, dtype=np.int64)) >= fsdp_min_size:
            mode = "fsdp"
        if mode == "fsdp":
            for dim in np.argsort(shape)[::-1]:
                if shape[dim] % mesh.size == 0:
                    spec = [None] * len(shape)
                    spec[int(dim)] = DATA_AXIS
                    return NamedSharding(mesh, P(*spec))
        elif mode not in (None, "replicate"):
            raise ValueError(f"sharding rule mode {mode!r} for {name}: use 'fsdp' or 'replicate'.")
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(spec_for, tree)
