"""TF Model Garden (official/vision) ResNet / ResNet-RS TF2 checkpoints -> our ResNet variables.

TF2 object-based checkpoints name a functional Keras backbone's layers by position:
`<prefix>layer_with_weights-<N>/...`. For the ResNet-RS backbone (docs/reference.md §2.2) the
positions are: the stem's four conv/BN pairs (N = 0..7), then one entry per residual block in
order, each holding `_conv1.._conv3`, `_norm1.._norm3`, the projection (`_shortcut`/`_shortcut1`,
`_norm0`) in a stage's first block, and `_squeeze_excitation/_se_reduce|_se_expand`.
The checkpoints are read with `tf.train.load_checkpoint`, which needs no model code.
"""

from __future__ import annotations

import re

import numpy as np

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_BN = {
    "gamma": ("params", "scale"),
    "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"),
    "moving_variance": ("batch_stats", "var"),
}
_BLOCK_LAYERS = {
    "_conv1": "conv1",
    "_conv2": "conv2",
    "_conv3": "conv3",
    "_norm0": "proj_bn",
    "_norm1": "bn1",
    "_norm2": "bn2",
    "_norm3": "bn3",
    "_shortcut": "proj_conv",
    "_shortcut1": "proj_conv",
    "_squeeze_excitation/_se_reduce": "se/reduce",
    "_squeeze_excitation/_se_expand": "se/expand",
}


def read_tf_checkpoint(path: str) -> dict[str, np.ndarray]:
    import tensorflow as tf  # imported here: only conversion needs TensorFlow

    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def find_backbone_prefix(names) -> str:
    """The prefix before `layer_with_weights-0/kernel` of the stem conv, e.g. 'model/backbone/'."""
    candidates = sorted(
        {n[: n.index("layer_with_weights-0/kernel")] for n in names if "layer_with_weights-0/kernel" + SUFFIX in n}
    )
    candidates = [c for c in candidates if "backbone" in c] or candidates
    if len(candidates) != 1:
        raise ValueError(
            f"cannot locate the backbone in the checkpoint (candidates {candidates}); pass prefix= explicitly"
        )
    return candidates[0]


def convert_tfmg_resnet(
    variables: dict[str, np.ndarray], blocks_per_stage, *, prefix: str | None = None, stem_convs: int = 4
) -> dict[str, np.ndarray]:
    """Maps TF names to {'params/...', 'batch_stats/...'}. `blocks_per_stage` e.g. (3, 4, 6, 3);
    `stem_convs` is 4 for the ResNet-RS stem (3 convs + the strided conv replacing max-pool)."""
    if prefix is None:
        prefix = find_backbone_prefix(variables)
    block_names = [f"stage{s}/block{i}" for s, n in enumerate(blocks_per_stage, 1) for i in range(n)]
    pattern = re.compile(re.escape(prefix) + r"layer_with_weights-(\d+)/(.+)" + re.escape(SUFFIX))
    out: dict[str, np.ndarray] = {}
    unknown = []
    for name, value in variables.items():
        m = pattern.fullmatch(name)
        if not m:
            continue  # not part of the backbone (optimizer slots, heads, counters)
        index = int(m.group(1))
        layer, _, field = m.group(2).rpartition("/")
        if index < 2 * stem_convs:  # stem: conv, BN, conv, BN, ... directly at the top level
            module = f"stem/{'conv' if index % 2 == 0 else 'bn'}{index // 2 + 1}"
        else:
            block = index - 2 * stem_convs
            if block >= len(block_names) or layer not in _BLOCK_LAYERS:
                unknown.append(name)
                continue
            module = f"{block_names[block]}/{_BLOCK_LAYERS[layer]}"
        if field in _BN:
            collection, ours = _BN[field]
            out[f"{collection}/{module}/{ours}"] = value
        elif field in ("kernel", "bias"):
            out[f"params/{module}/{field}"] = value
        else:
            unknown.append(name)
    if unknown:
        raise KeyError(f"TF Model Garden entries with no place in our ResNet: {unknown[:20]}")
    return out
