"""DAP in miniature: CAM pseudo-boxes, detection-aware pre-training, k-shot transfer.

Zhong et al., "DAP: Detection-Aware Pre-training with Weak Supervision" (CVPR 2021), on offline
data (README.md), its four steps as rows:

1. ``cls``: a narrow ResNet-18 classifier on ImageNet-like canvases (one Fashion-MNIST class per
   image; configs/dap/classifier.py);
2. ``pseudo/paper``, ``pseudo/released``: its class activation maps -> pseudo-boxes of the
   training canvases (the paper's text and the authors' released code, frozen_det.localization),
   scored against the canvases' hidden true boxes (CorLoc, box recall, precision) with the
   Tables A1 / A2 statistics; ``pseudo/lite0``: the packaged ImageNet EfficientNet-Lite0's CAMs
   of its own top-1 class on 200 validation canvases, for comparison (one run: no seed);
3. ``dap/<variant>``, ``dap_freeze/<variant>``: the Faster R-CNN of configs/dap/detector.py
   pre-trained on a variant's pseudo-boxes (backbone from ``cls``), and DAP-Freeze (backbone
   frozen, Table 3); each also scored as a classifier (sec. 4.3) and against the true boxes;
4. ``<target>/<k>shot/<init>``: k-shot fine-tuning (k = 5, 20) on VOC-like canvases and on BCCD
   from CLS (backbone only), DAP and DAP-Freeze (paper variant; everything but the class-specific
   layers), DAP's backbone alone (fresh FPN and heads) and CLS's backbone under DAP's FPN, RPN
   and box head (``train.backbone_from``), AP every 100 steps (the learning curves of Fig. 5).

Row ``X`` at seed s starts from its source row at seed s (seed s also draws the k-shot subset),
so a row's spread over seeds includes the spread of the pre-training it starts from.

    python -m frozen_det.projects.dap --root /tmp/dap --rows voc/5shot/dap,voc/5shot/cls
    python -m frozen_det.projects.dap --table_only
    python -m frozen_det.projects.curves dap --output /tmp/dap_curves.png

BCCD comes from BCCD_DIR or datasets/bccd (configs/data/bccd.py); Fashion-MNIST from the Debian
package dataset-fashion-mnist.
"""

from __future__ import annotations

import collections
import functools
import importlib
import json
import os

from frozen_det.projects import curves
from frozen_det.projects import tables as t
from frozen_det.projects.canvases import ensure_canvases
from frozen_det.projects.runner import Row, Study, repo_config
from frozen_det.strategies import OUTSIDE_THE_BACKBONE

IMAGENET = "{root}/canvases_imagenet"
VOC = "{root}/canvases_voc"
BOXES = "boxes.json"  # a pseudo-box row's output, in its run folder
KSHOTS = (5, 20)
TARGETS = {"voc": "VOC-like canvases", "bccd": "BCCD"}
INITS = {
    "cls": ("CLS", "cls"),
    "dap": ("DAP", "dap/paper"),
    "dap_freeze": ("DAP-Freeze", "dap_freeze/paper"),
    # What the BCCD reversal's "head priors" explanation needs apart: DAP's backbone under fresh
    # heads, and DAP's FPN, RPN and box head on CLS's backbone.
    "dap_backbone": ("DAP backbone, fresh heads", "dap/paper"),
    "cls_dap_heads": ("CLS backbone, DAP heads", "dap/paper"),
}
SPLIT_INITS = {
    "dap_backbone": {"train.init_exclude": OUTSIDE_THE_BACKBONE},
    "cls_dap_heads": {"train.backbone_from": "{run:cls}"},
}
VARIANTS = {"paper": "CLS, paper's text", "released": "CLS, released code"}
LITE0_IMAGES = 200  # validation canvases boxed by the ImageNet Lite0


def prepare(root: str, smoke: bool) -> None:
    """The ImageNet-like canvases (classifier, pseudo-boxes, pre-training) and the VOC-like ones
    (a fine-tuning target)."""
    imagenet, voc = ((48, 16), (48, 16)) if smoke else ((3000, 500), (2000, 300))
    ensure_canvases(IMAGENET.format(root=root), "imagenet", num_train=imagenet[0], num_val=imagenet[1], seed=0)
    ensure_canvases(VOC.format(root=root), "voc", num_train=voc[0], num_val=voc[1], seed=1)


