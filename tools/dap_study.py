"""DAP (Zhong et al., "DAP: Detection-Aware Pre-training with Weak Supervision", CVPR 2021) in
miniature on offline data:

1. CLS: a narrow ResNet-18 classifier on ImageNet-like canvases (one Fashion-MNIST class per
   image; configs/dap/classifier.py);
2. its class activation maps -> pseudo-boxes of the training canvases (the paper's text and the
   authors' released code, frozen_det.localization), scored against the canvases' hidden true
   boxes (CorLoc, box recall, precision) with the Tables A1 / A2 statistics; the packaged ImageNet
   EfficientNet-Lite0's CAMs of its own top-1 class on the validation canvases for comparison;
3. DAP: the Faster R-CNN of configs/dap/detector.py pre-trained on the pseudo-boxes (backbone
   from CLS), and DAP-Freeze (backbone frozen, Table 3); each also scored as a classifier
   (sec. 4.3) and against the true boxes;
4. k-shot fine-tuning (k = 5, 20) on VOC-like canvases and on BCCD from CLS (backbone only),
   DAP and DAP-Freeze (everything but the class-specific layers), two seeds (train.seed and
   data.seed: the k-shot subset too), AP every 100 steps (the learning curves of Fig. 5).

    python tools/dap_study.py                        # every row; ROOT/results.md, learning_curves.png
    python tools/dap_study.py --rows voc/5shot/dap/s0
    python tools/dap_study.py --table_only

Each step writes into ROOT and is skipped when its result exists, so the study resumes where it
stopped. BCCD comes from BCCD_DIR or datasets/bccd (configs/data/bccd.py); Fashion-MNIST from the
Debian package dataset-fashion-mnist.
"""

from __future__ import annotations

import collections
import importlib
import json
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
    learning_curve,
    read_json,
    repo_config,
    seed_cell,
    set_fields,
    study_arguments,
    train_row,
    train_seconds,
    write_json,
    write_results,
)

SEEDS = (0, 1)
KSHOTS = (5, 20)
TARGETS = {"voc": "VOC-like canvases", "bccd": "BCCD"}
INITS = {"cls": "CLS", "dap": "DAP", "dap_freeze": "DAP-Freeze"}
VARIANTS = ("paper", "released")
LITE0_IMAGES = 200  # validation canvases boxed by the ImageNet Lite0


def paths(root: str) -> dict:
    return {
        "imagenet": os.path.join(root, "canvases_imagenet"),
        "voc": os.path.join(root, "canvases_voc"),
        "cls": os.path.join(root, "cls"),
        "pseudo": os.path.join(root, "pseudo_boxes"),
    }


def ensure_study_canvases(root: str) -> None:
    p = paths(root)
    ensure_canvases(p["imagenet"], "imagenet", num_train=3000, num_val=500, seed=0)
    ensure_canvases(p["voc"], "voc", num_train=2000, num_val=300, seed=1)


def train_once(name: str, workdir: str, config) -> dict:
    return final_eval(workdir, config) or train_row(name, workdir, config)


# --- steps 1-2: the classifier and its pseudo-boxes -------------------------------------------


def classifier_config(root: str):
    config = repo_config("configs/dap/classifier.py")
    config.data.path = paths(root)["imagenet"]
    return config


def pseudo_box_file(root: str, variant: str) -> str:
    return os.path.join(paths(root)["pseudo"], f"{variant}_train.json")


def ensure_pseudo_boxes(root: str, variant: str) -> str:
    from frozen_det.localization.cam_boxes import PseudoBoxOptions
    from frozen_det.pseudo_boxes import load_cam_classifier, write_pseudo_boxes

    out = pseudo_box_file(root, variant)
    if not os.path.exists(out):
        config = classifier_config(root)
        train_once("cls", paths(root)["cls"], config)
        clf = load_cam_classifier(config, paths(root)["cls"])
        scales = importlib.import_module("configs.dap.classifier").CAM_SCALES
        images = paths(root)["imagenet"]
        labels = os.path.join(images, "annotations", "instances_train.json")
        write_pseudo_boxes(
            clf, os.path.join(images, "train"), out, PseudoBoxOptions(variant=variant, scales=scales), labels
        )
    return out


