"""Tiny two-stage detectors for tests and quick CPU checks: ResNet-18, 32-channel necks and
heads, few proposals, 128x128 canvas, on the synthetic shapes dataset.

    python -m frozen_det.resources --config configs/tiny/two_stage.py:cascade,mask,frozen

Argument tokens: faster | cascade; box | mask; fpn | nasfpn; strategy finetune | frozen |
adapters | film | scratch. Compiles in well under a minute on a 2-core CPU.
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    args = d.parse_arg(
        arg,
        head=("faster", ("faster", "cascade")),
        masks=("box", ("box", "mask")),
        neck=("fpn", ("fpn", "nasfpn")),
        strategy=("finetune", d.STRATEGIES),
    )
    config = d.ConfigDict()
    config.model = d.tiny_two_stage_model(
        num_classes=4, cascade=args["head"] == "cascade", mask=args["masks"] == "mask", neck_type=args["neck"]
    )
    d.apply_strategy(config.model, args["strategy"], "")
    config.data = d.ConfigDict(
        dict(source="synthetic", canvas=128, max_instances=10, with_masks=args["masks"] == "mask", mask_size=16)
    )
    config.train = d.train(
        batch_size=2, total_steps=100, boundaries=(80,), base_lr=0.02, warmup_steps=10, warmup_lr=0.002
    )
    return d.complete(config)