def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


# --- step 2: pseudo-boxes ----------------------------------------------------------------------


def box_quality(pseudo: dict, truth: dict) -> dict:
    """CorLoc, box recall and precision against the true boxes, over every image and over the
    images with one object (where a box that spans several objects cannot be the reason)."""
    from frozen_det.evaluation.localization import localisation_quality

    objects = collections.Counter(a["image_id"] for a in truth["annotations"])
    single = localisation_quality(dict(pseudo, images=[i for i in pseudo["images"] if objects[i["id"]] == 1]), truth)
    return dict(
        localisation_quality(pseudo, truth),
        single_object_corloc=single["corloc"],
        single_object_box_recall=single["box_recall"],
    )


def _boxes_outcome(run_dir: str, images: str, split: str, stats: dict, class_agnostic: bool = False) -> dict:
    pseudo = _read(os.path.join(run_dir, BOXES))
    if class_agnostic:  # ImageNet's classes, not the canvases': localisation only
        pseudo = dict(pseudo, annotations=[dict(a, category_id=0) for a in pseudo["annotations"]])
    truth = _read(os.path.join(images, "annotations", f"instances_{split}.json"))
    return {"metrics": box_quality(pseudo, truth), "stats": stats}


def cam_pseudo_boxes(row: Row, run_dir: str, config, variant: str) -> dict:
    """Step 2: the pseudo-boxes of the training canvases from the CAMs of the ``cls`` run at the
    row's seed (the row's ``train.init_from``), at configs/dap/classifier.py's CAM scales."""
    from frozen_det.localization.cam_boxes import PseudoBoxOptions
    from frozen_det.localization.image_sources import FolderImages
    from frozen_det.pseudo_boxes import load_cam_classifier, write_pseudo_boxes

    clf = load_cam_classifier(None, config.train.init_from)
    scales = importlib.import_module("configs.dap.classifier").CAM_SCALES
    images = config.data.path
    canvases = FolderImages(
        os.path.join(images, config.data.train_split),
        os.path.join(images, "annotations", f"instances_{config.data.train_split}.json"),
        clf.class_names,
    )
    stats = write_pseudo_boxes(
        clf, canvases, os.path.join(run_dir, BOXES), PseudoBoxOptions(variant=variant, scales=scales), progress=False
    )
    return _boxes_outcome(run_dir, images, config.data.train_split, stats)


def lite0_pseudo_boxes(row: Row, run_dir: str, config) -> dict:
    """The packaged ImageNet Lite0's pseudo-boxes of its own top-1 class (the paper's scales) on
    the first validation canvases: a classifier that never saw a canvas. The row's ``data.path``
    names the canvases it boxes; the classifier comes from the config file as it is (its data:
    ImageNet's, for the class names)."""
    from frozen_det.localization.cam_boxes import PseudoBoxOptions
    from frozen_det.localization.image_sources import FolderImages
    from frozen_det.pseudo_boxes import load_cam_classifier, write_pseudo_boxes

    clf = load_cam_classifier(repo_config(row.config))
    images, split = config.data.path, config.data.eval_split
    canvases = FolderImages(os.path.join(images, split), None, clf.class_names)
    stats = write_pseudo_boxes(
        clf, canvases, os.path.join(run_dir, BOXES), PseudoBoxOptions(), max_images=LITE0_IMAGES, progress=False
    )
    return _boxes_outcome(run_dir, images, split, stats, class_agnostic=True)


# --- step 3: DAP pre-training ------------------------------------------------------------------


