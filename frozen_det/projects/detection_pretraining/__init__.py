"""Detection pre-training vs classification pre-training, in miniature on offline data (README.md).

The pattern of Li et al., "An analysis of pre-training on object detection" (arXiv:1904.05871),
and of Vasconcelos et al. 2022 sec. 3 for the weight drift, as rows:

* ``det_pretrain``: DET, the packaged ImageNet EfficientNet-Lite0 (CLS) after detection
  pre-training: fine-tuned as the backbone of a Faster R-CNN on 6,000 VOC-like canvases of
  Fashion-MNIST items (configs/canvases/detector.py:lite0, 3,000 steps of batch 8);
* ``bccd/<start>``: the detection target (Table 2 / Fig. 1): BCCD at 256 x 256 (the quick
  start's detector, 700 steps), backbone fine-tuned from CLS (``cls``) or from DET (``det``:
  only the backbone transferred, as the paper re-initialises the detection heads), and CLS frozen
  with residual adapters (``adapters``); measured by AP at IoU 0.1 ... 0.9 (COCO-style) and the
  backbone's weight drift at the last step (relative L2 distance per stage from where the run
  started, parameters and BatchNorm statistics);
* ``probe/<target>/<start>_<tap>``: the classification targets (Tables 5-7), BCCD cell crops
  (``bccd``) and Fashion-MNIST at 64 x 64 (``fmnist``), by a linear probe on CLS's Conv5 and on
  each tap of DET (Conv5; the whole-image box's ConvProj map flattened and pooled to 4x4 / 2x2 /
  1x1; FC1, FC2);
* ``finetune/<target>/<start>``: fine-tuning from Conv5 of CLS or DET with little data (BCCD 5
  crops per class, Fashion-MNIST 100 images per class).

The targets' configs are config.py's. A row at seed s that starts from DET starts from
``det_pretrain`` at seed s.

    python -m frozen_det.projects.detection_pretraining --root /tmp/detection_pretraining --rows bccd/cls,bccd/det
    python -m frozen_det.projects.detection_pretraining --table_only

BCCD comes from BCCD_DIR or datasets/bccd (configs/data/bccd.py); Fashion-MNIST from the Debian
package dataset-fashion-mnist.
"""

from __future__ import annotations

import json
import os

from frozen_det.evaluation.ap_vs_iou import DEFAULT_THRESHOLDS
from frozen_det.evaluation.drift import BACKBONE_GROUPS
from frozen_det.projects import tables as t
from frozen_det.projects.canvases import ensure_canvases
from frozen_det.projects.runner import Row, Study

PRETRAIN = "det_pretrain"
CONFIG = "frozen_det/projects/detection_pretraining/config.py"
CANVASES = "{root}/canvases_voc"
THRESHOLDS = DEFAULT_THRESHOLDS  # 0.1, ..., 0.9
# Li et al. (2019) re-initialise the detection heads of a DET pre-trained model before fine-tuning:
# only the backbone (parameters and BatchNorm statistics) is transferred.
HEADS = (r"^\w+/(?!backbone/)",)
DETECTION = {"cls": "CLS, fine-tuned", "det": "DET, fine-tuned", "adapters": "CLS frozen + adapters"}
TARGETS = {
    "bccd": ("BCCD crops mean per-class acc.", "mean_per_class_accuracy"),
    "fmnist": ("Fashion-MNIST top-1", "top1"),
}
# (start, tap) -> label: CLS's Conv5 and every tap of DET (config.py's TAP)
PROBES = {
    ("cls", "conv5"): "CLS Conv5, linear",
    ("det", "conv5"): "DET Conv5, linear",
    ("det", "conv_proj"): "DET ConvProj (7 x 7 x 64, flattened), linear",
    ("det", "conv_proj_4"): "DET ConvProj pooled 4 x 4, linear",
    ("det", "conv_proj_2"): "DET ConvProj pooled 2 x 2, linear",
    ("det", "conv_proj_1"): "DET ConvProj pooled 1 x 1, linear",
    ("det", "fc1"): "DET FC1, linear",
    ("det", "fc2"): "DET FC2, linear",
}
FINETUNED = {"cls": "CLS, fine-tuned from Conv5", "det": "DET, fine-tuned from Conv5"}


def prepare(root: str, smoke: bool) -> None:
    """The VOC-like canvases of the DET pre-training."""
    num_train, num_val = (48, 16) if smoke else (6000, 500)
    ensure_canvases(CANVASES.format(root=root), "voc", num_train=num_train, num_val=num_val, seed=1)


def detection_measures(run_dir: str, config) -> dict:
    """AP at each IoU threshold of the last step's evaluation (its ``_ap_vs_iou.json``: COCO-style
    and Pascal VOC AP) and the backbone's drift from where the run started to its last step
    ({group: {"params", "batch_stats"}}, frozen_det.evaluation.drift)."""
    import jax

    from frozen_det.evaluation.drift import weight_drift
    from frozen_det.training.run import Run

    step = int(config.train.total_steps)
    with open(os.path.join(run_dir, "eval", f"{config.data.eval_split}_step{step}_ap_vs_iou.json")) as f:
        curve = json.load(f)
    with Run(run_dir, config) as run:
        drift = weight_drift(jax.device_get(run.initial_variables()), jax.device_get(run.variables()))
    return {"ap_vs_iou": curve, "drift": drift}


def _start(start: str) -> str | None:
    return PRETRAIN if start == "det" else None


