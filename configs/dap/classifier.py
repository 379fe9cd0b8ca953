"""DAP step 1 in miniature: a classifier pre-trained on ImageNet-like canvases (one Fashion-MNIST
class per image, 1-3 large items on textured backgrounds; `python -m frozen_det.data.offline.canvases
--mode imagenet`), whose class activation maps then give the pseudo-boxes (DAP, Zhong et al.,
CVPR 2021, sec. 3.1). The narrow ResNet-18 (width 0.25) of configs/canvases/detector.py, so that
its backbone moves into that detector.

Trained at 96 x 96 (a 3 x 3 map at stride 32) and CAMs taken at shorter sides 128 and 256:
the paper's ratios (trained at 224, CAMs at 288 and 576).

    python -m frozen_det.data.offline.canvases --mode imagenet --output /tmp/canvases_imagenet
    python -m frozen_det.train --config configs/dap/classifier.py --workdir runs/dap_cls \\
        --config.data.path=/tmp/canvases_imagenet
"""

from configs.canvases import detector as canvases_detector
from frozen_det import config_defaults as d

CAM_SCALES = (128, 256)


def get_config(arg=None):
    del arg
    config = d.ConfigDict()
    config.model = d.ConfigDict(
        dict(
            type="classifier",
            num_classes=10,
            label_smoothing=0.1,
            backbone=dict(type="resnet", depth=18, width=0.25, freeze="none", bn_momentum=0.9, conv_impl="fast"),
        )
    )
    config.data = d.ConfigDict(
        dict(
            source="coco_labels",
            path="",
            train_split="train",
            eval_split="val",
            image_size=96,
            crop_fraction=1.0,
            eval_batch_size=100,
            mean=(canvases_detector.FASHION_MNIST_MEAN,) * 3,
            std=(canvases_detector.FASHION_MNIST_STD,) * 3,
            augment=dict(crop_scale=(0.35, 1.0), crop_ratio=(0.75, 1.333), hflip=True),
        )
    )
    config.train = d.train(
        batch_size=32, total_steps=2000, boundaries=(), base_lr=0.1, warmup_steps=100, warmup_lr=0.01, weight_decay=5e-5
    )
    config.train.schedule.name = "warmup_cosine"
    config.train.update(log_every=100, checkpoint_every=500, grad_clip_norm=10.0)
    return d.complete(config)
