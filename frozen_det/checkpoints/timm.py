"""timm (huggingface/pytorch-image-models) ResNet and EfficientNet state dicts -> our variables.

Which timm models are our architectures (a model name may carry timm's pretrained tag,
``resnet50.a1_in1k``; the tag changes the weights, not the graph):

* ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``, ``resnet200``
  (timm/models/resnet.py with its default arguments: 7x7 stem + max-pool, stride on the 3x3
  convolution, 1x1 conv + BN projection shortcut, BN epsilon 1e-5) are our
  ``ResNet(depth, variant="v1.5")``. Their state dicts keep torchvision's names, so they convert
  as torchvision's (`torchvision_resnet`). Not ours: the deep-stem / average-down variants
  (``resnet50d`` ...), ``seresnet*``, and ``resnetrs*``, whose symmetric padding and ReLU differ
  from our ResNet-RS's TF 'SAME' padding and swish.
* ``tf_efficientnet_b0`` .. ``b7`` and ``tf_efficientnet_lite0`` .. ``lite4``
  (timm/models/efficientnet.py with ``bn_eps=1e-3, pad_type='same'``: ``Conv2dSame`` pads
  like TF's 'SAME') are our ``EfficientNet("b0")`` .. ``("lite4")``, which follow TF's builders.
  timm's PyTorch-native ``efficientnet_b*`` / ``efficientnet_lite*`` are not: they pad
  symmetrically (k // 2 on each side), which shifts every stride-2 convolution's sampling grid
  by one pixel against 'SAME', and use BN epsilon 1e-5; `architecture` rejects them by name.

EfficientNet layer names (timm/models/_efficientnet_blocks.py): ``blocks.{group}.{repeat}``
is our ``block{group + 1}{letter}``; a block without expansion (``DepthwiseSeparableConv``,
group 0) has ``conv_dw, bn1, se, conv_pw, bn2``, an ``InvertedResidual`` ``conv_pw, bn1,
conv_dw, bn2, se, conv_pwl, bn3``; the stem is ``conv_stem, bn1``, the head ``conv_head, bn2,
classifier``.

Input normalisation: each pretrained tag's own, from timm's pretrained config
(`preprocessing`): ImageNet mean / std for most, 0.5 / 0.5 (on [0, 1] pixels) for the Lite
and AdvProp (``.ap_in1k``) weights.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from frozen_det.checkpoints.efficientnet_lite import conversion_target
from frozen_det.checkpoints.mapping import assign_by_path
from frozen_det.checkpoints.torch_pickle import load_torch_state_dict
from frozen_det.checkpoints.torchvision_resnet import convert_torchvision_resnet
from frozen_det.models.backbones import efficientnet
from frozen_det.models.backbones.resnet import V15_LAYOUTS, ResNet
from frozen_det.models.freezing import HEAD_PATTERNS
from frozen_det.tree_paths import matches_any

_TOP_LAYERS = {
    "conv_stem": "stem/conv",
    "bn1": "stem/bn",
    "conv_head": "head_conv",
    "bn2": "head_bn",
    "classifier": "classifier",
}
_SE_LAYERS = {"se.conv_reduce": "se_reduce", "se.conv_expand": "se_expand"}
_SEPARABLE_LAYERS = {
    "conv_dw": "depthwise_conv",
    "bn1": "depthwise_bn",
    "conv_pw": "project_conv",
    "bn2": "project_bn",
    **_SE_LAYERS,
}
_INVERTED_RESIDUAL_LAYERS = {
    "conv_pw": "expand_conv",
    "bn1": "expand_bn",
    "conv_dw": "depthwise_conv",
    "bn2": "depthwise_bn",
    "conv_pwl": "project_conv",
    "bn3": "project_bn",
    **_SE_LAYERS,
}
_BN_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
SUPPORTED = (
    "resnet18, resnet34, resnet50, resnet101, resnet152, resnet200, tf_efficientnet_b0..b7, "
    "tf_efficientnet_lite0..lite4"
)


def architecture(model_name: str) -> dict[str, Any]:
    """Our backbone for a timm model name: ``{"type": "resnet", "depth": 50}`` or
    ``{"type": "efficientnet", "variant": "b0"}``. Raises ValueError for any other model."""
    base = model_name.strip().lower().split(".")[0]  # without the pretrained tag
    m = re.fullmatch(r"resnet(\d+)", base)
    if m and int(m.group(1)) in V15_LAYOUTS:
        return {"type": "resnet", "depth": int(m.group(1))}
    m = re.fullmatch(r"(tf_)?efficientnet_(b[0-7]|lite[0-4])", base)
    if m and m.group(1):
        return {"type": "efficientnet", "variant": m.group(2)}
    if m:
        raise ValueError(
            f"timm's {model_name} pads its convolutions symmetrically (PyTorch style) with BN epsilon 1e-5; our "
            f"EfficientNet is TF's ('SAME' padding, epsilon 1e-3): convert timm's tf_{base} instead."
        )
    raise ValueError(f"timm model {model_name!r} is not one of our backbones; convertible: {SUPPORTED}.")


def backbone(model_name: str, *, num_classes: int | None = 1000, adapters: str | bool = "none"):
    """Our (unbound) backbone module for `model_name`."""
    arch = architecture(model_name)
    if arch["type"] == "resnet":
        return ResNet(arch["depth"], "v1.5", num_classes=num_classes, adapters=adapters)
    return efficientnet.EfficientNet(arch["variant"], num_classes=num_classes, adapters=adapters)


def convert_state_dict(state_dict: Mapping[str, np.ndarray], model_name: str) -> dict[str, np.ndarray]:
    """timm names -> our flat '/'-joined variable paths (`mapping.assign_by_path`'s input).

    Names with no place in our model are reported by `assign_by_path`, together with missing
    variables and shape mismatches: an EfficientNet's under their timm name, a ResNet's inside
    a block under the path they would have (``layer1.0.se.fc1.weight`` ->
    ``params/stage1/block0/se.fc1/kernel``); a ResNet name outside the stem, the stages and
    ``fc`` is a KeyError listing every such name (torchvision's converter).
    """
    arch = architecture(model_name)
    state_dict = {k: np.asarray(v) for k, v in state_dict.items()}
    if arch["type"] == "resnet":
        try:
            return convert_torchvision_resnet(state_dict)
        except KeyError as e:
            raise KeyError(f"timm {model_name} (torchvision's layout): {e.args[0]}") from None
    return _convert_efficientnet(state_dict, arch["variant"])


def _convert_efficientnet(state_dict: Mapping[str, np.ndarray], variant: str) -> dict[str, np.ndarray]:
    specs = {spec.name: spec for spec in efficientnet.block_specs(variant)}
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        layer, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        ours = None
        m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.+)", layer)
        if m:
            spec = specs.get(f"block{int(m.group(1)) + 1}{chr(ord('a') + int(m.group(2)))}")
            if spec is not None:
                table = _SEPARABLE_LAYERS if spec.expand_ratio == 1 else _INVERTED_RESIDUAL_LAYERS
                if m.group(3) in table:
                    ours = f"stage{spec.stage}/{spec.name}/{table[m.group(3)]}"
        else:
            ours = _TOP_LAYERS.get(layer)
        path = _leaf_path(ours, leaf, value) if ours else None
        if path is None:
            out[key] = value
        else:
            out[path] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
    return out


def _leaf_path(ours: str, leaf: str, value: np.ndarray) -> str | None:
    """Our '/'-path of a torch leaf of layer `ours`, or None if it has none. Convolution
    kernels (OIHW; depthwise (C, 1, k, k)) become HWIO by `.transpose(2, 3, 1, 0)`, dense
    (out, in) kernels (in, out) by `.T`: for 1-d leaves both are the identity."""
    if ours.rpartition("/")[2].endswith("bn"):
        if leaf not in _BN_LEAVES or value.ndim != 1:
            return None
        collection, name = _BN_LEAVES[leaf]
        return f"{collection}/{ours}/{name}"
    if leaf == "weight" and value.ndim in (2, 4):
        return f"params/{ours}/kernel"
    if leaf == "bias" and value.ndim == 1:
        return f"params/{ours}/bias"
    return None


def num_classes_of(state_dict: Mapping[str, np.ndarray]) -> int | None:
    """The ImageNet head's width, or None for a timm model created with ``num_classes=0``."""
    for key in ("fc.weight", "classifier.weight"):
        if key in state_dict:
            return int(np.shape(state_dict[key])[0])
    return None


def load_timm_variables(
    state_dict: Mapping[str, np.ndarray], model_name: str, *, include_head: bool = True, adapters: str | bool = "none"
) -> dict[str, Any]:
    """Variables of ``backbone(model_name, num_classes=..., adapters=...)`` from a timm state
    dict, every name and shape checked: with the state dict's ImageNet head (`num_classes_of`)
    if it has one and `include_head`, else without (a detection backbone). Adapters keep their
    identity initialisation."""
    mapped = convert_state_dict(state_dict, model_name)
    num_classes = num_classes_of(state_dict) if include_head else None
    if num_classes is None:
        mapped = {k: v for k, v in mapped.items() if not matches_any(k, HEAD_PATTERNS)}
    target, ignore = conversion_target(backbone(model_name, num_classes=num_classes, adapters=adapters))
    return assign_by_path(target, mapped, source=f"timm {model_name}", ignore_unmapped=ignore)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A timm weights file as numpy: ``.safetensors`` (the Hugging Face hub's files; needs the
    `safetensors` package, a timm dependency) or a torch ``.pth`` / ``.bin`` (read without
    torch, `torch_pickle`)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ImportError(f"reading {path} needs the safetensors package: pip install safetensors") from None
        return dict(load_file(path))
    return load_torch_state_dict(path)


def preprocessing(model_name: str) -> efficientnet.Preprocessing:
    """The input normalisation of `model_name`'s pretrained tag (its default tag when none is
    named) from timm's registry (no download), as ``(x - mean) / std`` on [0, 255] pixels."""
    try:
        import timm
    except ImportError:
        raise ImportError(
            "pip install timm: its pretrained configs state each weight tag's input normalisation"
        ) from None
    cfg = timm.get_pretrained_cfg(model_name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained config for {model_name!r}")
    return efficientnet.Preprocessing(
        tuple(255.0 * float(v) for v in cfg.mean), tuple(255.0 * float(v) for v in cfg.std)
    )
