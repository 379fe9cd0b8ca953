"""keras.applications EfficientNetB0..B7 -> our Flax variables, by layer name.

keras.applications builds the same graph as TF's `efficientnet_builder` (swish, SE from the
block's input width, BN epsilon 1e-3, TF 'SAME' padding via explicit `correct_pad` zero padding)
with layer names ``stem_conv``, ``stem_bn``, ``block{g}{letter}_{expand_conv, expand_bn, dwconv,
bn, se_reduce, se_expand, project_conv, project_bn}``, ``top_conv``, ``top_bn``, ``predictions``.
Our block ``block{g}{letter}`` carries the same name under its freeze stage.

Input preprocessing: keras' EfficientNets take RGB pixels in [0, 255] and normalise *inside*
the model: ``Rescaling(1/255)`` -> ``Normalization(mean, variance)`` (weights of the layer,
stored in the checkpoint) -> for ``weights="imagenet"`` an extra ``Rescaling(1/sqrt(std))``
(the released checkpoints store the std where the variance belongs; keras compensates). Our
model has no such layers: `preprocessing_of` folds them into one per-channel
``(x - mean) / std`` on [0, 255] pixels. For keras' ImageNet weights that is
``mean = 255 * (0.485, 0.456, 0.406) = (123.675, 116.28, 103.53)`` and
``std = 255 * (0.229, 0.224, 0.225) = (58.395, 57.12, 57.375)``; for a randomly initialised
keras model (Normalization not adapted) it is ``mean 0, std 255``.

TensorFlow/keras is imported lazily: only the converter needs it.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from frozen_det.checkpoints.efficientnet_lite import conversion_target
from frozen_det.checkpoints.mapping import assign_by_path
from frozen_det.models.backbones import efficientnet
from frozen_det.models.freezing import HEAD_PATTERNS
from frozen_det.tree_paths import matches_any

_BLOCK_LAYERS = {
    "expand_conv": "expand_conv",
    "expand_bn": "expand_bn",
    "dwconv": "depthwise_conv",
    "bn": "depthwise_bn",
    "se_reduce": "se_reduce",
    "se_expand": "se_expand",
    "project_conv": "project_conv",
    "project_bn": "project_bn",
}
_TOP_LAYERS = {
    "stem_conv": "stem/conv",
    "stem_bn": "stem/bn",
    "top_conv": "head_conv",
    "top_bn": "head_bn",
    "predictions": "classifier",
}
_PREPROCESSING_LAYERS = ("Rescaling", "Normalization")
# keras.applications' IMAGENET_STDDEV_RGB: what its ImageNet checkpoints store as the variance.
KERAS_IMAGENET_STD = (0.229, 0.224, 0.225)
_KERAS_CONSTRUCTORS = {f"b{i}": f"EfficientNetB{i}" for i in range(8)}


def variant_of(model) -> str:
    """'b0'..'b7' from a keras.applications model's name ('efficientnetb3')."""
    m = re.fullmatch(r"efficientnet-?(b[0-7])", model.name.lower())
    if not m:
        raise ValueError(
            f"cannot tell the EfficientNet variant of keras model {model.name!r}; pass variant='b0'..'b7'."
        )
    return m.group(1)


def keras_arrays(model, variant: str) -> dict[str, np.ndarray]:
    """Every weight of `model` under our flat variable path; layers we do not know keep their
    keras name (so that `assign_by_path` lists them) and the input normalisation is skipped
    (see `preprocessing_of`)."""
    specs = {s.name: s for s in efficientnet.block_specs(variant)}
    out: dict[str, np.ndarray] = {}
    for layer in model.layers:
        weights = [np.asarray(w) for w in layer.get_weights()]
        if not weights or type(layer).__name__ in _PREPROCESSING_LAYERS:
            continue
        kind = type(layer).__name__
        m = re.fullmatch(r"(block\d+[a-z])_(\w+)", layer.name)
        if m and m.group(1) in specs and m.group(2) in _BLOCK_LAYERS:
            ours = f"stage{specs[m.group(1)].stage}/{m.group(1)}/{_BLOCK_LAYERS[m.group(2)]}"
        elif layer.name in _TOP_LAYERS:
            ours = _TOP_LAYERS[layer.name]
        else:
            for i, w in enumerate(weights):
                out[f"keras/{layer.name}/{i}"] = w
            continue
        if kind == "BatchNormalization":
            gamma, beta, mean, var = weights
            out.update(
                {
                    f"params/{ours}/scale": gamma,
                    f"params/{ours}/bias": beta,
                    f"batch_stats/{ours}/mean": mean,
                    f"batch_stats/{ours}/var": var,
                }
            )
        elif kind == "DepthwiseConv2D":
            (kernel,) = weights  # (k, k, C, 1) -> (k, k, 1, C)
            out[f"params/{ours}/kernel"] = kernel.transpose(0, 1, 3, 2)
        elif kind in ("Conv2D", "Dense"):
            out[f"params/{ours}/kernel"] = weights[0]
            if len(weights) > 1:
                out[f"params/{ours}/bias"] = weights[1]
        else:
            for i, w in enumerate(weights):
                out[f"keras/{layer.name}/{i}"] = w
    return out


