"""DAP steps 3-4 in miniature (Zhong et al., "DAP: Detection-Aware Pre-training with Weak
Supervision", CVPR 2021, sec. 3.1): the Faster R-CNN + FPN of configs/canvases/detector.py
(narrow ResNet-18) pre-trained on CAM pseudo-boxes, then fine-tuned on a target.

Argument tokens:
  pretrain      (the default) step 3: the detector on the pseudo-boxes of the ImageNet-like canvases
                (`python -m frozen_det.pseudo_boxes`), its backbone from the classifier
                (--config.train.init_from=CLASSIFIER_RUN; FPN, RPN and heads fresh), each image's
                shorter side one of 19 / 32 / 64 / 128 (the paper's 96 / 160 / 320 / 640, sec.
                4.1, scaled by the canvas over the paper's largest side); evaluated against the
                canvases' true boxes. Set --config.data.path=CANVASES and
                --config.data.coco_files.train="('PSEUDO.json', 'train')" (relative to the folder).
  freeze        with pretrain: "DAP-Freeze" (Table 3), the backbone frozen during pre-training.
  voc           step 4 on the VOC-like canvases (--config.data.path=CANVASES_VOC; 10 classes);
  bccd          step 4 on BCCD (3 cell classes; BCCD_DIR or --config.data.path) at 256 x 256.
  lite0         with voc / bccd: the detector of configs/canvases/detector.py:lite0 (the packaged
                ImageNet EfficientNet-Lite0 backbone, two-FC box head) instead of the narrow
                ResNet-18 (the target of the PreDet project, frozen_det/projects/predet).
Step 4 fine-tunes as the paper does (sec. 4.1): BatchNorm on its stored statistics and the stem
(the "first conv block") frozen (not with lite0: PreDet's target, fine-tuned whole as its paper
does). It starts from any run: --config.train.init_from=RUN restores what has the same path and
shape, except the class-specific layers (box classifier and class-specific box regression,
which the paper re-initialises); a classifier run gives the CLS row (backbone only), a DAP run
the DAP rows (backbone, FPN, RPN, box head). k-shot targets: --config.data.kshot=K. Learning
curves (Fig. 5): AP every `train.eval_every` steps (WORKDIR/eval/<split>_step<N>.json).

    python -m frozen_det.train --config configs/dap/detector.py:pretrain --workdir runs/dap \\
        --config.data.path=/tmp/canvases_imagenet --config.train.init_from=runs/dap_cls \\
        --config.data.coco_files.train="('pseudo_boxes.json', 'train')"
    python -m frozen_det.train --config configs/dap/detector.py:voc --workdir runs/voc_5shot_dap \\
        --config.data.path=/tmp/canvases_voc --config.data.kshot=5 --config.train.init_from=runs/dap
"""

from configs.canvases import detector as canvases_detector
from configs.data import bccd as bccd_data
from frozen_det import config_defaults as d

# The layers whose shape depends on the classes (DAP sec. 3.1 step 4: not transferred).
CLASS_SPECIFIC = (r"/(class_logits|box_deltas)/",)
# Pre-training's shorter sides: the paper's 96 / 160 / 320 / 640 (sec. 4.1) times 128 / 640.
PAPER_SHORT_SIDES = (96, 160, 320, 640)


def get_config(arg=None):
    tokens = set(filter(None, (arg or "pretrain").split(",")))
    stages = tokens & {"pretrain", "voc", "bccd"}
    if (
        len(stages) != 1
        or tokens - {"pretrain", "voc", "bccd", "freeze", "lite0"}
        or ("freeze" in tokens and stages != {"pretrain"})
        or ("lite0" in tokens and stages == {"pretrain"})
    ):
        raise ValueError(
            f"configs/dap/detector.py argument {arg!r}: one of pretrain[,freeze] (default) / voc[,lite0] / bccd[,lite0]"
        )
    (stage,) = stages
    config = canvases_detector.get_config("lite0" if "lite0" in tokens else None)
    if stage == "pretrain":
        config.data.update(path="", eval_split="val")
        scale = config.data.canvas / max(PAPER_SHORT_SIDES)
        config.data.augment.short_sides = tuple(round(side * scale) for side in PAPER_SHORT_SIDES)
        config.train.update(total_steps=1500, eval_every=500)
        if "freeze" in tokens:
            config.model.backbone.freeze = "all"
        return d.complete(config)
    # Step 4: a short low-data schedule, evaluated along the way for the learning curves.
    config.train.update(total_steps=400, eval_every=100, checkpoint_every=400, init_exclude=CLASS_SPECIFIC)
    config.train.schedule.update(warmup_steps=50)
    if "lite0" not in tokens:  # the PreDet project's target fine-tunes as its paper does
        config.model.backbone.update(freeze="0", bn_mode="frozen_stats")
    if stage == "bccd":
        bccd = bccd_data.get_config().data
        config.model.num_classes = 4
        config.data.update(
            source="voc_folder",
            path=bccd.path,
            train_split=bccd.train_split,
            eval_split=bccd.eval_split,
            class_names=bccd.class_names,
            canvas=256,
            max_instances=64,
            eval_batch_size=24,
            with_masks=False,
        )
        config.data.augment.update(scale_min=0.5, scale_max=1.5)
    return d.complete(config)