ROWS = (
    Row(
        PRETRAIN,
        "configs/canvases/detector.py:lite0",
        {"data.path": CANVASES, "train.total_steps": 3000, "train.schedule.warmup_steps": 200},
        iou_thresholds=THRESHOLDS,
        measure=detection_measures,  # how far detection pre-training moved the ImageNet backbone
    ),
    *(
        Row(
            f"bccd/{start}",
            f"{CONFIG}:bccd" + (",adapters" if start == "adapters" else ""),
            {"train.init_exclude": HEADS} if start == "det" else {},
            init_from=_start(start),
            iou_thresholds=THRESHOLDS,
            measure=detection_measures,
        )
        for start in DETECTION
    ),
    *(
        Row(f"probe/{target}/{start}_{tap}", f"{CONFIG}:{target},{tap},probe", init_from=_start(start))
        for target in TARGETS
        for start, tap in PROBES
    ),
    *(
        Row(f"finetune/{target}/{start}", f"{CONFIG}:{target},conv5,finetune", init_from=_start(start))
        for target in TARGETS
        for start in FINETUNED
    ),
)


# --- tables ------------------------------------------------------------------------------------


def _minutes(records: list[dict]) -> str:
    return t.cell(t.metric(records, lambda r: r["train_seconds"]), 1, 1 / 60)


def _at_thresholds(records: list[dict]) -> dict[int, list[float]]:
    """{seed: COCO-style AP at each threshold, then AP@[.5:.95]}."""
    return {r["seed"]: [*r["extra"]["ap_vs_iou"]["coco_AP"], r["metrics"]["AP"]] for r in records}


def _detection_lines(grouped: dict[str, list[dict]]) -> list[list[str]]:
    lines = []
    for start, label in DETECTION.items():
        records = grouped.get(f"bccd/{start}", [])
        if not records:
            lines.append([label, "0", "pending"] + [""] * len(THRESHOLDS) + [""])
            continue
        by_seed = list(_at_thresholds(records).values())
        cells = [t.cell([values[i] for values in by_seed]) for i in range(len(THRESHOLDS) + 1)]
        lines.append([label, str(len(records)), *cells, _minutes(records)])
    det, cls = (_at_thresholds(grouped.get(f"bccd/{s}", [])) for s in ("det", "cls"))
    paired = sorted(set(det) & set(cls))  # the same seed: the same data order
    differences = [t.cell([det[s][i] - cls[s][i] for s in paired]) for i in range(len(THRESHOLDS) + 1)]
    lines.append(
        [
            "DET - CLS (paired by seed)",
            str(len(paired)),
            *(differences if paired else ["pending"] + [""] * len(THRESHOLDS)),
            "",
        ]
    )
    return lines


def _drift_line(label: str, records: list[dict]) -> list[str]:
    if not records:
        return [label, "0", "pending"] + [""] * len(BACKBONE_GROUPS)
    drift = lambda group, part: t.cell(t.metric(records, lambda r: r["extra"]["drift"][group].get(part)), 4)  # noqa: E731
    return [label, str(len(records)), *(drift(g, "params") for g in BACKBONE_GROUPS), drift("stage4", "batch_stats")]


def _classification_line(label: str, rows: dict[str, str], grouped: dict[str, list[dict]]) -> list[str]:
    """[label, then n and the metric per target] of rows {target: row name}."""
    cells = []
    for target, (_, key) in TARGETS.items():
        records = grouped.get(rows[target], [])
        metric = t.cell(t.metric(records, lambda r: r["metrics"].get(key)))
        cells += [str(len(records)), metric if records else "pending"]
    return [label, *cells]


def tables(records: list[dict]) -> dict[str, str]:
    grouped = t.by_row(records)
    rows = lambda names: [r for n in names for r in grouped.get(n, [])]  # noqa: E731
    pre = grouped.get(PRETRAIN, [])
    m = lambda key: t.cell(t.metric(pre, lambda r: r["metrics"].get(key)))  # noqa: E731
    pretraining = t.markdown(
        ["row", "n", "AP", "AP50", "AP75", "train min"],
        [
            [PRETRAIN, str(len(pre)), m("AP"), m("AP50"), m("AP75"), _minutes(pre)]
            if pre
            else [PRETRAIN, "0", "pending", "", "", ""]
        ],
    )
    detection = t.markdown(
        ["backbone start", "n", *(f"{x:.1f}" for x in THRESHOLDS), "AP@[.5:.95]", "train min"],
        _detection_lines(grouped),
    )
    drifted = {PRETRAIN: "DET pre-training (canvases, from CLS)"} | {
        f"bccd/{s}": label for s, label in DETECTION.items()
    }
    drift = t.markdown(
        ["run", "n", *BACKBONE_GROUPS, "BN statistics (stage4)"],
        [_drift_line(label, grouped.get(name, [])) for name, label in drifted.items()],
    )
    lines = [(label, {target: f"probe/{target}/{s}_{tap}" for target in TARGETS}) for (s, tap), label in PROBES.items()]
    lines += [(label, {target: f"finetune/{target}/{s}" for target in TARGETS}) for s, label in FINETUNED.items()]
    header = ["features"] + [h for target, (title, _) in TARGETS.items() for h in ("n", title)]
    classification = t.markdown(header, [_classification_line(label, names, grouped) for label, names in lines])
    detected = [f"bccd/{s}" for s in DETECTION]
    classified = [name for _, names in lines for name in names.values()]
    return {
        "pretraining": pretraining + "\n" + t.provenance_line(pre) + "\n",
        "detection": detection + "\n" + t.provenance_line(rows(detected)) + "\n",
        "drift": drift + "\n" + t.provenance_line(rows(drifted)) + "\n",
        "classification": classification + "\n" + t.provenance_line(rows(classified)) + "\n",
    }


STUDY = Study(
    name="detection_pretraining", doc=__doc__.split("\n")[0], rows=ROWS, tables=tables, seeds=3, prepare=prepare
)
