"""Detection pre-training vs classification pre-training, in miniature on offline data (the
pattern of Li et al., "An analysis of pre-training on object detection", and of Vasconcelos et
al. 2022 sec. 3 for the weight drift):

* CLS: the packaged ImageNet EfficientNet-Lite0. DET: the same network after detection
  pre-training, fine-tuned as the backbone of a Faster R-CNN on a larger set of VOC-like
  canvases of Fashion-MNIST items (configs/canvases/detector.py:lite0, data from
  frozen_det.data.offline.canvases);
* detection target (Table 2 / Fig. 1): BCCD at 256 x 256 (configs/quickstart.py's BCCD
  detector, backbone fine-tuned), from CLS and from DET (only the backbone transferred: the
  paper re-initialises the detection heads), AP at IoU 0.1 ... 0.9; plus a frozen + adapters
  row, and the weight drift of these runs' backbones over training;
* classification targets (Tables 5-7): BCCD cell crops (configs/classification/bccd_crops.py)
  and Fashion-MNIST at 64 x 64 (configs/classification/fashion_mnist.py), by a linear probe on
  each tap of the DET detector (Conv5, the whole-image box's ConvProj map flattened and pooled
  to 4x4 / 2x2 / 1x1, FC1, FC2) and on CLS's Conv5, and by fine-tuning from Conv5 (BCCD with
  5 crops per class, Fashion-MNIST with 100 images per class).

Two seeds (train.seed and data.seed) for the detection rows, the fine-tuning rows and the
Conv5 probes, one for the other taps.

    python tools/detection_pretraining_study.py                  # every row; table in ROOT
    python tools/detection_pretraining_study.py --rows bccd/cls/s0,bccd/det/s0
    python tools/detection_pretraining_study.py --table_only

Each row trains into ROOT/<row name> (frozen_det.training.loop.train_and_evaluate, then the
evaluate entry point's API) and is read back when its final evaluation exists, so the study
resumes where it stopped; rows that transfer from DET run the pre-training first. Writes
ROOT/results.md, ROOT/results.json, ROOT/ap_vs_iou.png (tools/ap_vs_iou_plot.py) and
ROOT/drift.png (tools/weight_drift.py). BCCD comes from BCCD_DIR or datasets/bccd
(configs/data/bccd.py); Fashion-MNIST from the Debian package dataset-fashion-mnist.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_common import (  # noqa: E402
    chosen_rows,
    ensure_canvases,
    final_eval,
    read_json,
    repo_config,
    seed_cell,
    set_fields,
    study_arguments,
    train_row,
    train_seconds,
    write_results,
)

PRETRAIN = "det_pretrain"
LITE0 = "package:efficientnet_lite0"
SEEDS = (0, 1)
TAPS = ("conv5", "conv_proj", "conv_proj_4", "conv_proj_2", "conv_proj_1", "fc1", "fc2")
THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))
# Li et al. (2019) re-initialise the detection heads of a DET pre-trained model before fine-tuning:
# only the backbone (parameters and BatchNorm statistics) is transferred.
HEADS = (r"^\w+/(?!backbone/)",)
PRETRAIN_STEPS = 3000  # batch 8: four epochs of the 6,000 training canvases


def _complete(config):
    from frozen_det import config as config_lib

    return config_lib.complete(config)


def pretrain_config(canvases: str):
    config = repo_config("configs/canvases/detector.py:lite0")
    set_fields(config, {"data.path": canvases, "train.total_steps": PRETRAIN_STEPS, "train.schedule.warmup_steps": 200})
    return config


def bccd_detection_config(strategy: str):
    """The quick start's BCCD detector at 256 x 256 (700 steps), with the backbone fine-tuned
    (`cls`, `det`) or frozen with adapters (`adapters`); checkpoints every 100 steps for the drift."""
    from frozen_det import config_defaults as d

    bccd = repo_config("configs/data/bccd.py").data.path
    config = repo_config(f"configs/quickstart.py:voc={bccd},classes=Platelets/RBC/WBC,canvas=256")
    d.apply_strategy(config.model, "adapters" if strategy == "adapters" else "finetune", LITE0)
    # A trained backbone's BatchNorm must track the target's statistics within 700 steps.
    config.model.backbone.bn_momentum = 0.9
    config.train.update(checkpoint_every=100, keep_checkpoints=8)
    return _complete(config)


def classification_config(target: str, tap: str, strategy: str, detector_model):
    """A classifier on `tap` of a detector whose model config is `detector_model` (Lite0
    backbone): a linear probe (`probe`: frozen features, only the new layer trains) or fine-tuning
    (`finetune`: everything trains), on BCCD crops or Fashion-MNIST at 64 x 64."""
    if target == "bccd":
        config = repo_config("configs/classification/bccd_crops.py:" + strategy.replace("probe", "linear_probe"))
        if strategy == "finetune":
            set_fields(config, {"data.subset.images_per_class": 5, "train.total_steps": 300})
    else:
        config = repo_config(
            "configs/classification/fashion_mnist.py:" + ("steps=800" if strategy == "probe" else "steps=400")
        )
        set_fields(config, {"data.image_size": 64, "data.mean": (127.0,) * 3, "data.std": (128.0,) * 3})
        if strategy == "finetune":
            set_fields(
                config, {"data.subset.images_per_class": 100, "train.batch_size": 32, "train.schedule.base_lr": 0.05}
            )
    num_classes = int(config.model.num_classes)
    config.model = dict(
        type="classifier",
        num_classes=num_classes,
        features=tap,
        detector=detector_model,
        frozen_features=strategy == "probe",
    )
    if strategy == "probe":
        config.train.update(trainable_only=("^tap_classifier/",), weight_decay=0.0)
        config.train.schedule.base_lr = 0.1
    else:
        config.train.trainable_only = ()
    return _complete(config)


def _rows() -> dict:
    """row name -> (target, metric keys, seed, init: 'cls' or 'det', builder(canvases) -> config)."""
    det_metrics = ("AP", "AP50", "AP75")
    crops_metrics = ("mean_per_class_accuracy", "top1")
    rows = {PRETRAIN: ("VOC-like canvases (DET pre-training)", det_metrics, 0, "cls", pretrain_config)}
    detector = lambda canvases: pretrain_config(canvases).model  # noqa: E731
    for seed in SEEDS:
        for init in ("cls", "det") + (("adapters",) if seed == 0 else ()):
            rows[f"bccd/{init}/s{seed}"] = (
                "BCCD detection",
                det_metrics,
                seed,
                "det" if init == "det" else "cls",
                lambda canvases, init=init: bccd_detection_config(init),
            )
        for target, metrics in (("bccd", crops_metrics), ("fmnist", ("top1",))):
            name = "BCCD crops" if target == "bccd" else "Fashion-MNIST"
            taps = [("cls", "conv5")] + [("det", t) for t in (TAPS if seed == 0 else ("conv5",))]
            for init, tap in taps:
                rows[f"probe/{target}/{init}_{tap}/s{seed}"] = (
                    f"{name}, linear probe",
                    metrics,
                    seed,
                    init,
                    lambda canvases, target=target, tap=tap: classification_config(
                        target, tap, "probe", detector(canvases)
                    ),
                )
            for init in ("cls", "det"):
                rows[f"finetune/{target}/{init}/s{seed}"] = (
                    f"{name}, fine-tuned from Conv5 ({'5' if target == 'bccd' else '100'} per class)",
                    metrics,
                    seed,
                    init,
                    lambda canvases, target=target: classification_config(
                        target, "conv5", "finetune", detector(canvases)
                    ),
                )
    return rows


ROWS = _rows()


def load_config(name: str, root: str, canvases: str):
    _, _, seed, init, build = ROWS[name]
    config = build(canvases)
    config.train.seed = seed
    config.data.seed = seed
    if init == "det" and name != PRETRAIN:
        config.train.init_from = os.path.join(root, PRETRAIN)
        if config.model.type == "two_stage":  # a classifier on a tap reads the DET neck and heads
            config.train.init_exclude = HEADS
    return config


def run(name: str, root: str, canvases: str) -> None:
    workdir = os.path.join(root, name)
    config = load_config(name, root, canvases)
    if final_eval(workdir, config) is not None:
        return
    if config.train.init_from:
        run(PRETRAIN, root, canvases)
    detection = config.model.type == "two_stage"
    train_row(name, workdir, config, iou_thresholds=THRESHOLDS if detection else None)


# --- the tables -----------------------------------------------------------------------------


def collect(root: str, canvases: str) -> list[dict]:
    out = []
    for name, (target, metrics, seed, init, _) in ROWS.items():
        workdir = os.path.join(root, name)
        config = load_config(name, root, canvases)
        result = final_eval(workdir, config)
        row = {"row": name, "target": target, "seed": seed, "init": init, "status": "pending"}
        if result is not None:
            row.update(status="done", train_seconds=train_seconds(workdir), **{m: result[m] for m in metrics})
            curve = read_json(
                os.path.join(workdir, "eval", f"{config.data.eval_split}_step{config.train.total_steps}_ap_vs_iou.json")
            )
            if curve:
                row["ap_vs_iou"] = curve
        out.append(row)
    return out


def _settings(rows: list[dict]) -> dict:
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["row"].rsplit("/s", 1)[0], []).append(r)
    return groups


def markdown(rows: list[dict]) -> str:
    groups = _settings(rows)
    lines = ["### Detection (BCCD test, COCO AP at each IoU threshold; mean ± std over seeds)", ""]
    lines += ["| backbone start | " + " | ".join(f"{t:.1f}" for t in THRESHOLDS) + " | AP | train min |"]
    lines += ["|---" * (len(THRESHOLDS) + 3) + "|"]
    for setting in ("bccd/cls", "bccd/det", "bccd/adapters"):
        members = groups.get(setting, [])
        done = [m for m in members if m["status"] == "done" and "ap_vs_iou" in m]
        cells = [seed_cell([m["ap_vs_iou"]["coco_AP"][i] for m in done], len(members)) for i in range(len(THRESHOLDS))]
        minutes = np.mean([m["train_seconds"] or 0 for m in done]) / 60 if done else 0
        ap = seed_cell([m["AP"] for m in done], len(members))
        lines.append(f"| {setting.split('/')[1]} | " + " | ".join(cells) + f" | {ap} | {minutes:.1f} |")
    pre = groups[PRETRAIN][0]
    if pre["status"] == "done":
        lines += [
            "",
            f"DET pre-training on the canvases: AP {pre['AP']:.3f}, AP50 {pre['AP50']:.3f} "
            f"({pre['train_seconds'] / 60:.1f} min).",
        ]
    lines += ["", "### Classification from each tap (linear probe; fine-tuning from Conv5)", ""]
    lines += ["| features | BCCD crops mean per-class acc. | Fashion-MNIST top-1 |", "|---|---|---|"]
    for label, key in [("CLS Conv5", "cls_conv5")] + [(f"DET {t}", f"det_{t}") for t in TAPS]:
        cells = []
        for target, metric in (("bccd", "mean_per_class_accuracy"), ("fmnist", "top1")):
            members = groups.get(f"probe/{target}/{key}", [])
            cells.append(seed_cell([m[metric] for m in members if m["status"] == "done"], len(members)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for init in ("cls", "det"):
        cells = []
        for target, metric in (("bccd", "mean_per_class_accuracy"), ("fmnist", "top1")):
            members = groups.get(f"finetune/{target}/{init}", [])
            cells.append(seed_cell([m[metric] for m in members if m["status"] == "done"], len(members)))
        lines.append(f"| {init.upper()}, fine-tuned | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figures(root: str) -> None:
    """AP vs IoU of the seed-0 detection rows and the weight drift of their backbones."""
    import ap_vs_iou_plot
    import weight_drift

    runs = {init: os.path.join(root, f"bccd/{init}/s0") for init in ("cls", "det", "adapters")}
    have_curve = {k: v for k, v in runs.items() if os.path.isdir(os.path.join(v, "eval"))}
    if len(have_curve) >= 2:
        spec = ",".join(f"{k}={v}" for k, v in have_curve.items())
        ap_vs_iou_plot.main(["--runs", spec, "--output", os.path.join(root, "ap_vs_iou.png")])
        names = {"cls": "fine-tune from CLS", "det": "fine-tune from DET", "adapters": "adapters (frozen CLS)"}
        spec = ",".join(f"{names[k]}={v}" for k, v in have_curve.items())
        weight_drift.main(["--runs", spec, "--output", os.path.join(root, "drift.png")])


def main(argv=None) -> None:
    rows_help = f"comma-separated rows (default all): {','.join(ROWS)}"
    args = study_arguments(__doc__, "/tmp/detection_pretraining_study", rows_help, canvases=True).parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from frozen_det.runtime import quiet_tensorflow

    quiet_tensorflow()
    canvases = args.canvases or os.path.join(args.root, "canvases_voc")
    chosen = chosen_rows(args.rows, list(ROWS))
    if not args.table_only:
        ensure_canvases(canvases, "voc", num_train=6000, num_val=500, seed=1)
        for name in chosen:
            if args.force:
                shutil.rmtree(os.path.join(args.root, name), ignore_errors=True)
            run(name, args.root, canvases)
    rows = collect(args.root, canvases)
    table = markdown(rows)
    write_results(args.root, table, rows)
    figures(args.root)


if __name__ == "__main__":
    main()
