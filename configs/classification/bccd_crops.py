"""BCCD's blood cells as a classification task: every annotated cell (platelets, red and white
blood cells) cropped out of the BCCD Pascal-VOC folder with 10% context, 96 x 96, trained on the
trainval crops and evaluated on the test crops (red cells are ~85% of the crops: the headline
metric is the mean per-class accuracy; training samples classes evenly).

    python -m frozen_det.train --config configs/classification/bccd_crops.py:linear_probe --workdir runs/bccd_lp
    python -m frozen_det.evaluate --config configs/classification/bccd_crops.py:linear_probe --workdir runs/bccd_lp

Argument tokens: the transfer strategy
  linear_probe   the packaged ImageNet EfficientNet-Lite0 frozen (BatchNorm on its stored
                 statistics), only the new linear classifier trained;
  finetune       the same weights, everything trained;
  scratch        the same network from random weights;
and the backbone: lite0 (default) or resnet (a ResNet-18 at width 0.25, the Fashion-MNIST
pre-training's network: give its run as --config.train.init_from=RUN for a transferred row).
The BCCD folder: --config.data.detection.path, BCCD_DIR, or datasets/bccd (configs/data/bccd.py).
"""

from configs.data import bccd as bccd_data
from frozen_det import config_defaults as d

STRATEGIES = ("linear_probe", "finetune", "scratch")


def get_config(arg=None):
    args = d.parse_arg(arg, strategy=("linear_probe", STRATEGIES), backbone=("lite0", ("lite0", "resnet")))
    config = d.ConfigDict()
    if args["backbone"] == "lite0":
        backbone = dict(
            type="efficientnet",
            variant="lite0",
            conv_impl="fast",
            bn_momentum=0.9,
            init_checkpoint="" if args["strategy"] == "scratch" else "package:efficientnet_lite0",
        )
        normalisation = d.normalisation_of("package:efficientnet_lite0")  # every row, scratch too
    else:
        backbone = dict(type="resnet", depth=18, width=0.25, conv_impl="fast", bn_momentum=0.9)
        normalisation = dict(mean=(0.286 * 255,) * 3, std=(0.353 * 255,) * 3)  # the Fashion-MNIST pre-training's
    config.model = d.ConfigDict(dict(type="classifier", num_classes=3, backbone=backbone))
    detection = bccd_data.get_config().data
    config.data = d.ConfigDict(
        dict(
            source="detection_crops",
            detection=detection,
            crop_context=0.1,
            image_size=96,
            crop_fraction=1.0,
            train_split="trainval",
            eval_split="test",
            eval_batch_size=64,
            **normalisation,
            sampling="repeat_factor",
            repeat_threshold=1.0,
            repeat_power=1.0,  # classes sampled evenly
            augment=dict(crop_scale=(0.5, 1.0), crop_ratio=(0.75, 1.333), hflip=True),
        )
    )
    config.train = d.train(
        batch_size=32, total_steps=600, boundaries=(), base_lr=0.05, warmup_steps=50, warmup_lr=0.005, weight_decay=4e-5
    )
    config.train.schedule.name = "warmup_cosine"
    config.train.update(log_every=50, checkpoint_every=200, grad_clip_norm=10.0)
    if args["strategy"] == "linear_probe":
        config.model.backbone.update(freeze="all", bn_mode="frozen_stats")
        config.train.trainable_only = ("/classifier/",)
        config.train.schedule.base_lr = 0.1
        config.train.weight_decay = 0.0
    return d.complete(config)
