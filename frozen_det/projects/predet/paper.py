"""PreDet at paper scale (Ramanathan et al., "PreDet: Large-scale weakly supervised pre-training
for detection", ICCV 2021, sec. 4.1-4.2) with ImageNet-1k from TFDS, on a TPU pod slice or a
GPU host. The miniature of the same steps is configs/predet/ and `python -m
frozen_det.projects.predet`.

Argument tokens (one step; docs/scaling.md has the commands in order):
  pretrain    Faster R-CNN R50-FPN layers pre-trained with L = L_cls + L_det (the multi-label
              classification loss on ImageNet's labels always on, with CRPN, InfoNCE and the
              CROI regression) on two 480 x 480 views of imagenet2012's training images,
              16 queries per image drawn from cached unsupervised proposals
              (`python -m frozen_det.data.two_view.cache_proposals`: our selective search in
              place of EdgeBoxes), |P_neg| 512, batch 1024, 540k iterations, lr 0.2 reduced
              x0.1 in four uniform steps (sec. 4.1). The paper states no initialisation: from
              scratch (random backbone), our reading.
  cls         the same images, views and schedule with L_cls alone (the paper's
              classification-only comparison on the same images and hyper-parameters).
  coco        Mask R-CNN R50-FPN fine-tuned on COCO 2017, 1x: 90k iterations at batch 16, lr
              0.02 dropped x0.1 at 60k and 80k (the paper grid-searches the rate and decay per
              method; 0.02 is detectron2's), the mask head's lr x4 (sec. 4.2), no layer frozen,
              shorter side one of 640 ... 800 at random (canvas 1344), flip.
  voc0712     Faster R-CNN R50-FPN on VOC 2007 + 2012 trainval, tested on VOC 2007 test: 24k
              iterations at batch 16, lr 0.02 dropped x0.1 at 18k and 22k (sec. 4.2).
Fine-tuning starts from the pre-training run: --config.train.transfer=finetune,from=RUN (every
layer with the same path and shape; the class-specific layers fresh).

Expected cost (python -m frozen_det.resources on these configs; FLOPs from XLA's cost analysis,
hours at 30% of a chip's bf16 peak, not a measured run): docs/scaling.md.
"""

from frozen_det import config_defaults as d
from frozen_det.data.detection import config as detection_data

STEPS = ("pretrain", "cls", "coco", "voc0712")
ITERATIONS = 540_000
# The mask head's parameters (frozen_det.models.detector: `mask_head`), lr x4 (sec. 4.2).
MASK_HEAD_LR = ((r"^mask_head/", 4.0),)


def get_config(arg=None):
    tokens = set(filter(None, (arg or "pretrain").split(",")))
    if len(tokens) != 1 or tokens - set(STEPS):
        raise ValueError(f"frozen_det/projects/predet/paper.py argument {arg!r}: one of {STEPS}")
    (step,) = tokens
    if step in ("pretrain", "cls"):
        return _pretrain(classification_only=step == "cls")
    return _finetune(step)


def _detector(num_classes: int, mask: bool = False):
    model = d.torchvision_faster_rcnn_r50_fpn(num_classes=num_classes)
    model.mask.enabled = mask
    return model


def _pretrain(classification_only: bool):
    losses = dict(crpn=True, croi=True, croi_regression=True, multilabel=True)
    if classification_only:
        losses = dict(crpn=False, croi=False, croi_regression=False, multilabel=True)
    config = d.ConfigDict()
    config.model = d.predet_model(
        _detector(num_classes=81), num_queries=16, num_negatives=512, num_labels=1000, **losses
    )
    config.data = d.ConfigDict(
        dict(
            source="tfds",
            name="imagenet2012",
            labels=True,
            train_split="train",
            eval_split="validation",
            image_size=480,
            queries="proposals",
            proposals_file="imagenet_proposals.npz",
        )
    )
    config.train = d.train(
        batch_size=1024,
        total_steps=ITERATIONS,
        boundaries=tuple(ITERATIONS * k // 5 for k in (1, 2, 3, 4)),
        base_lr=0.2,
        warmup_steps=2000,
    )
    config.train.update(eval_every=0, checkpoint_every=5000)
    return d.complete(config)


def _finetune(step: str):
    config = d.ConfigDict()
    if step == "coco":
        config.model = _detector(num_classes=d.COCO_CLASSES, mask=True)
        config.data = d.coco_data(canvas=1344, with_masks=True)
        config.data.augment.short_sides = (640, 672, 704, 736, 768, 800)
        schedule = dict(total_steps=90_000, boundaries=(60_000, 80_000), lr_multipliers=MASK_HEAD_LR)
    else:
        config.model = _detector(num_classes=21)
        config.data = detection_data.complete(
            dict(
                source="tfds",
                name="voc/2007+voc/2012",
                train_split="train+validation",
                eval_split="voc/2007:test",
                canvas=1344,
                augment=dict(short_sides=(640, 672, 704, 736, 768, 800)),
            )
        )
        schedule = dict(total_steps=24_000, boundaries=(18_000, 22_000))
    config.train = d.train(batch_size=16, base_lr=0.02, warmup_steps=1000, eval_every=10_000, **schedule)
    return d.complete(config)
