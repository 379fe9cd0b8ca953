"""The target rows of the detection pre-training project, a config file as configs/ has them (the
runner loads it as ``frozen_det/projects/detection_pretraining/config.py:ARG``; it reads the
clone's configs/):

  bccd[,adapters]         BCCD detection: the quick start's Lite0 Faster R-CNN at 256 x 256
                          (configs/quickstart.py's BCCD detector, 700 steps), the backbone fine-tuned (or frozen
                          with residual adapters), checkpoints every 100 steps (the weight drift);
  TARGET,TAP,probe        a linear probe (frozen features, only the new layer trains) on TAP of
                          the DET detector (configs/canvases/detector.py:lite0);
  TARGET,conv5,finetune   a classifier on its Conv5, everything trained, with little data;

TARGET: bccd (BCCD cell crops, configs/classification/bccd_crops.py: every training crop for a
probe, 5 per class and 300 steps fine-tuned) or fmnist (Fashion-MNIST at 64 x 64: 800 steps for
a probe, 100 images per class and 400 steps fine-tuned); TAP: conv5 (pooled C5), conv_proj (the
whole-image box's RoI map the box head's first FC reads, flattened), conv_proj_4 / _2 / _1
(that map pooled), fc1, fc2. The classifier's starting weights are the row's: the packaged
ImageNet Lite0 (CLS), or the DET run (``train.init_from``).
"""

from configs import quickstart
from configs.canvases import detector as canvases_detector
from configs.classification import bccd_crops, fashion_mnist
from configs.data import bccd as bccd_data
from frozen_det import config_defaults as d

LITE0 = "package:efficientnet_lite0"
TARGETS = ("bccd", "fmnist")


def bccd_detection(adapters: bool):
    """configs/quickstart.py:voc=BCCD,classes=Platelets/RBC/WBC,canvas=256 without reading the
    folder (the classes are BCCD's three)."""
    bccd = bccd_data.get_config().data
    config = quickstart.get_config()
    config.data.update(
        source="voc_folder",
        path=bccd.path,
        class_names=bccd.class_names,
        canvas=256,
        max_instances=100,
        train_split=bccd.train_split,
        eval_split=bccd.eval_split,
    )
    config.model.num_classes = len(bccd.class_names) + 1
    d.apply_strategy(config.model, "adapters" if adapters else "finetune", LITE0)
    # A trained backbone's BatchNorm must track the target's statistics within 700 steps.
    config.model.backbone.bn_momentum = 0.9
    # The schedule the study's records were made with (the quick start itself now stops at 300).
    config.train.update(total_steps=700, checkpoint_every=100, keep_checkpoints=8)
    config.train.schedule.boundaries = (600,)
    return d.complete(config)


def classifier(target: str, tap: str, strategy: str):
    if target == "bccd":
        config = bccd_crops.get_config("linear_probe" if strategy == "probe" else "finetune")
        if strategy == "finetune":
            config.data.subset.images_per_class = 5
            config.train.total_steps = 300
    else:
        config = fashion_mnist.get_config("steps=800" if strategy == "probe" else "steps=400")
        config.data.update(image_size=64, mean=(127.0,) * 3, std=(128.0,) * 3)
        if strategy == "finetune":
            config.data.subset.images_per_class = 100
            config.train.batch_size = 32
            config.train.schedule.base_lr = 0.05
    config.model = dict(
        type="classifier",
        num_classes=int(config.model.num_classes),
        features=tap,
        detector=canvases_detector.get_config("lite0").model,
        frozen_features=strategy == "probe",
    )
    if strategy == "probe":
        config.train.update(trainable_only=("^tap_classifier/",), weight_decay=0.0)
        config.train.schedule.base_lr = 0.1
    else:
        config.train.trainable_only = ()
    return d.complete(config)


def get_config(arg=None):
    tokens = [t for t in (arg or "").split(",") if t]
    if tokens in (["bccd"], ["bccd", "adapters"]):
        return bccd_detection(adapters="adapters" in tokens)
    if len(tokens) == 3 and tokens[0] in TARGETS and tokens[2] in ("probe", "finetune"):
        return classifier(*tokens)  # the classifier's schema checks TAP
    raise ValueError(
        f"frozen_det/projects/detection_pretraining/config.py argument {arg!r}: bccd[,adapters], "
        f"TARGET,TAP,probe or TARGET,conv5,finetune (TARGET: {' or '.join(TARGETS)})"
    )
