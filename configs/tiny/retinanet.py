"""Tiny RetinaNet for tests and quick CPU checks: a narrow ResNet-18 (half width), 32-channel FPN
P3-P7 and 2-conv subnets, 128x128 canvas, on the synthetic shapes dataset.

    python -m frozen_det.train --config configs/tiny/retinanet.py:frozen --workdir /tmp/retina
    python -m frozen_det.resources --config configs/tiny/retinanet.py:adapters

Argument token: strategy finetune | frozen | adapters | film | scratch (no pretrained weights
here: "frozen" freezes the random initialisation, as configs/tiny/two_stage.py).
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    args = d.parse_arg(arg, strategy=("finetune", d.STRATEGIES))
    config = d.ConfigDict()
    config.model = d.tiny_retinanet_model(num_classes=4)
    d.apply_strategy(config.model, args["strategy"], "")
    config.data = d.ConfigDict(dict(source="synthetic", canvas=128, max_instances=10))
    config.train = d.train(
        batch_size=2, total_steps=100, boundaries=(80,), base_lr=0.01, warmup_steps=10, warmup_lr=0.001
    )
    return d.complete(config)
