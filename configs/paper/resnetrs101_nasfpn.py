"""Paper Table 1 / 3: ResNet-RS-101 + NAS-FPN (L3-7, 5 repeats) Faster R-CNN, COCO, 1024x1024.

Reference: backbone_reuse faster_rcnn/fastrcnn_resnet101_nasfpn_{72,600}epochs.yaml
(docs/reference.md §1.2; anchors keep anchor_size 8 on L3-7, 2.4).

    python -m frozen_det.train --config configs/paper/resnetrs101_nasfpn.py:600ep,frozen --workdir W

Argument tokens: schedule 72ep | 600ep; strategy frozen | finetune | scratch | adapters.
Paper: 102.6M params, 40.9M trainable when frozen (docs/reference.md §4 explains the 2M gap to the
shipped YAML, which we reproduce).
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    args = d.parse_arg(arg, schedule=("72ep", d.PAPER_SCHEDULES), strategy=("frozen", d.STRATEGIES))
    config = d.ConfigDict()
    config.model = d.two_stage_model(
        num_classes=d.COCO_CLASSES,
        neck=d.nasfpn(3, 7),
        backbone_cfg=d.backbone(type="resnet_rs", depth=101, bn_epsilon=1e-4, bn_momentum=0.997),
    )
    d.apply_strategy(config.model, args["strategy"], "weights/resnet_rs101_i192")
    config.data = d.coco_data(canvas=1024)
    config.train = d.paper_train(args["schedule"])
    return d.complete(config)
