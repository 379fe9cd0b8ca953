"""Weight drift (frozen_det.evaluation.drift) of a run's checkpoints: 0 for frozen stages, and the
relative L2 distance of the trained ones equal to a direct numpy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frozen_det import config as config_lib
from frozen_det import config_defaults as d
from frozen_det.training.run import Run
from frozen_det.tree_paths import flatten, map_paths


@pytest.mark.slow
def test_drift_of_a_partly_frozen_run(tmp_path):
    from frozen_det.tasks import get_task
    from frozen_det.training import sharding
    from frozen_det.training.checkpointing import Checkpointer
    from frozen_det.training.state import build_state

    config = config_lib.complete(
        d.ConfigDict(
            dict(
                model=dict(
                    type="classifier", num_classes=5, backbone=dict(type="resnet", depth=18, width=0.25, freeze="2")
                ),
                train=d.train(batch_size=2),
                data=dict(source="fashion_mnist", image_size=32),
            )
        )
    )
    task = get_task(config)
    state, _, _, _ = build_state(config, task, task.build_model(), sharding.make_mesh(jax.devices()[:1]))
    initial = jax.device_get(state.variables())
    checkpointer = Checkpointer(str(tmp_path))
    saved = {}
    rng = np.random.default_rng(0)
    for step, scale in ((10, 0.01), (20, 0.05)):
        params = jax.tree.map(lambda x: x + scale * jnp.asarray(rng.normal(size=x.shape), x.dtype), state.params)
        # a real run updates the statistics of the stages it trains only (frozen ones run BN in inference)
        stats = map_paths(
            state.batch_stats,
            lambda p, x: x * (1 + scale) if p.startswith(("backbone/stage3", "backbone/stage4")) else x,
        )
        moved = state.replace(step=jnp.asarray(step, jnp.int32), params=params, batch_stats=stats)
        checkpointer.save(moved, {"data": {}, "config": config.to_json()})
        saved[step] = jax.device_get(moved.variables())
    checkpointer.close()

    with Run(str(tmp_path)) as run:
        drift = run.drift()
    assert sorted(drift) == [10, 20]
    for step in (10, 20):
        for group in ("stem", "stage1", "stage2"):  # frozen: neither parameters nor statistics move
            assert drift[step][group] == {"params": 0.0, "batch_stats": 0.0}
        a, b = flatten(initial["params"]), flatten(saved[step]["params"])
        paths = [p for p in a if p.startswith("backbone/stage3/")]
        expected = np.sqrt(sum(np.sum((b[p] - a[p]) ** 2) for p in paths)) / np.sqrt(
            sum(np.sum(a[p] ** 2) for p in paths)
        )
        assert drift[step]["stage3"]["params"] == pytest.approx(float(expected), rel=1e-6)
        assert drift[step]["stage4"]["batch_stats"] > 0
    assert drift[20]["stage4"]["params"] > drift[10]["stage4"]["params"]
