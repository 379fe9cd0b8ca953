"""model.backbone.remat: each trained stage recomputed in the backward pass (nn.remat) is the
same function with the same parameters: equal loss, BN statistics and gradients (to float32
rounding: the recomputation fuses differently), for ResNet
and EfficientNet, fine-tuned and frozen with adapters. (Its memory saving is measured by
`python -m frozen_det.resources`, docs/performance.md.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frozen_det.models.backbones import build_backbone
from frozen_det.tree_paths import flatten


def _loss_and_grads(cfg):
    backbone = build_backbone(cfg)
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    variables = backbone.init(jax.random.key(0), images, train=False)

    def loss(params):
        features, updates = backbone.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, images, train=True, mutable=["batch_stats"]
        )
        return sum(jnp.mean(jnp.square(f)) for f in features.values()), updates["batch_stats"]

    (value, stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    return value, flatten(stats), flatten(grads)


@pytest.mark.parametrize(
    "cfg",
    [
        dict(type="resnet", depth=18, width=0.25),
        dict(type="resnet", depth=18, width=0.25, freeze="all", adapters="residual"),
        pytest.param(dict(type="efficientnet", variant="lite0", freeze=3, drop_path_rate=0.0), marks=pytest.mark.slow),
    ],
    ids=["resnet18", "resnet18-frozen-adapters", "lite0-freeze3"],
)
def test_remat_changes_neither_the_loss_nor_the_gradients(cfg):
    plain = _loss_and_grads(dict(cfg, num_classes=None))
    remat = _loss_and_grads(dict(cfg, num_classes=None, remat=True))
    np.testing.assert_allclose(remat[0], plain[0], rtol=1e-6)
    for stats_or_grads in (1, 2):
        assert set(remat[stats_or_grads]) == set(plain[stats_or_grads])
        scale = max(float(np.max(np.abs(v))) for v in plain[stats_or_grads].values())
        for path, value in plain[stats_or_grads].items():
            # Relative to the tensor's and the tree's scale: float32 sums in another order, and
            # gradients that are rounding noise around 0 (a BN bias feeding another BN).
            error = np.max(np.abs(np.asarray(remat[stats_or_grads][path]) - np.asarray(value)))
            assert error <= 1e-4 * np.max(np.abs(value)) + 1e-6 * scale, (path, error, np.max(np.abs(value)), scale)
    assert any(np.abs(g).max() > 0 for g in plain[2].values())