def detector_as_classifier(run_dir: str, config) -> dict:
    """Sec. 4.3: the pre-trained detector as a classifier of the validation canvases (a class's
    score: the sum of its detections' confidences)."""
    from frozen_det.evaluation import detector_as_classifier as dac
    from frozen_det.training.run import Run

    with Run(run_dir, config) as run:
        task, model, variables = run.task, run.model, run.variables()
    truth = _read(os.path.join(config.data.path, "annotations", f"instances_{config.data.eval_split}.json"))
    keys = task.model_inputs(train=False) + ("image_id", "example_valid")
    return dac.detector_as_classifier(
        task.detect_fn(model), variables, task.eval_pipeline(), keys, dac.image_labels(truth), len(truth["categories"])
    )


def classifier_at_detector_input(run_dir: str, config) -> dict:
    """Sec. 4.3 at equal input size: CLS's top-1 on the validation canvases at the detectors'
    input (configs/dap/detector.py's canvas) as well as at its own training size; the paper
    compares classifier and detector at one size, where the classifier is ahead."""
    from frozen_det.evaluate import evaluate

    canvas = repo_config("configs/dap/detector.py:pretrain").data.canvas
    at_detector_input = config.copy_and_resolve_references()
    at_detector_input.data.image_size = canvas
    return {"top1_at_detector_input": evaluate(at_detector_input, run_dir)["top1"], "detector_input": canvas}


def pretrain_name(variant: str, freeze: bool) -> str:
    return f"{'dap_freeze' if freeze else 'dap'}/{variant}"


# --- the rows ----------------------------------------------------------------------------------

ROWS = (
    Row("cls", "configs/dap/classifier.py", {"data.path": IMAGENET}, measure=classifier_at_detector_input),
    *(
        Row(
            f"pseudo/{variant}",
            "configs/dap/classifier.py",
            {"data.path": IMAGENET},
            init_from="cls",
            train=functools.partial(cam_pseudo_boxes, variant=variant),
        )
        for variant in VARIANTS
    ),
    Row(
        "pseudo/lite0",
        "configs/backbones/efficientnet_lite0_imagenet.py",
        {"data.path": IMAGENET, "data.eval_split": "val"},
        seeded=False,
        train=lite0_pseudo_boxes,
    ),
    *(
        Row(
            pretrain_name(variant, freeze),
            "configs/dap/detector.py:" + ("pretrain,freeze" if freeze else "pretrain"),
            {
                "data.path": IMAGENET,
                "data.coco_files": {"train": (f"{{run:pseudo/{variant}}}/{BOXES}", "train")},
                "data.eval_batch_size": 50,
            },
            init_from="cls",
            measure=detector_as_classifier,
        )
        for variant in VARIANTS
        for freeze in (False, True)
    ),
    # The fewest shots first: where the paper's gains are largest.
    *(
        Row(
            f"{target}/{k}shot/{init}",
            f"configs/dap/detector.py:{target}",
            {"data.kshot": k, **({"data.path": VOC} if target == "voc" else {}), **SPLIT_INITS.get(init, {})},
            init_from=source,
        )
        for k in KSHOTS
        for target in TARGETS
        for init, (_, source) in INITS.items()
    ),
)

CURVES = {
    f"{title}, {k}-shot": {label: f"{target}/{k}shot/{init}" for init, (label, _) in INITS.items()}
    for target, title in TARGETS.items()
    for k in KSHOTS
}


# --- tables ------------------------------------------------------------------------------------


def _pseudo_box_cells(label: str, records: list[dict]) -> list[str]:
    if not records:
        return [label, "0", "pending"] + [""] * 5
    m = lambda key: t.cell(t.metric(records, lambda r: r["metrics"][key]))  # noqa: E731
    stat = lambda get, digits=2: t.cell(t.metric(records, lambda r: get(r["stats"])), digits)  # noqa: E731
    thresholds = records[0]["stats"]["per_threshold"]  # the same options for every row
    per_image = [stat(lambda s, x=x: s["per_threshold"][x]["boxes_per_image"]) for x in thresholds]
    per_image.append(stat(lambda s: s["merged"]["boxes_per_image"]))
    size = f"{stat(lambda s: s['merged']['mean_width'], 0)} x {stat(lambda s: s['merged']['mean_height'], 0)}"
    one_object = f"{m('single_object_corloc')} / {m('single_object_box_recall')}"
    return [
        label,
        str(len(records)),
        " / ".join(per_image),
        size,
        m("corloc"),
        m("box_recall"),
        m("precision"),
        one_object,
    ]