def ensure_lite0_boxes(root: str) -> str:
    """The packaged ImageNet Lite0's pseudo-boxes of its own top-1 class (the paper's scales)."""
    from frozen_det.localization.cam_boxes import PseudoBoxOptions
    from frozen_det.pseudo_boxes import load_cam_classifier, write_pseudo_boxes

    out = os.path.join(paths(root)["pseudo"], "lite0_val.json")
    if not os.path.exists(out):
        clf = load_cam_classifier(repo_config("configs/backbones/efficientnet_lite0_imagenet.py"))
        images = os.path.join(paths(root)["imagenet"], "val")
        write_pseudo_boxes(clf, images, out, PseudoBoxOptions(), max_images=LITE0_IMAGES)
    return out


def pseudo_box_quality(root: str) -> dict:
    from frozen_det.evaluation.localization import localisation_quality

    out = {}
    truth = {
        split: read_json(os.path.join(paths(root)["imagenet"], "annotations", f"instances_{split}.json"))
        for split in ("train", "val")
    }
    files = {v: (pseudo_box_file(root, v), "train") for v in VARIANTS}
    files["lite0"] = (os.path.join(paths(root)["pseudo"], "lite0_val.json"), "val")
    for name, (path, split) in files.items():
        pseudo = read_json(path)
        if pseudo is None:
            continue
        if name == "lite0":  # its classes are ImageNet's: localisation only, class-agnostic
            pseudo = dict(pseudo, annotations=[dict(a, category_id=0) for a in pseudo["annotations"]])
        counts = collections.Counter(a["image_id"] for a in truth[split]["annotations"])
        single = dict(pseudo, images=[im for im in pseudo["images"] if counts[im["id"]] == 1])
        out[name] = dict(
            localisation_quality(pseudo, truth[split]),
            single_object=localisation_quality(single, truth[split]),
            stats=pseudo["stats"],
        )
    return out


# --- step 3: DAP pre-training ------------------------------------------------------------------


def pretrain_name(variant: str, freeze: bool) -> str:
    return f"{'dap_freeze' if freeze else 'dap'}/{variant}"


def pretrain_config(root: str, variant: str, freeze: bool):
    config = repo_config("configs/dap/detector.py:" + ("pretrain,freeze" if freeze else "pretrain"))
    pseudo = pseudo_box_file(root, variant)
    set_fields(
        config,
        {
            "data.path": paths(root)["imagenet"],
            "train.init_from": paths(root)["cls"],
            "data.eval_batch_size": 50,
        },
    )
    config.data.coco_files = {"train": (pseudo, "train")}
    return config


def ensure_pretrained(root: str, variant: str, freeze: bool) -> str:
    name = pretrain_name(variant, freeze)
    workdir = os.path.join(root, name)
    config = pretrain_config(root, variant, freeze)
    if final_eval(workdir, config) is None:
        ensure_pseudo_boxes(root, variant)
        train_once("cls", paths(root)["cls"], classifier_config(root))
        train_row(name, workdir, config)
    as_classifier = os.path.join(workdir, "as_classifier.json")
    if not os.path.exists(as_classifier):
        write_json(as_classifier, detector_classification(config, workdir, root))
    return workdir


def detector_classification(config, workdir: str, root: str) -> dict:
    """Sec. 4.3: the pre-trained detector as a classifier of the validation canvases."""
    from frozen_det.evaluation.detector_as_classifier import detector_as_classifier, image_labels
    from frozen_det.training.run import Run

    with Run(workdir, config) as run:
        task, model, variables = run.task, run.model, run.variables()
    truth = read_json(os.path.join(paths(root)["imagenet"], "annotations", "instances_val.json"))
    keys = task.model_inputs(train=False) + ("image_id", "example_valid")
    return detector_as_classifier(
        task.detect_fn(model), variables, task.eval_pipeline(), keys, image_labels(truth), len(truth["categories"])
    )


# --- step 4: k-shot fine-tuning ----------------------------------------------------------------


def finetune_rows() -> list[str]:
    # The fewest shots first (where the paper's gains are largest), both seeds, then more shots.
    return [
        f"{target}/{k}shot/{init}/s{seed}" for k in KSHOTS for seed in SEEDS for target in TARGETS for init in INITS
    ]


