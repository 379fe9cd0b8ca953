"""Small Faster R-CNN on the packaged ImageNet EfficientNet-Lite0, frozen, on the synthetic
shapes dataset at 128x128: the offline pretrained-backbone check on a CPU.

    python -m frozen_det.train --config configs/tiny/lite0_frozen.py --workdir /tmp/lite0
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    del arg
    config = d.ConfigDict()
    model = d.tiny_two_stage_model(num_classes=4, freeze="all")
    # conv_impl "fast" (models/fast_conv.py): depthwise convolutions as shifted multiply-adds and
    # weight gradients as dots, several times faster train steps on a CPU; "xla" is the better
    # choice on a TPU or GPU.
    model.backbone = d.backbone(
        type="efficientnet",
        variant="lite0",
        freeze="all",
        init_checkpoint="package:efficientnet_lite0",
        conv_impl="fast",
    )
    model.conv_impl = "fast"
    model.neck.num_filters = 64
    model.rpn.num_filters = 64
    model.box_head.update(num_filters=64, fc_dims=256)
    config.model = model
    # mean / std unset: those the Lite0 weights expect, (x - 127) / 128 on [0, 255] RGB.
    config.data = d.ConfigDict(dict(source="synthetic", canvas=128, max_instances=10))
    config.train = d.train(
        batch_size=4, total_steps=300, boundaries=(250,), base_lr=0.02, warmup_steps=20, warmup_lr=0.002
    )
    config.train.grad_clip_norm = 10.0
    config.train.log_every = 50
    config.train.eval_every = 100
    return d.complete(config)
