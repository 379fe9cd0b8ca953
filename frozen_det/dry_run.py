"""A config run end to end in a few minutes on any machine, before it is launched on a pod: the
same code path (data pipeline, sharded train step, checkpoint, evaluation) with the sizes
shrunk and the data faked.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python -m frozen_det.dry_run --config frozen_det/projects/dap/paper.py:pretrain [--steps 2] [--workdir W]

What changes (`shrink`): the backbone becomes its family's smallest (ResNet-18 / ResNet-RS-50
at width 1/8, EfficientNet-B0 or -Lite0) without pretrained weights or a run to start from;
necks and heads 16 channels wide with few proposals, queries and negatives; canvases 128 pixels
(short-side lists scaled with them), classifier inputs 32, PreDet views 64; one image per device
per batch; `--steps` train steps (no decay), a checkpoint, then one evaluation. TFDS datasets
are replaced by `frozen_det.data.mock_tfds` examples with the same features (6 per split); a
pseudo-box file (data.source="tfds_pseudo_boxes") or a proposal cache (PreDet's queries) that
the config names is made for those examples, and a COCO folder source without a path (masks:
TFDS's COCO has none) gets a small COCO-layout folder with polygon masks. What does not change: the model's structure
(levels, cascade stages, masks, adapters, freezing, dtype, remat), the task, the losses, the
optimizer and its rules, the sharding over the devices.

Prints one JSON line: the final train metrics, the evaluation's, the devices and the seconds.
A config on a local folder that it names runs on that folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time

from absl import flags
from ml_collections import config_flags

from frozen_det.runtime import fail, prepare_entry_point, run_main

log = logging.getLogger("frozen_det.dry_run")

CANVAS, IMAGE_SIZE, VIEW_SIZE, WIDTH = 128, 32, 64, 16


def shrink(config, devices: int, steps: int = 2):
    """A copy of a complete config at dry-run size (module docstring)."""
    from frozen_det import config as config_lib

    c = config.copy_and_resolve_references()
    _shrink_model(c.model)
    if "detector" in c.model:  # a tap classifier's detector
        _shrink_model(c.model.detector)
    data = c.data
    if "canvas" in data:
        scale = CANVAS / data.canvas
        data.canvas = CANVAS
        data.augment.short_sides = tuple(max(8, round(side * scale)) for side in data.augment.short_sides)
        data.update(max_instances=8, mask_size=8)
    elif c.model.type == "predet":
        data.update(image_size=VIEW_SIZE, num_eval_examples=devices)
    else:
        data.image_size = IMAGE_SIZE
    data.update(batch_size=0, eval_batch_size=devices)
    t = c.train
    t.update(total_steps=steps, eval_every=0, eval_at_end=True, checkpoint_every=steps, log_every=1, init_from="")
    t.batch_size = devices
    t.schedule.update(boundaries=(), warmup_steps=0)
    t.transfer = ",".join(token for token in t.transfer.split(",") if not token.startswith("from="))
    return config_lib.complete(c)


def _shrink_model(m) -> None:
    b = m.backbone
    b.init_checkpoint = ""
    if b.type == "efficientnet":
        b.variant = "lite0" if str(b.variant).startswith("lite") else "b0"
    else:
        b.update(depth=18 if b.type == "resnet" else 50, width=0.125)
    if "neck" in m:
        m.neck.num_filters = WIDTH
        if m.neck.type == "nasfpn":
            m.neck.num_repeats = 1
    if "rpn" in m:
        m.rpn.update(
            num_filters=WIDTH,
            pre_nms_top_k_train=64,
            pre_nms_top_k_test=64,
            post_nms_top_k_train=32,
            post_nms_top_k_test=32,
            num_proposals_train=32,
            num_proposals_test=32,
        )
        m.roi.num_samples = 16
        m.box_head.update(num_filters=WIDTH, fc_dims=32)
        m.mask.update(num_filters=WIDTH, num_samples=8)
    if "head" in m:  # RetinaNet's subnets
        m.head.num_filters = WIDTH
    if "detections" in m:
        m.detections.update(pre_nms_top_k=64, max_detections=10)
    if "predet" in m:
        p = m.predet
        p.update(
            num_queries=min(p.num_queries, 4),
            num_negatives=16,
            crpn_dims=8,
            embedding_dims=16,
            regression_dims=8,
            crpn_batch_size_per_image=32,
            num_random_proposals=16,
        )


def fake_offline_files(config, directory: str) -> None:
    """The files a config reads besides its TFDS data, made for the mock examples: pseudo-boxes
    of its TFDS split (one box per image) or PreDet's proposal cache. Paths are set in `config`."""
    data = config.data
    if data.get("source") == "tfds_pseudo_boxes":
        from frozen_det.data.tfds import read_split, tfds_builder

        builder = tfds_builder(data.name, data.path)
        files = {}
        for split, (_, tfds_split) in data.coco_files.items():
            images, annotations = [], []
            for i, ex in enumerate(read_split(builder, tfds_split, with_tfds_id=True).as_numpy_iterator()):
                images.append({"id": i + 1, "file_name": ex["tfds_id"].decode(), "width": 64, "height": 48})
                annotations.append(
                    {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [8, 8, 32, 24], "area": 768, "score": 1}
                )
            path = os.path.join(directory, f"pseudo_boxes_{split}.json")
            categories = [{"id": k + 1, "name": f"class{k}"} for k in range(config.model.num_classes - 1)]
            with open(path, "w") as f:
                json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
            files[split] = (path, tfds_split)
        data.coco_files = files
    if data.get("source") == "coco_folder" and not data.path:
        data.path = directory
        data.coco_files = {}
        for split in dict.fromkeys((data.train_split, data.eval_split)):
            _fake_coco_split(directory, split)
    if data.get("queries") == "proposals":
        from frozen_det.data.two_view.cache_proposals import cache_run_proposals

        data.proposals_file = os.path.join(directory, "proposals.npz")
        cache_run_proposals(config, max_boxes=20, max_side=64)