def finetune_config(root: str, name: str):
    target, kshot, init, seed = name.split("/")
    config = repo_config(f"configs/dap/detector.py:{target}")
    overrides = {"data.kshot": int(kshot[: -len("shot")]), "train.seed": int(seed[1:]), "data.seed": int(seed[1:])}
    overrides["data.kshot_seed"] = int(seed[1:])
    overrides["train.init_from"] = (
        paths(root)["cls"] if init == "cls" else os.path.join(root, pretrain_name("paper", init == "dap_freeze"))
    )
    if target == "voc":
        overrides["data.path"] = paths(root)["voc"]
    set_fields(config, overrides)
    return config


def run_finetune(root: str, name: str) -> None:
    config = finetune_config(root, name)
    workdir = os.path.join(root, name)
    if final_eval(workdir, config) is not None:
        return
    init = name.split("/")[2]
    if init == "cls":
        train_once("cls", paths(root)["cls"], classifier_config(root))
    else:
        ensure_pretrained(root, "paper", init == "dap_freeze")
    train_row(name, workdir, config)


# --- tables and figure -------------------------------------------------------------------------


def collect(root: str) -> dict:
    rows = []
    for name in finetune_rows():
        config = finetune_config(root, name)
        workdir = os.path.join(root, name)
        result = final_eval(workdir, config)
        target, kshot, init, seed = name.split("/")
        row = {"row": name, "target": target, "k": int(kshot[:-4]), "init": init, "seed": int(seed[1:])}
        row["status"] = "pending" if result is None else "done"
        if result is not None:
            row.update(AP=result["AP"], AP50=result["AP50"], train_seconds=train_seconds(workdir))
            row["curve"] = learning_curve(workdir, config.data.eval_split)
            report = read_json(os.path.join(workdir, "init_from.json")) or {}
            row["restored_leaves"] = len(report.get("restored", []))
        rows.append(row)
    pretrained = {}
    for variant in VARIANTS:
        for freeze in (False, True):
            name = pretrain_name(variant, freeze)
            workdir = os.path.join(root, name)
            result = final_eval(workdir, pretrain_config(root, variant, freeze))
            if result is not None:
                pretrained[name] = {
                    "AP": result["AP"],
                    "AP50": result["AP50"],
                    "train_seconds": train_seconds(workdir),
                    "as_classifier": read_json(os.path.join(workdir, "as_classifier.json")),
                }
    cls = final_eval(paths(root)["cls"], classifier_config(root))
    return {
        "finetune": rows,
        "pretrained": pretrained,
        "classifier": cls and {"top1": cls["top1"], "train_seconds": train_seconds(paths(root)["cls"])},
        "pseudo_boxes": pseudo_box_quality(root),
    }


def _minutes(seconds) -> str:
    return f"{seconds / 60:.1f}" if seconds else "-"


