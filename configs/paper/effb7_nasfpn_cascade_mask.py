"""Paper Table 4: EfficientNet-B7 + NAS-FPN (bottleneck blocks, 1024-channel nodes) + Cascade
Mask R-CNN at 1280x1280, LSJ + Copy-Paste, the Copy-Paste codebase's recipe (docs/reference.md §5.2-5.5):
9 anchors (3 scales, anchor_size 4), 2-conv RPN, first-stage fg IoU > 0.6 (strict), cascade
0.7 / 0.8, ReLU heads, batch 256, LR 0.32 with 1000 warm-up steps, 180k steps.

    python -m frozen_det.train --config configs/paper/effb7_nasfpn_cascade_mask.py:frozen --workdir W \
        --config.data.path=COCO_DIR

COCO_DIR: the COCO 2017 release (annotations/instances_{train,val}2017.json, train2017/, val2017/);
TFDS's coco/2017 has no instance masks.

Argument tokens: strategy frozen | finetune | scratch | adapters; copy_paste | vanilla.
The frozen EfficientNet runs BN in inference mode without drop-connect (docs/reference.md §5.5: the TPU
codebase would keep them in train mode; we follow TF-Vision's freeze semantics). About 185M
parameters (Copy-Paste README).
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    args = d.parse_arg(arg, strategy=("frozen", d.STRATEGIES), augment=("copy_paste", ("copy_paste", "vanilla")))
    config = d.ConfigDict()
    model = d.two_stage_model(
        num_classes=d.COCO_CLASSES,
        neck=d.nasfpn(3, 7, block="bottleneck", combine="sum", drop_connect_rate=0.2),
        cascade=True,
        mask=True,
        activation="relu",
        backbone_cfg=d.backbone(type="efficientnet", variant="b7", bn_momentum=0.99, bn_epsilon=1e-3),
    )
    model.anchors.update(num_scales=3, anchor_size=4.0, aspect_ratios=(1.0, 2.0, 0.5))
    model.rpn.num_convs = 2
    model.rpn.score_normalizer = "num_anchors"  # the TPU codebase normalises by the 256 anchors
    model.roi.update(fg_iou=0.6, strict_fg=True)
    d.apply_strategy(model, args["strategy"], "weights/efficientnet_b7")
    config.model = model
    config.data = d.coco_data(canvas=1280, with_masks=True)
    config.data.augment.copy_paste = args["augment"] == "copy_paste"
    vanilla = args["augment"] == "vanilla"
    config.train = d.train(
        batch_size=256,
        total_steps=90_000 if vanilla else 180_000,
        boundaries=(81_000, 85_500, 87_750) if vanilla else (162_000, 171_000, 175_500),
        base_lr=0.32,
        warmup_steps=1000,
        warmup_lr=0.0032,
    )
    return d.complete(config)
