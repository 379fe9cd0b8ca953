"""The LVIS recipe (Vasconcelos et al. 2022 sec. 4.3) end to end on the generated long-tailed shapes
(frozen_det.data.offline.long_tail: 20 classes, 3 frequent / 5 common / 12 rare), on a CPU in minutes:
first stage with the ordinary softmax loss, second stage re-training only the classifier's
final layer class-balanced, LVIS evaluation (federated rules, APr / APc / APf) after each.

    python -m frozen_det.data.offline.long_tail --output /tmp/long_tail
    python -m frozen_det.train --config configs/lvis/long_tail.py:stage1,frozen --workdir /tmp/lt_frozen \
        --config.data.path=/tmp/long_tail
    python -m frozen_det.train --config configs/lvis/long_tail.py:stage2,frozen --workdir /tmp/lt_frozen_s2 \
        --config.data.path=/tmp/long_tail --config.train.init_from=/tmp/lt_frozen
    python tools/lvis_stratified.py --runs finetune=/tmp/lt_finetune,frozen=/tmp/lt_frozen ...

Argument tokens: stage1 | stage2; strategy frozen | finetune | scratch | adapters; backbone
lite0 (the packaged ImageNet EfficientNet-Lite0) | tiny (ResNet-18, for tests); second-stage
balance loss (effective-number weights) | sampling (repeat factors, power 1).
"""

from frozen_det import config_defaults as d

LITE0 = "package:efficientnet_lite0"


def get_config(arg=None):
    args = d.parse_arg(
        arg,
        stage=("stage1", ("stage1", "stage2")),
        strategy=("frozen", d.STRATEGIES),
        backbone=("lite0", ("lite0", "tiny")),
        balance=("loss", ("loss", "sampling")),
    )
    config = d.ConfigDict()
    model = d.tiny_two_stage_model(num_classes=21, mask=True)
    if args["backbone"] == "lite0":
        model.backbone = d.backbone(type="efficientnet", variant="lite0")
        model.neck.num_filters = 64
        model.rpn.num_filters = 64
        model.box_head.update(num_filters=64, fc_dims=256)
        model.mask.num_filters = 64
    d.apply_strategy(model, args["strategy"], LITE0 if args["backbone"] == "lite0" else "")
    model.detections.max_detections = 100
    config.model = model
    config.data = d.ConfigDict(
        dict(
            source="coco_folder",
            path="",
            train_split="train",
            eval_split="val",
            coco_files=dict(
                train=("annotations/lvis_v1_train.json", "train"), val=("annotations/lvis_v1_val.json", "val")
            ),
            canvas=128,
            max_instances=16,
            with_masks=True,
            mask_size=28,
            eval_metric="lvis",
            augment=dict(hflip=True, scale_min=0.5, scale_max=2.0),
        )
    )
    if args["backbone"] == "lite0":  # every Lite0 row (from scratch too) reads the input as its weights expect
        config.data.update(**d.normalisation_of(LITE0))
    config.train = d.train(
        batch_size=8, total_steps=1500, boundaries=(1200,), base_lr=0.04, warmup_steps=50, warmup_lr=0.004
    )
    config.train.grad_clip_norm = 10.0
    config.train.log_every = 50
    if args["stage"] == "stage2":
        d.second_stage(config, balance=args["balance"], total_steps=300, base_lr=0.01)
    return d.complete(config)