def _fake_coco_split(root: str, split: str, num_images: int = 6) -> None:
    """A COCO release-layout split (annotations/instances_SPLIT.json, SPLIT/*.png) of random
    images with one or two rectangles each, their masks as polygons, COCO's 80 category ids."""
    import numpy as np
    from PIL import Image

    from frozen_det.data.detection.sources.tfds_source import COCO_CATEGORY_IDS

    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, split), exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        name = f"{i:06d}.png"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)).save(os.path.join(root, split, name))
        images.append({"id": i + 1, "file_name": name, "width": 64, "height": 48})
        for _ in range(1 + i % 2):
            x, y = (float(v) for v in rng.uniform(0, 24, 2))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.choice(COCO_CATEGORY_IDS)),
                    "bbox": [x, y, 32.0, 20.0],
                    "area": 640.0,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + 32, y, x + 32, y + 20, x, y + 20]],
                }
            )
    categories = [{"id": c, "name": f"category{c}"} for c in COCO_CATEGORY_IDS]
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def dry_run(config, workdir: str, steps: int = 2, mock: bool = True) -> dict:
    """`shrink`s `config`, fakes its TFDS data (`mock`) and trains and evaluates it in `workdir`.
    -> {"train": last train metrics, "eval": evaluation metrics, "devices", "seconds"}."""
    import jax

    from frozen_det.data.mock_tfds import mock_tfds
    from frozen_det.training.loop import train_and_evaluate

    start = time.perf_counter()
    config = shrink(config, jax.device_count(), steps)
    config.train.distributed = False
    with mock_tfds() if mock else contextlib.nullcontext():
        fake_offline_files(config, workdir)
        result = train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "train_metrics.jsonl")) as f:
        last = json.loads(f.read().splitlines()[-1])
    return {
        "train": last,
        "eval": result,
        "devices": jax.device_count(),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv):
    del argv
    F = flags.FLAGS
    if F.workdir and os.path.isdir(F.workdir) and os.listdir(F.workdir):
        fail(f"--workdir {F.workdir}: not empty; a dry run writes a run of its own: give a new or empty folder")
    workdir = F.workdir or tempfile.mkdtemp(prefix="dry_run_")
    report = dry_run(_CONFIG.value, workdir, F.steps, mock=not F.real_data)
    print(json.dumps(dict(report, workdir=workdir), default=float), flush=True)


if __name__ == "__main__":
    prepare_entry_point(sys.argv)  # before anything (the config file too) imports TensorFlow
    _CONFIG = config_flags.DEFINE_config_file("config", None, "The experiment config to try.")
    flags.DEFINE_string("workdir", "", "A new or empty folder for the dry run's run (default: a temporary one).")
    flags.DEFINE_integer("steps", 2, "Train steps.")
    flags.DEFINE_bool("real_data", False, "Read the config's TFDS data instead of fake examples.")
    flags.mark_flags_as_required(["config"])
    run_main(main)
