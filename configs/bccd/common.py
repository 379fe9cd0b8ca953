"""The BCCD transfer study's shared config (configs/bccd/{scratch,finetune,frozen,adapters,film}.py
differ only in the backbone's transfer strategy; `python -m frozen_det.projects.bccd` runs them all).

Data: BCCD test split (72 images) after training on trainval (292), read in place through
configs/data/bccd.py; canvas 512 (images 640x480 scaled by 0.8: platelets ~32 px, red cells
~80, white cells ~150), horizontal flip and scale jitter in [0.5, 1.5] -- the full LSJ range
[0.1, 2.0] is meant for long COCO schedules and would shrink platelets to a few pixels; this
range keeps every cell inside the anchor range while still varying the scale on a 292-image
set. The Lite0 weights expect (x - 127) / 128 on [0, 255] RGB.

Model: EfficientNet-Lite0 (levels 2-5: 24 / 40 / 112 / 320 channels), FPN L3-6 with 128
filters, anchors 32..256 px (anchor_size 4), 1-conv RPN, 2-fc box head (512), 128 sampled
ROIs per image, at most 100 detections per image (COCO metrics with maxDets 100).

Argument: the head, ``fpn`` (Faster R-CNN + FPN), ``cascade`` (Cascade R-CNN on the same FPN:
three box-head stages at IoU 0.5 / 0.7 / 0.8) or ``retinanet`` (RetinaNet on the same FPN
levels, 128-filter subnets, 9 anchors of 32..406 px; not a row of the BCCD project yet). Why
Cascade on FPN rather than NAS-FPN as the higher-capacity head on this CPU: measured train steps
of the frozen model at batch 4 / canvas 512 took 2.9 CPU-seconds (fpn), 3.2 (cascade) and 4.1
(NAS-FPN L3-7, 3 repeats, 128 filters), of which 2.0 are the frozen Lite0's forward pass (with
XLA's convolutions; conv_impl "fast" below makes that forward pass ~2.7x cheaper, not the
heads). The cascade adds its capacity on 7x7 ROI crops, whose cost does not grow with the
canvas, and aims at the localisation quality (AP75) where BCCD detectors are weakest; NAS-FPN's
cost grows with every pixel of the L3 map (and needs L7, a multiple-of-128 canvas).

Schedule (every row): batch 4, 500 steps (~6.8 epochs), SGD momentum 0.9, linear warm-up
from 0.004 over 50 steps to 0.04, cosine decay to 0, weight decay 4e-5, gradient clipping
at norm 10, BatchNorm momentum 0.9 in the neck and heads (and in a trained backbone; the
reference 0.997 needs thousands of steps). Backbone, neck and heads use conv_impl "fast"
(frozen_det/models/fast_conv.py: depthwise convolutions as shifted multiply-adds, weight
gradients as dots): on the shared 2-core CPU, with the fast backbone only, the frozen fpn row
trained in ~9 min (1.06 s/step; XLA: 66 GFLOPs / 238 MB temp per step) and the fine-tuned one
in ~27 min (3.25 s/step, 104 GFLOPs / 4.5 GB); with XLA's own convolutions they took 26 min
and ~90 min (3.1 and ~11 s/step). The README's BCCD section has the times with the fast neck
and heads too.
"""

from configs.data import bccd as bccd_data
from frozen_det import config_defaults as d

HEADS = ("fpn", "cascade", "retinanet")
CHECKPOINT = "package:efficientnet_lite0"
BATCH = 4


def get_config(strategy: str, arg=None):
    """The study's config for a transfer `strategy` (config_defaults.STRATEGIES); `arg` picks
    the head."""
    head = d.parse_arg(arg, head=("fpn", HEADS))["head"]
    backbone = d.backbone(type="efficientnet", variant="lite0", bn_momentum=0.9, conv_impl="fast")
    if head == "retinanet":
        model = d.retinanet_model(backbone, num_classes=4, conv_impl="fast")
        model.neck.update(max_level=6, num_filters=128)
        model.head.num_filters = 128
    else:
        model = d.two_stage_model(
            num_classes=4,
            neck=d.fpn(3, 6, num_filters=128),
            cascade=head == "cascade",
            conv_impl="fast",
            backbone_cfg=backbone,
        )
        model.rpn.update(
            num_filters=128,
            pre_nms_top_k_train=1000,
            pre_nms_top_k_test=500,
            post_nms_top_k_train=200,
            post_nms_top_k_test=200,
            num_proposals_train=256,
            num_proposals_test=200,
        )
        model.roi.num_samples = 128
        model.box_head.update(num_convs=0, num_fcs=2, fc_dims=512)
    d.apply_strategy(model, strategy, CHECKPOINT)
    model.anchors.anchor_size = 4.0
    model.bn.momentum = 0.9
    model.neck.bn_momentum = 0.9

    config = d.ConfigDict()
    config.model = model
    config.data = bccd_data.get_config().data
    # Every row (from scratch too) reads the input as the Lite0 weights expect it.
    config.data.update(**d.normalisation_of(CHECKPOINT), batch_size=BATCH, eval_batch_size=BATCH)
    config.data.augment.update(scale_min=0.5, scale_max=1.5)
    config.train = d.train(
        batch_size=BATCH, total_steps=500, boundaries=(), base_lr=0.04, warmup_steps=50, warmup_lr=0.004
    )
    config.train.schedule.name = "warmup_cosine"
    config.train.grad_clip_norm = 10.0
    config.train.log_every = 25
    config.train.checkpoint_every = 100
    return d.complete(config)
