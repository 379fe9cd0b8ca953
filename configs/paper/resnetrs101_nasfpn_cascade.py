"""Paper Table 1 / 3: ResNet-RS-101 + NAS-FPN + Cascade R-CNN (3 class-agnostic stages, IoU
0.5 / 0.7 / 0.8, logits averaged at inference), COCO, 1280x1280.

Reference: backbone_reuse faster_rcnn/fastrcnn_resnet101_nasfpn_cascade_{72,600}epochs.yaml
(docs/reference.md §1.2, §2.8, §2.10). Paper Table 3: 132.9M params, 71.3M trainable when frozen.

    python -m frozen_det.train --config configs/paper/resnetrs101_nasfpn_cascade.py:600ep,frozen --workdir W

Argument tokens: schedule 72ep | 600ep; strategy frozen | finetune | scratch | adapters
(adapters: paper Table 7).
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    args = d.parse_arg(arg, schedule=("72ep", d.PAPER_SCHEDULES), strategy=("frozen", d.STRATEGIES))
    config = d.ConfigDict()
    config.model = d.two_stage_model(
        num_classes=d.COCO_CLASSES,
        neck=d.nasfpn(3, 7),
        cascade=True,
        backbone_cfg=d.backbone(type="resnet_rs", depth=101, bn_epsilon=1e-4, bn_momentum=0.997),
    )
    d.apply_strategy(config.model, args["strategy"], "weights/resnet_rs101_i192")
    config.data = d.coco_data(canvas=1280)
    config.train = d.paper_train(args["schedule"])
    return d.complete(config)
