"""A narrow ResNet-18 (width 0.25: 16 / 32 / 64 / 128 channels) trained from scratch on
Fashion-MNIST (60k training images, 10 classes; offline from the Debian package
dataset-fashion-mnist) at 32 x 32: a classification pre-training that runs in minutes on a CPU.

    python -m frozen_det.train --config configs/classification/fashion_mnist.py --workdir runs/fmnist
    python -m frozen_det.evaluate --config configs/classification/fashion_mnist.py --workdir runs/fmnist

Argument: "width=W" (ResNet width multiplier, default 0.25), "steps=N" (default 1500 at batch
64, 1.6 epochs).
"""

from frozen_det import config_defaults as d

FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.286 * 255, 0.353 * 255


def get_config(arg=None):
    args = dict(token.split("=") for token in filter(None, (arg or "").split(",")))
    steps = int(args.get("steps", 1500))
    config = d.ConfigDict()
    config.model = d.ConfigDict(
        dict(
            type="classifier",
            num_classes=10,
            label_smoothing=0.1,
            backbone=dict(
                type="resnet",
                depth=18,
                width=float(args.get("width", 0.25)),
                freeze="none",
                bn_momentum=0.9,
                conv_impl="fast",
            ),
        )
    )
    config.data = d.ConfigDict(
        dict(
            source="fashion_mnist",
            image_size=32,
            crop_fraction=1.0,
            eval_batch_size=500,
            mean=(FASHION_MNIST_MEAN,) * 3,
            std=(FASHION_MNIST_STD,) * 3,
            augment=dict(crop_scale=(0.6, 1.0), crop_ratio=(0.8, 1.25), hflip=True),
        )
    )
    config.train = d.train(
        batch_size=64,
        total_steps=steps,
        boundaries=(),
        base_lr=0.1,
        warmup_steps=100,
        warmup_lr=0.01,
        weight_decay=5e-5,
    )
    config.train.schedule.name = "warmup_cosine"
    config.train.update(log_every=100, checkpoint_every=500)
    return d.complete(config)
