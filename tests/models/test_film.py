"""FiLM adapters (`model.backbone.adapters="film"`): identity at init, the only trainable part of
a frozen backbone, reached by gradients; and the adapters switch's config values, booleans of
earlier configs included.

A ResNet-18 at width 0.25 with a linear head on pooled C5 stands in for a detector (as in
test_freeze.py, narrower); variables are random arrays shaped by `jax.eval_shape`, so no
`model.init` is compiled.
"""

import json
import os
import runpy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from frozen_det import config as config_lib
from frozen_det.models.adapters import IDENTITY_INIT
from frozen_det.models.backbones import backbone_frozen_patterns, build_backbone
from frozen_det.models.backbones.efficientnet import EfficientNet, block_specs
from frozen_det.models.backbones.resnet import ResNet
from frozen_det.models.config import complete_backbone
from frozen_det.schema import ConfigDict, dropping_unknown_fields
from frozen_det.training import partition
from frozen_det.training.state import create_train_state
from frozen_det.training.step import make_train_step
from frozen_det.tree_paths import flatten, unflatten

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SIZE, BATCH, CLASSES, WIDTH = 64, 2, 5, 0.25
FILM = ("scale", "shift")


class Classifier(nn.Module):
    freeze: str = "all"
    adapters: str = "none"

    @nn.compact
    def __call__(self, images, train: bool):
        backbone = ResNet(
            18, width=WIDTH, freeze=self.freeze, adapters=self.adapters, num_classes=None, name="backbone"
        )
        features = backbone(images, train=train)
        return nn.Dense(CLASSES, name="head")(jnp.mean(features[5], axis=(1, 2)))


def _batch():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(BATCH, SIZE, SIZE, 3)).astype(np.float32), rng.integers(0, CLASSES, size=(BATCH,)))


def _variables(model, *args, **kwargs):
    """Random He-scaled kernels, BN near identity with non-trivial statistics; adapters at
    their identity initialisation (`IDENTITY_INIT`, what `model.init` gives them)."""
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    out = {}
    for path, leaf in flatten(shapes).items():
        name = path.rsplit("/", 1)[1]
        if "/adapter/" in path:
            value = np.full(leaf.shape, IDENTITY_INIT[name])
        elif name == "kernel":
            value = rng.normal(0, np.sqrt(1.0 / np.prod(leaf.shape[:-1])), leaf.shape)
        elif name == "scale":
            value = rng.uniform(0.5, 1.0, leaf.shape)
        elif name == "var":
            value = rng.uniform(0.5, 2.0, leaf.shape)
        else:  # bias, mean
            value = rng.normal(0, 0.1, leaf.shape)
        out[path] = np.asarray(value, leaf.dtype)
    return unflatten(out)


def _without_adapters(variables):
    return unflatten({k: v for k, v in flatten(variables).items() if "/adapter/" not in k})


@pytest.mark.parametrize(
    "plain, filmed, blocks",
    [
        (ResNet(18, width=WIDTH, freeze="all"), ResNet(18, width=WIDTH, freeze="all", adapters="film"), 8),
        (EfficientNet("lite0", freeze="all"), EfficientNet("lite0", freeze="all", adapters="film"), 16),
    ],
    ids=["resnet18_w0.25", "efficientnet_lite0"],
)
def test_film_starts_as_identity(plain, filmed, blocks):
    images, _ = _batch()
    variables = _variables(filmed, images)
    # One FiLM (a scale and a shift per output channel) after every residual / MBConv block.
    film = {k: v for k, v in flatten(variables["params"]).items() if "/adapter/" in k}
    assert len(film) == 2 * blocks and {k.rsplit("/", 1)[1] for k in film} == set(FILM)
    if isinstance(filmed, EfficientNet):
        assert blocks == len(block_specs("lite0"))
        assert film["stage3/block4a/adapter/scale"].shape == (80,)
    else:
        assert film["stage4/block1/adapter/shift"].shape == (128,)
    # Pyramid levels 2..5 and ImageNet logits equal the plain frozen backbone's.
    out_film = jax.jit(lambda v: filmed.apply(v, images, return_logits=True))(variables)
    out_plain = jax.jit(lambda v: plain.apply(v, images, return_logits=True))(_without_adapters(variables))
    diffs = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(out_film), jax.tree.leaves(out_plain))]
    assert len(diffs) == 5 and max(diffs) <= 1e-6


def _loss_fn(model):
    def loss_fn(params, batch_stats, batch, rng):
        images, labels = batch
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), ({}, updates["batch_stats"])

    return loss_fn


def test_only_film_and_head_train_in_a_frozen_backbone():
    model = Classifier(freeze="all", adapters="film")
    images, _ = _batch()
    variables = _variables(model, images, train=False)
    mask = partition.trainable_mask(
        variables["params"], frozen=backbone_frozen_patterns({"freeze": "all", "adapters": "film"}, prefix="backbone/")
    )
    trainable = {k for k, v in flatten(mask).items() if v}
    film = {k for k in flatten(variables["params"]) if "/adapter/" in k}
    assert trainable == film | {"head/kernel", "head/bias"} and len(film) == 2 * 8

    optimizer = optax.sgd(0.1, momentum=0.9)
    state = create_train_state(variables, mask, optimizer)
    new_state, metrics = jax.jit(make_train_step(_loss_fn(model), optimizer))(state, _batch(), jax.random.key(1))
    assert np.isfinite(float(metrics["loss"]))
    before, after = flatten(variables["params"]), flatten(new_state.all_params())
    changed = {k for k in before if not np.array_equal(np.asarray(before[k]), np.asarray(after[k]))}
    # Gradients reach every FiLM layer, the first block's (right above the stem, which the
    # stop_gradient cuts) included; nothing else in the backbone moves, BN statistics neither.
    assert changed == trainable
    stats_before, stats_after = flatten(variables["batch_stats"]), flatten(new_state.batch_stats)
    assert all(np.array_equal(np.asarray(stats_before[k]), np.asarray(stats_after[k])) for k in stats_before)
    # SGD momentum exists for the trainable leaves only.
    assert {k for k in flatten(new_state.opt_state[0].trace)} == trainable


def _tiny_config(arg):
    return runpy.run_path(os.path.join(ROOT, "configs", "tiny", "two_stage.py"))["get_config"](arg)


def test_adapters_field_values():
    for given, kind in ((False, "none"), (True, "residual"), ("True", "residual"), ("film", "film"), ("none", "none")):
        assert complete_backbone({"adapters": given}).adapters == kind
    with pytest.raises(ValueError, match=r"^config\.model\.backbone\.adapters='films': choose one of .*'film'") as info:
        complete_backbone({"adapters": "films"})
    assert "\n" not in str(info.value)
    # The film strategy: a frozen backbone with FiLM; the field is a string, so a command line
    # (--config.model.backbone.adapters=residual) can override it.
    config = _tiny_config("film")
    assert (config.model.backbone.freeze, config.model.backbone.adapters) == ("all", "film")
    config.model.backbone.adapters = "residual"


def test_saved_configs_with_boolean_adapters_still_load():
    """A config saved with a checkpoint before the switch took names (adapters: true / false)
    completes, as `frozen_det.training.run.Run.saved_config` does, into the same backbone."""
    for old, kind in ((True, "residual"), (False, "none")):
        saved = _tiny_config("adapters").to_dict()
        saved["model"]["backbone"]["adapters"] = old
        with dropping_unknown_fields():
            restored = config_lib.complete(ConfigDict(json.loads(json.dumps(saved))))
        assert restored.model.backbone.adapters == kind
        assert build_backbone(restored.model.backbone).adapters == kind