def _pretraining_cells(name: str, records: list[dict]) -> list[str]:
    if not records:
        return [name, "0", "pending", "", "", ""]
    m = lambda get: t.cell(t.metric(records, get))  # noqa: E731
    minutes = t.cell(t.metric(records, lambda r: r["train_seconds"]), 1, 1 / 60)
    if name == "cls":
        at_input = m(lambda r: r.get("extra", {}).get("top1_at_detector_input"))
        return [name, str(len(records)), m(lambda r: r["metrics"]["top1"]), at_input, "—", minutes]
    boxes = f"{m(lambda r: r['metrics']['AP'])} / {m(lambda r: r['metrics']['AP50'])}"
    top1 = m(lambda r: r["extra"]["top1"])
    return [name, str(len(records)), top1, top1, boxes, minutes]


def _paired_difference(minuend: list[dict], subtrahend: list[dict]) -> str:
    """AP of one row minus another's, seed by seed (the same seed: the same k-shot subset)."""
    other = {r["seed"]: r["metrics"]["AP"] for r in subtrahend}
    differences = [r["metrics"]["AP"] - other[r["seed"]] for r in minuend if r["seed"] in other]
    return f"{t.cell(differences)} (n {len(differences)})" if differences else "pending"


def tables(records: list[dict]) -> dict[str, str]:
    grouped = t.by_row(records)
    rows = lambda names: [r for n in names for r in grouped.get(n, [])]  # noqa: E731
    pseudo = {f"pseudo/{v}": label for v, label in VARIANTS.items()} | {"pseudo/lite0": "ImageNet Lite0, paper's text"}
    body = [_pseudo_box_cells(label, grouped.get(name, [])) for name, label in pseudo.items()]
    pseudo_table = t.markdown(
        [
            "CAMs",
            "n",
            "boxes / image (tau 0.2 / 0.3 / 0.4 / 0.5 / merged)",
            "mean w x h merged (px)",
            "CorLoc",
            "box recall",
            "precision",
            "CorLoc / box recall, one-object images",
        ],
        body,
    )
    pretrained = ["cls"] + [pretrain_name(v, f) for v in VARIANTS for f in (False, True)]
    pretraining_table = t.markdown(
        [
            "model",
            "n",
            "top-1 as a classifier (sec. 4.3), own input",
            "top-1 at the detectors' input size",
            "AP / AP50 on the true boxes",
            "train min",
        ],
        [_pretraining_cells(name, grouped.get(name, [])) for name in pretrained],
    )
    kshot_body = []
    for k in KSHOTS:
        for target, title in TARGETS.items():
            by_init = {init: grouped.get(f"{target}/{k}shot/{init}", []) for init in INITS}
            cells = [curves.kshot_cell(by_init[init]) for init in INITS]
            best = [curves.best_step_cell(by_init[init]) for init in INITS]
            kshot_body.append([title, str(k)] + cells + [_paired_difference(by_init["dap"], by_init["cls"])] + best)
    kshot_table = t.markdown(
        [
            "target",
            "k",
            *(f"{label} AP / AP50" for label, _ in INITS.values()),
            "DAP - CLS (AP, paired by seed)",
            *(f"{label} best AP at step" for label, _ in INITS.values()),
        ],
        kshot_body,
    )
    finetuned = [f"{target}/{k}shot/{init}" for k in KSHOTS for target in TARGETS for init in INITS]
    return {
        "pseudo_boxes": pseudo_table + "\n" + t.provenance_line(rows(pseudo)) + "\n",
        "pretraining": pretraining_table + "\n" + t.provenance_line(rows(pretrained)) + "\n",
        "kshot": kshot_table + "\n" + t.provenance_line(rows(finetuned)) + "\n",
        "curves": curves.curve_table(CURVES, records) + "\n" + t.provenance_line(rows(finetuned)) + "\n",
    }


STUDY = Study(name="dap", doc=__doc__.split("\n")[0], rows=ROWS, tables=tables, seeds=3, prepare=prepare)
