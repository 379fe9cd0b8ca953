"""Paper Table 1 / 3: ResNet-RS-101 + FPN (L2-6) Faster R-CNN (box-only), COCO, 1024x1024.

Reference: tensorflow/models official/projects/backbone_reuse
faster_rcnn/fastrcnn_resnet101_fpn_{72,600}epochs.yaml (docs/reference.md §1.2).

    python -m frozen_det.train --config configs/paper/resnetrs101_fpn.py:72ep,frozen --workdir W
    python -m frozen_det.resources --config configs/paper/resnetrs101_fpn.py

Argument tokens: schedule 72ep | 600ep; strategy frozen | finetune | scratch | adapters.
Backbone weights: convert resnet-rs-101-i192 with tools/convert_checkpoint.py
(--format tfmg_resnet --depth 101) into weights/resnet_rs101_i192. Batch 64 on a TPU v3-32
(about 1 day for 72 epochs frozen); paper: 83.5M params, 21.9M trainable when frozen.
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    args = d.parse_arg(arg, schedule=("72ep", d.PAPER_SCHEDULES), strategy=("frozen", d.STRATEGIES))
    config = d.ConfigDict()
    config.model = d.two_stage_model(
        num_classes=d.COCO_CLASSES,
        neck=d.fpn(2, 6),
        backbone_cfg=d.backbone(type="resnet_rs", depth=101, bn_epsilon=1e-4, bn_momentum=0.997),
    )
    d.apply_strategy(config.model, args["strategy"], "weights/resnet_rs101_i192")
    config.data = d.coco_data(canvas=1024)
    config.train = d.paper_train(args["schedule"])
    return d.complete(config)
