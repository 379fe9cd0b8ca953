"""A small Faster R-CNN + FPN on VOC-like canvases of Fashion-MNIST items (frozen_det.data.offline.canvases,
10 classes, 2-6 objects of 19-51 px per 128 x 128 image, clutter), with the narrow ResNet-18
(width 0.25) of configs/classification/fashion_mnist.py as its backbone: the detection target of
the offline transfer studies. Everything trains; the backbone starts from random weights, or
from a classification run with --config.train.init_from=RUN (its backbone is restored, the
neck and heads start fresh).

Argument "lite0": the packaged ImageNet EfficientNet-Lite0 instead, fine-tuned (detection
pre-training from a classification network, Li et al., "An analysis of pre-training on object
detection", sec. 3), with a two-FC box head (FC1 and FC2 are taps of sec. 4.3).

    python -m frozen_det.data.offline.canvases --mode voc --output /tmp/canvases_voc
    python -m frozen_det.train --config configs/canvases/detector.py --workdir runs/canvas_det \
        --config.data.path=/tmp/canvases_voc [--config.train.init_from=runs/fmnist]
"""

from frozen_det import config_defaults as d

FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.286 * 255, 0.353 * 255


def get_config(arg=None):
    lite0 = d.parse_arg(arg, backbone=("resnet", ("resnet", "lite0")))["backbone"] == "lite0"
    model = d.tiny_two_stage_model(num_classes=11)
    if lite0:
        model.backbone = d.backbone(
            type="efficientnet",
            variant="lite0",
            freeze="none",
            init_checkpoint="package:efficientnet_lite0",
            bn_momentum=0.9,
            conv_impl="fast",
        )
    else:
        model.backbone = d.backbone(
            type="resnet", depth=18, freeze="none", width=0.25, bn_momentum=0.9, conv_impl="fast"
        )
    model.conv_impl = "fast"
    model.rpn.update(
        pre_nms_top_k_train=300,
        post_nms_top_k_train=100,
        num_proposals_train=128,
        pre_nms_top_k_test=300,
        post_nms_top_k_test=100,
        num_proposals_test=100,
    )
    model.roi.num_samples = 64
    model.box_head.update(num_filters=64, fc_dims=128, num_fcs=2 if lite0 else 1)
    model.detections.update(max_detections=50, pre_nms_top_k=100)
    config = d.ConfigDict()
    config.model = model
    config.data = d.ConfigDict(
        dict(
            source="coco_folder",
            path="",
            train_split="train",
            eval_split="val",
            canvas=128,
            max_instances=8,
            eval_batch_size=40,
            # Lite0: unset, those its weights expect ((x - 127) / 128 on [0, 255] RGB).
            mean=None if lite0 else (FASHION_MNIST_MEAN,) * 3,
            std=None if lite0 else (FASHION_MNIST_STD,) * 3,
            augment=dict(hflip=True, scale_min=0.75, scale_max=1.25),
        )
    )
    config.train = d.train(
        batch_size=8,
        total_steps=1500,
        boundaries=(),
        base_lr=0.04,
        warmup_steps=100,
        warmup_lr=0.004,
        weight_decay=4e-5,
    )
    config.train.schedule.name = "warmup_cosine"
    config.train.update(grad_clip_norm=10.0, log_every=100, checkpoint_every=500)
    return d.complete(config)