def preprocessing_of(model) -> efficientnet.Preprocessing:
    """Folds the model's leading Rescaling / Normalization layers into one per-channel
    ``(x - mean) / std`` on [0, 255] pixels."""
    scale = np.ones(3, np.float64)  # the model computes scale * x + shift before the stem
    shift = np.zeros(3, np.float64)
    for layer in model.layers:
        kind = type(layer).__name__
        if layer.name.startswith("stem_"):
            break
        if kind == "Rescaling":
            a = np.broadcast_to(np.asarray(layer.scale, np.float64), (3,))
            b = np.broadcast_to(np.asarray(layer.offset, np.float64), (3,))
            scale, shift = scale * a, shift * a + b
        elif kind == "Normalization":
            if getattr(layer, "invert", False):
                raise ValueError(f"{layer.name}: an inverted Normalization is not an input normalisation.")
            # The tensors the layer computes with (its weights reach them via finalize_state,
            # which load_weights calls; a constructor-given mean/variance has no weights).
            mean, variance = (
                np.broadcast_to(np.asarray(w, np.float64).reshape(-1), (3,)) for w in (layer.mean, layer.variance)
            )
            import keras  # noqa: PLC0415  (only reached with a keras model in hand)

            denom = np.maximum(np.sqrt(variance), keras.backend.epsilon())
            scale, shift = scale / denom, (shift - mean) / denom
        elif kind not in ("InputLayer",):
            raise ValueError(f"unexpected layer {layer.name} ({kind}) before the stem of {model.name}.")
    mean = -shift / scale
    std = 1.0 / scale
    return efficientnet.Preprocessing(tuple(float(v) + 0.0 for v in mean), tuple(float(v) for v in std))


def convert_keras_model(model, variant: str | None = None, *, adapters: str | bool = "none"):
    """Returns ``(variables, preprocessing)`` for ``EfficientNet(variant, num_classes=...)``.

    `num_classes` follows the keras model: its ``predictions`` width, or None when it was built
    with ``include_top=False`` (keras' ``top_conv``/``top_bn`` are then dropped too). With
    adapters, the adapters keep their identity initialisation.
    """
    variant = variant or variant_of(model)
    names = {layer.name for layer in model.layers}
    num_classes = int(model.get_layer("predictions").units) if "predictions" in names else None
    mapped = keras_arrays(model, variant)
    if num_classes is None:
        mapped = {k: v for k, v in mapped.items() if not matches_any(k, HEAD_PATTERNS)}
    net = efficientnet.EfficientNet(variant, num_classes=num_classes, adapters=adapters)
    target, ignore = conversion_target(net)
    variables = assign_by_path(target, mapped, source=f"keras {model.name}", ignore_unmapped=ignore)
    return variables, preprocessing_of(model)


def load_keras_file(
    path: str | os.PathLike,
    variant: str,
    *,
    include_top: bool = True,
    classes: int = 1000,
    adapters: str | bool = "none",
):
    """Converts a saved keras EfficientNet: a whole-model ``.keras`` file, or a weights file
    (``.weights.h5`` or the legacy ``.h5`` keras.applications downloads) for
    ``keras.applications.EfficientNet{variant}(include_top, classes)``. Returns
    ``(variables, preprocessing)``.

    Note: keras only applies the ImageNet std fix-up layer when built with
    ``weights="imagenet"``; a weights file of keras' ImageNet release loaded here gets it added
    back (detected from the stored variance equalling the ImageNet std).
    """
    import keras  # noqa: PLC0415

    path = os.fspath(path)
    variant = _keras_variant(variant)
    if path.endswith(".keras"):
        model = keras.models.load_model(path, compile=False)
        return convert_keras_model(model, variant, adapters=adapters)
    constructor = getattr(keras.applications, _KERAS_CONSTRUCTORS[variant])
    model = constructor(weights=None, include_top=include_top, classes=classes, classifier_activation=None)
    model.load_weights(path)
    variables, pre = convert_keras_model(model, variant, adapters=adapters)
    norm = next(layer for layer in model.layers if type(layer).__name__ == "Normalization")
    variance = np.asarray(norm.variance, np.float64).reshape(-1)
    if np.allclose(variance, KERAS_IMAGENET_STD, atol=1e-6):
        pre = efficientnet.Preprocessing(
            pre.mean, tuple(float(s * math.sqrt(v)) for s, v in zip(pre.std, KERAS_IMAGENET_STD))
        )
    return variables, pre


def _keras_variant(variant: str) -> str:
    efficientnet.variant_config(variant)  # raises the listing ValueError
    key = variant.strip().lower().removeprefix("efficientnet-").removeprefix("efficientnet")
    if key not in _KERAS_CONSTRUCTORS:
        raise ValueError(f"keras.applications has no EfficientNet-{variant}; choose one of b0..b7.")
    return key
