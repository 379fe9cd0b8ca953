"""Faster R-CNN R50-FPN set to torchvision's `fasterrcnn_resnet50_fpn` (config_defaults.
torchvision_faster_rcnn_r50_fpn), random weights, on synthetic shapes at 512x512, batch 2: the
model of tools/bench_peer.py as an experiment config, e.g. to profile its train step.

    python tools/profile_step.py --config configs/bench/r50_fpn_torchvision.py:frozen
    python -m frozen_det.resources --config configs/bench/r50_fpn_torchvision.py:finetune

Argument: frozen | finetune (backbone freeze "all" / "none"), optionally ",fast" for the ResNet
conv_impl "fast".
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    args = d.parse_arg(arg, strategy=("frozen", ("frozen", "finetune")), conv_impl=("xla", ("xla", "fast")))
    config = d.ConfigDict()
    config.model = d.torchvision_faster_rcnn_r50_fpn(
        num_classes=4, freeze="all" if args["strategy"] == "frozen" else "none", conv_impl=args["conv_impl"]
    )
    config.data = d.ConfigDict(
        dict(
            source="synthetic",
            canvas=512,
            max_instances=100,
            synthetic=dict(image_size=512, num_train=16, num_validation=4),
        )
    )
    config.train = d.train(
        batch_size=2, total_steps=100, boundaries=(80,), base_lr=0.02, warmup_steps=10, warmup_lr=0.002
    )
    return d.complete(config)
