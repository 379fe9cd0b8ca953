"""DAP at paper scale (Zhong et al., "DAP: Detection-Aware Pre-training with Weak Supervision",
CVPR 2021, sec. 4.1), ImageNet-1k ("IN-1M") from TFDS, on a TPU pod slice or a GPU host. The
miniature of the same steps is configs/dap/ and `python -m frozen_det.projects.dap`.

Argument tokens (one step; docs/scaling.md has the commands in order):
  classifier  step 1: ResNet-50 on imagenet2012 (TFDS; its manual download), 90 epochs at
              batch 1024, lr 0.4 dropped x0.1 at epochs 30 / 60 / 80 (torchvision's recipe
              scaled linearly: the paper starts from torchvision's pretrained ResNet-50,
              which `tools/convert_checkpoint.py --format torchvision_resnet` converts instead)
  pretrain    step 3: Faster R-CNN FPN ResNet-50 on the pseudo-boxes of step 2 (`python -m
              frozen_det.pseudo_boxes --tfds imagenet2012:train --labels dataset ...`, read
              through data.source="tfds_pseudo_boxes"), batch 32, 40,038 iterations, shorter
              side one of 96 / 160 / 320 / 640 (longer side <= 1024: the canvas; the paper's
              maskrcnn-benchmark caps it at 1000), backbone from the classifier
              (--config.train.init_from=CLASSIFIER_RUN). The paper gives no learning rate or
              decay for it: 0.04 (maskrcnn-benchmark's 0.02 at batch 16 scaled to 32), x0.1 at
              2/3 and 8/9 of the iterations (its 1x schedule's 60k / 80k of 90k): ours to choose.
  freeze      with pretrain: DAP-Freeze (Table 3), the backbone frozen.
  voc07       step 4 on VOC 2007 trainval, tested on VOC 2007 test: 14 epochs at batch 16 (4,385
              iterations; the paper: "4.5K steps"), lr 0.01 -> 0.001 at the 10th epoch, shorter
              side 640.
  voc0712     step 4 on VOC 2007 + 2012 trainval (one union split), tested on VOC 2007 test:
              14 epochs at batch 16 (14,482 iterations; the paper's "4.5K steps" fits VOC 2007
              alone), lr drop at the 10th epoch.
  coco        step 4 on COCO 2017: 90k iterations at batch 16, lr 0.02 dropped x0.1 at 60k and
              80k, shorter side 800 (canvas 1344).
Every step-4 config fine-tunes as the paper does (sec. 4.1): BatchNorm on its stored statistics,
the stem (the "first conv block") frozen, weight decay 1e-4; starts from any run with
--config.train.transfer=frozen@0,from=RUN (the CLS row: the classifier; the DAP row: the
pretrain run); low-data rows add --config.data.kshot=K and tune the iterations (the paper
early-stops: run with --config.train.eval_every and take the best, sec. 4.2).

Expected cost (python -m frozen_det.resources on these configs; FLOPs from XLA's cost analysis,
hours at 30% of a chip's bf16 peak, not a measured run): docs/scaling.md.
"""

from frozen_det import config_defaults as d
from frozen_det.data.detection import config as detection_data

STEPS = ("classifier", "pretrain", "voc07", "voc0712", "coco")
IMAGENET_TRAIN = 1_281_167
TORCHVISION_R50 = "weights/resnet50_tv"  # tools/convert_checkpoint.py --format torchvision_resnet --depth 50


def get_config(arg=None):
    tokens = set(filter(None, (arg or "pretrain").split(",")))
    steps = tokens & set(STEPS)
    if len(steps) != 1 or tokens - set(STEPS) - {"freeze"} or ("freeze" in tokens and steps != {"pretrain"}):
        raise ValueError(f"frozen_det/projects/dap/paper.py argument {arg!r}: one of {STEPS} (pretrain[,freeze])")
    (step,) = steps
    if step == "classifier":
        return _classifier()
    return _detector(step, freeze="freeze" in tokens)


def _classifier():
    config = d.ConfigDict()
    config.model = d.ConfigDict(
        dict(type="classifier", num_classes=1000, backbone=dict(type="resnet", depth=50, bn_momentum=0.9))
    )
    config.data = d.ConfigDict(
        dict(source="tfds", name="imagenet2012", train_split="train", eval_split="validation", image_size=224)
    )
    epoch = IMAGENET_TRAIN / 1024
    config.train = d.train(
        batch_size=1024,
        total_steps=round(90 * epoch),
        boundaries=tuple(round(e * epoch) for e in (30, 60, 80)),
        base_lr=0.4,
        warmup_steps=round(5 * epoch),
        weight_decay=1e-4,
    )
    config.train.update(eval_every=round(10 * epoch), checkpoint_every=2000)
    return d.complete(config)


def _detector(step: str, freeze: bool):
    classes = {"pretrain": 1001, "voc07": 21, "voc0712": 21, "coco": d.COCO_CLASSES}[step]  # background included
    config = d.ConfigDict()
    config.model = d.torchvision_faster_rcnn_r50_fpn(num_classes=classes)
    config.model.backbone.init_checkpoint = TORCHVISION_R50
    if step == "pretrain":
        config.model.backbone.freeze = "all" if freeze else "none"
        config.data = detection_data.complete(
            dict(
                source="tfds_pseudo_boxes",
                name="imagenet2012",
                coco_files=dict(train=("imagenet_pseudo_boxes.json", "train")),
                train_split="train",
                eval_split="train",
                canvas=1024,
                augment=dict(short_sides=(96, 160, 320, 640)),
            )
        )
        config.train = d.train(
            batch_size=32, total_steps=40_038, boundaries=(26_692, 35_589), base_lr=0.04, warmup_steps=500
        )
        config.train.update(eval_every=0, checkpoint_every=2000)
        return d.complete(config)
    # Step 4: fixed BatchNorm and the stem frozen in every fine-tuning row (sec. 4.1).
    config.model.backbone.update(freeze="0", bn_mode="frozen_stats")
    if step == "coco":
        config.data = d.coco_data(canvas=1344)
        config.data.augment.short_sides = (800,)
        schedule = dict(total_steps=90_000, boundaries=(60_000, 80_000), base_lr=0.02)
    else:
        union = step == "voc0712"
        config.data = detection_data.complete(
            dict(
                source="tfds",
                name="voc/2007+voc/2012" if union else "voc/2007",
                train_split="train+validation",
                eval_split="voc/2007:test" if union else "test",
                canvas=1024,
                augment=dict(short_sides=(640,)),
            )
        )
        epoch = (16_551 if union else 5_011) / 16  # trainval images per epoch at batch 16
        schedule = dict(total_steps=round(14 * epoch), boundaries=(round(10 * epoch),), base_lr=0.01)
    config.train = d.train(batch_size=16, warmup_steps=500, weight_decay=1e-4, **schedule)
    return d.complete(config)