def markdown(results: dict) -> str:
    lines = ["### Pseudo-boxes of the training canvases (Lite0: 200 validation canvases, its top-1 class)", ""]
    lines += [
        "| CAMs | boxes / image (tau 0.2 / 0.3 / 0.4 / 0.5 / merged) | mean w x h merged (px) "
        "| CorLoc | box recall | precision | CorLoc / box recall, one-object images |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, q in results["pseudo_boxes"].items():
        s = q["stats"]
        per = " / ".join(f"{v['boxes_per_image']:.2f}" for v in s["per_threshold"].values())
        m = s["merged"]
        label = {
            "paper": "CLS, paper's text",
            "released": "CLS, released code",
            "lite0": "ImageNet Lite0, paper's text",
        }
        lines.append(
            f"| {label[name]} | {per} / {m['boxes_per_image']:.2f} | {m['mean_width']:.0f} x {m['mean_height']:.0f} "
            f"| {q['corloc']:.3f} | {q['box_recall']:.3f} | {q['precision']:.3f} "
            f"| {q['single_object']['corloc']:.3f} / {q['single_object']['box_recall']:.3f} |"
        )
    cls = results["classifier"]
    lines += ["", "### Pre-training (validation ImageNet-like canvases)", ""]
    lines += ["| model | top-1 as a classifier | AP / AP50 on the true boxes | train min |", "|---|---|---|---|"]
    if cls:
        lines.append(f"| CLS classifier | {cls['top1']:.3f} | - | {_minutes(cls['train_seconds'])} |")
    for name, p in results["pretrained"].items():
        top1 = p["as_classifier"]["top1"] if p["as_classifier"] else float("nan")
        lines.append(f"| {name} | {top1:.3f} | {p['AP']:.3f} / {p['AP50']:.3f} | {_minutes(p['train_seconds'])} |")
    lines += ["", "### k-shot fine-tuning (AP / AP50 after 400 steps; mean ± std over 2 seeds)", ""]
    lines += ["| target | k | " + " | ".join(INITS.values()) + " | DAP - CLS (AP) |", "|---|---|---|---|---|---|"]
    rows = results["finetune"]
    for target, title in TARGETS.items():
        for k in KSHOTS:
            cells, means = [], {}
            for init in INITS:
                members = [r for r in rows if r["target"] == target and r["k"] == k and r["init"] == init]
                done = [r for r in members if r["status"] == "done"]
                ap, ap50 = (seed_cell([r[m] for r in done], len(members)) for m in ("AP", "AP50"))
                cells.append(f"{ap} / {ap50}")
                means[init] = np.mean([r["AP"] for r in done]) if done else None
            delta = f"{means['dap'] - means['cls']:+.3f}" if None not in (means["dap"], means["cls"]) else "pending"
            lines.append(f"| {title} | {k} | " + " | ".join(cells) + f" | {delta} |")
    return "\n".join(lines) + "\n"


def plot_learning_curves(results: dict, output: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["finetune"] if r["status"] == "done"]
    if not rows:
        return
    shots = sorted({r["k"] for r in rows})  # panels of the k that have finished rows
    fig, axes = plt.subplots(len(TARGETS), len(shots), figsize=(4.5 * len(shots), 6.5), squeeze=False)
    for i, (target, title) in enumerate(TARGETS.items()):
        for j, k in enumerate(shots):
            ax = axes[i][j]
            for init, label in INITS.items():
                curves = [r["curve"] for r in rows if r["target"] == target and r["k"] == k and r["init"] == init]
                if not curves:
                    continue
                steps = [s for s, _, _ in curves[0]]
                values = np.asarray([[ap50 for _, _, ap50 in c] for c in curves if len(c) == len(steps)])
                ax.plot(steps, values.mean(0), marker="o", label=label)
                if len(values) > 1:
                    ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
            ax.set_title(f"{title}, {k}-shot")
            ax.set_xlabel("fine-tuning step")
            ax.set_ylabel("AP50")
            ax.grid(alpha=0.3)
            if ax.get_lines():
                ax.legend()
    fig.suptitle("DAP in miniature: learning curves (mean of 2 seeds, band = min-max)")
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    steps = ["pseudo/paper", "pseudo/released", "pseudo/lite0", "dap/paper", "dap_freeze/paper", "dap/released"]
    all_rows = steps[:5] + finetune_rows()
    rows_help = f"comma-separated (default: {','.join(all_rows)}; also dap/released)"
    args = study_arguments(__doc__, "/tmp/dap_study", rows_help).parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from frozen_det.runtime import quiet_tensorflow

    quiet_tensorflow()
    chosen = chosen_rows(args.rows, steps + finetune_rows(), default=all_rows)
    if not args.table_only:
        ensure_study_canvases(args.root)
        for name in chosen:
            if name.startswith("pseudo/"):
                variant = name.split("/")[1]
                if variant == "lite0":
                    ensure_lite0_boxes(args.root)
                else:
                    ensure_pseudo_boxes(args.root, variant)
            elif name in steps:
                ensure_pretrained(args.root, name.split("/")[1], name.startswith("dap_freeze"))
            else:
                if args.force:
                    shutil.rmtree(os.path.join(args.root, name), ignore_errors=True)
                run_finetune(args.root, name)
    results = collect(args.root)
    write_results(args.root, markdown(results), results)
    plot_learning_curves(results, os.path.join(args.root, "learning_curves.png"))
    print(json.dumps({"written": os.path.join(args.root, "results.md")}))


if __name__ == "__main__":
    main()
