"""PreDet in miniature: contrastive box-level pre-training of the whole detector, then k-shot transfer.

Ramanathan, Wang, Mahajan, "PreDet: Large-scale weakly supervised pre-training for detection"
(ICCV 2021), on offline data and 2 CPU cores (README.md), as rows:

* ``predet/<row>``: PreDet pre-training (configs/predet/pretrain.py:lite0,<losses>) of the layers
  of the Lite0 Faster R-CNN (configs/canvases/detector.py:lite0), the backbone starting from the
  packaged ImageNet EfficientNet-Lite0, random-box queries, 200 steps. Table 1 as three rows that
  need no labels, on ROOT/pretrain_images (BCCD trainval images + the VOC-like canvases' training
  images, their labels unused; held out for the pretext diagnostics: 32 BCCD test images + 32
  validation canvases), 128 x 128 views:

    full      "crpn,croi,reg"  L_crpn + L_info + L_croi-reg (the paper's full model minus L_cls);
    no_crpn   "croi,reg"       the CROI head on random proposals (Table 1's rows without L_crpn):
                               what the CRPN adds; the RPN convolution is then never trained
                               (and not transferred);
    crpn      "crpn"           the query-conditioned RPN alone (no contrastive term): whether
                               L_crpn alone teaches the box head anything (not a Table 1 row;
                               it isolates the term the paper adds to the CROI head);

  and Table 1's control, two rows on the 2,000 VOC-like training canvases with their image labels
  (the classes of their objects; held out: 64 validation canvases):

    mlc       "mlc"                L_cls alone: classification pre-training on the same images;
    mlc_full  "mlc,crpn,croi,reg"  all four losses (the paper's full PreDet: 47.1 vs 44.6 AP).

  Each is measured by its evaluation on the held-out images (retrieval top-1 of InfoNCE vs chance
  1 / (|P_neg| + 1), CRPN query recall at IoU > 0.5), and by how far it moved the ImageNet
  backbone (relative L2 distance per stage, frozen_det.evaluation.drift);
* ``<target>/5shot/<init>``: 5-shot fine-tuning (data.kshot) of the Lite0 Faster R-CNN on the
  VOC-like canvases (configs/dap/detector.py:voc,lite0, 128 x 128) and on BCCD (bccd,lite0,
  256 x 256), 400 steps, AP every 100 steps, from the ImageNet Lite0 alone ("imagenet": backbone
  only, FPN and heads fresh), from each PreDet row (train.init_from: backbone, FPN, RPN
  convolution, box head convs / FCs restored; the class-specific layers excluded as
  configs/dap/detector.py's CLASS_SPECIFIC, the RPN's objectness / delta layers not in the
  source), and ("full_heads") from the ImageNet Lite0 backbone with the full row's FPN, RPN
  convolution and box head; the leaves restored per module are measured (init_from.json);
* ``similarity/<features>``: Fig. 5b, RoI feature similarity vs IoU of box pairs on 64 validation
  canvases (their true boxes as references, the same pairs for every row; similarity.py) for the
  ImageNet Lite0 (C4 RoIAlign: its neck would be random) and the full and no_crpn rows (FPN + box
  head's last FC).

A row at seed s starts from its source row at seed s.

    python -m frozen_det.projects.predet --root /tmp/predet --rows voc/5shot/full,voc/5shot/imagenet
    python -m frozen_det.projects.predet --table_only
    python -m frozen_det.projects.curves predet --output /tmp/predet_curves.png

BCCD comes from BCCD_DIR or datasets/bccd (configs/data/bccd.py): the BCCD rows and the rows on
the unlabelled image folder need it; the mlc rows and the VOC-like rows from them do not.

Step rates measured with the old tool's smoke run (batch 8, steps after the first, ~0.7 of a core
free on the shared 2-core CPU): PreDet "crpn,croi,reg" 0.29 steps/s (the CRPN is most of the
cost), "croi,reg" 1.1 steps/s; the Lite0 Faster R-CNN at 128 (VOC-like canvases) 1.6 steps/s, at
256 (BCCD) 0.49 steps/s. Every PreDet row gets the same 200 steps, so the ablation compares equal
schedules.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

from frozen_det.data.offline import fashion_mnist
from frozen_det.projects import curves
from frozen_det.projects import tables as t
from frozen_det.projects.canvases import ensure_canvases
from frozen_det.projects.runner import Row, Study, repo_config

log = logging.getLogger(__name__)

VOC = "{root}/canvases_voc"
IMAGES = "{root}/pretrain_images"
KSHOT = 5
TARGETS = {"voc": "VOC-like canvases", "bccd": "BCCD"}
PRETRAIN = {
    "full": "crpn,croi,reg",
    "no_crpn": "croi,reg",
    "crpn": "crpn",
    "mlc": "mlc",
    "mlc_full": "mlc,crpn,croi,reg",
}
# Table 1's control: the rows with L_cls pre-train on the VOC-like canvases' training images with
# their image labels (the multi-hot of their objects' classes; weak labels, as the paper's
# hashtags), so "mlc" (classification pre-training on the same images) and "mlc_full" (plus the
# pretext losses) differ only in PreDet's losses.
LABELLED = ("mlc", "mlc_full")
# Heads only: the full row's FPN, RPN convolution and box head on the ImageNet Lite0 backbone
# (whether what PreDet's pretext teaches the heads helps when the backbone stays ImageNet's).
HEADS_ONLY = {"full_heads": "full"}
INITS = {
    "imagenet": "ImageNet Lite0",
    **{name: f"PreDet {losses}" for name, losses in PRETRAIN.items()},
    "full_heads": "ImageNet Lite0 + PreDet crpn,croi,reg heads",
}
CLASS_SPECIFIC = (r"/(class_logits|box_deltas)/",)  # configs/dap/detector.py's: never transferred
BACKBONE = (r"^\w+/backbone/",)
PREDET_STEPS = 200
HELD_OUT = 32  # per source, in the pretext diagnostics' folder
SIMILARITY = {"imagenet": "ImageNet Lite0 (C4)", "full": "PreDet crpn,croi,reg", "no_crpn": "PreDet croi,reg"}
SIMILARITY_IMAGES = 64
MODULES = ("backbone", "neck", "rpn_head", "box_heads_0")  # the shared layers, counted in the report


# --- PreDet pre-training -----------------------------------------------------------------------


def pretrain_overrides(name: str) -> dict:
    if name in LABELLED:  # the canvases' COCO folder; held out: 64 validation canvases
        data = {
            "data.path": VOC,
            "data.eval_split": "val",
            "data.num_eval_examples": 2 * HELD_OUT,
            "model.predet.num_labels": len(fashion_mnist.CLASSES),
        }
    else:
        data = {"data.path": IMAGES, "data.num_eval_examples": 0}
    return {
        **data,
        "data.eval_batch_size": 8,
        "train.total_steps": PREDET_STEPS,
        "train.checkpoint_every": PREDET_STEPS,
        "train.log_every": 25,
        "train.schedule.boundaries": (int(PREDET_STEPS * 0.8),),
        "train.schedule.warmup_steps": 20,
    }


def pretext_measures(run_dir: str, config) -> dict:
    """How far the row moved the ImageNet backbone ({group: relative L2 distance of its parameters}
    at the last checkpoint, frozen_det.evaluation.drift) and its last logged training loss."""
    from frozen_det.training.run import Run

    with Run(run_dir) as run:
        drift = run.drift()
    with open(os.path.join(run_dir, "train_metrics.jsonl")) as f:
        last = json.loads(f.read().splitlines()[-1])
    return {
        "backbone_drift": {group: v["params"] for group, v in drift[max(drift)].items()},
        "final_train_loss": last.get("total"),
    }


# --- fine-tuning -------------------------------------------------------------------------------


def restored_by_module(run_dir: str, config) -> dict:
    """{module: leaves restored from the source run} (init_from.json) of the shared layers."""
    with open(os.path.join(run_dir, "init_from.json")) as f:
        restored = json.load(f)["restored"]
    return {"restored_by_module": {m: sum(1 for path in restored if path.split("/")[1] == m) for m in MODULES}}


def finetune_row(target: str, init: str) -> Row:
    overrides = {"data.kshot": KSHOT}
    if target == "voc":
        overrides["data.path"] = VOC
    if init in HEADS_ONLY:
        overrides["train.init_exclude"] = CLASS_SPECIFIC + BACKBONE
    source = None if init == "imagenet" else f"predet/{HEADS_ONLY.get(init, init)}"
    return Row(
        f"{target}/{KSHOT}shot/{init}",
        f"configs/dap/detector.py:{target},lite0",
        overrides,
        init_from=source,
        measure=restored_by_module if source else None,
    )


# --- Fig. 5b -------------------------------------------------------------------------------------


def box_similarity(row: Row, run_dir: str, config) -> dict:
    """Fig. 5b of the row's features: the run it starts from (``train.init_from``: FPN + box head's
    last FC), or without one the ImageNet Lite0's backbone, on the first validation canvases of
    ``data.path`` with their true boxes, the same pairs (seed 0) for every row and seed. The
    per-pair values and the plot stay in the run folder; the record keeps the statistics."""
    from frozen_det.projects.predet import similarity

    images, references, described = similarity.load_images(
        config.data.path, canvas=config.data.canvas, max_images=SIMILARITY_IMAGES, split=config.data.eval_split
    )
    name = row.name.split("/", 1)[1]
    result = similarity.compare({name: config.train.init_from or "lite0"}, images, references)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "box_similarity.json"), "w") as f:
        json.dump({"images": described, "runs": result}, f)
    similarity.plot(result, os.path.join(run_dir, "similarity_vs_iou.png"), f"similarity vs IoU on {described}")
    statistics = {k: v for k, v in result[name].items() if k != "per_pair"}
    return {"images": described, "similarity": statistics}


# --- the rows ----------------------------------------------------------------------------------

ROWS = (
    *(
        Row(
            f"predet/{name}",
            f"configs/predet/pretrain.py:lite0,{losses}",
            pretrain_overrides(name),
            measure=pretext_measures,
        )
        for name, losses in PRETRAIN.items()
    ),
    *(finetune_row(target, init) for target in TARGETS for init in INITS),
    *(
        Row(
            f"similarity/{name}",
            "configs/canvases/detector.py:lite0",
            {"data.path": VOC},
            init_from=None if name == "imagenet" else f"predet/{name}",
            seeded=name != "imagenet",  # the packaged weights: one run
            train=box_similarity,
        )
        for name in SIMILARITY
    ),
)

CURVES = {
    f"{title}, {KSHOT}-shot": {label: f"{target}/{KSHOT}shot/{init}" for init, label in INITS.items()}
    for target, title in TARGETS.items()
}


def bccd_path() -> str:
    return repo_config("configs/data/bccd.py").data.path


def prepare(root: str, smoke: bool) -> None:
    """The VOC-like canvases, and (with BCCD) the unlabelled pre-training image folder of symbolic
    links: train = BCCD trainval + the canvases' training images, validation = the first BCCD
    test images and validation canvases."""
    num_train, num_val = (48, 16) if smoke else (2000, 300)
    voc = VOC.format(root=root)
    ensure_canvases(voc, "voc", num_train=num_train, num_val=num_val, seed=1)
    images = IMAGES.format(root=root)
    done = os.path.join(images, "done.json")
    if os.path.exists(done):
        return
    bccd = bccd_path()
    if not os.path.isdir(os.path.join(bccd, "JPEGImages")):
        log.warning("no BCCD at %s (BCCD_DIR): %s not written; the rows on it cannot run", bccd, images)
        return
    shutil.rmtree(images, ignore_errors=True)
    held_out = 8 if smoke else HELD_OUT
    split_ids = lambda split: open(os.path.join(bccd, "ImageSets", "Main", f"{split}.txt")).read().split()  # noqa: E731
    canvases = lambda split: sorted(os.path.join(voc, split, f) for f in os.listdir(os.path.join(voc, split)))  # noqa: E731
    sources = {
        "train": {
            "bccd": [os.path.join(bccd, "JPEGImages", f"{i}.jpg") for i in split_ids("trainval")],
            "canvases": canvases("train"),
        },
        "validation": {
            "bccd": [os.path.join(bccd, "JPEGImages", f"{i}.jpg") for i in split_ids("test")[:held_out]],
            "canvases": canvases("val")[:held_out],
        },
    }
    counts = {}
    for split, by_source in sources.items():
        for source, files in by_source.items():
            folder = os.path.join(images, split, source)
            os.makedirs(folder, exist_ok=True)
            for f in files:
                os.symlink(os.path.abspath(f), os.path.join(folder, os.path.basename(f)))
            counts[f"{split}/{source}"] = len(files)
    with open(done, "w") as f:
        json.dump(counts, f)


# --- tables ------------------------------------------------------------------------------------


def _pretext_cells(name: str, records: list[dict]) -> list[str]:
    from frozen_det.evaluation.drift import BACKBONE_GROUPS

    losses = PRETRAIN[name] + (" (labelled canvases)" if name in LABELLED else "")
    if not records:
        return [name, losses, "0", "pending"] + [""] * 6
    m = lambda get: t.cell(t.metric(records, get))  # noqa: E731
    evaluation = lambda key: m(lambda r: r["metrics"].get(key))  # noqa: E731
    drift = " / ".join(m(lambda r, g=g: r["extra"]["backbone_drift"][g]) for g in BACKBONE_GROUPS)
    steps = sorted({str(r["resolved_config"]["train"]["total_steps"]) for r in records})
    return [
        name,
        losses,
        str(len(records)),
        " / ".join(steps),
        evaluation("retrieval_top1"),
        evaluation("retrieval_chance"),
        evaluation("crpn_query_recall"),
        m(lambda r: r["extra"]["final_train_loss"]),
        drift,
        t.cell(t.metric(records, lambda r: r["train_seconds"]), 1, 1 / 60),
    ]


def _restored_cells(name: str, records: list[dict]) -> list[str]:
    if not records:
        return [name, "0", "pending"] + [""] * (len(MODULES) + 2)
    minutes = t.cell(t.metric(records, lambda r: r["train_seconds"]), 1, 1 / 60)
    if "restored" not in records[0]:
        return [name, str(len(records)), "— (no init_from)"] + ["—"] * (len(MODULES) + 1) + [minutes]
    same = lambda get: " / ".join(sorted({str(get(r)) for r in records}))  # noqa: E731  one config: one count
    by_module = [same(lambda r, m=m: r["extra"]["restored_by_module"][m]) for m in MODULES]
    fresh = same(lambda r: r["restored"].get("not_in_source", 0) + r["restored"].get("excluded", 0))
    return [name, str(len(records)), same(lambda r: r["restored"]["restored"])] + by_module + [fresh, minutes]


def _similarity_lines(name: str, records: list[dict]) -> list[list[str]]:
    label = SIMILARITY[name]
    if not records:
        return [[label, "0", "pending", "", "", ""]]
    lines = []
    for bucket in ("small", "medium", "large", "all"):
        m = lambda key: t.cell(t.metric(records, lambda r: r["similarity"][bucket][key]))  # noqa: E731
        pairs = " / ".join(sorted({str(r["similarity"][bucket]["pairs"]) for r in records}))
        lines.append([label, str(len(records)), bucket, pairs, m("pearson"), m("spearman")])
    return lines


def tables(records: list[dict]) -> dict[str, str]:
    grouped = t.by_row(records)
    rows = lambda names: [r for n in names for r in grouped.get(n, [])]  # noqa: E731
    pretext = [f"predet/{name}" for name in PRETRAIN]
    pretext_table = t.markdown(
        [
            "row",
            "losses",
            "n",
            "steps",
            "retrieval top-1",
            "chance 1/(neg+1)",
            "CRPN query recall",
            "final train loss",
            "backbone drift stem / stage1-4",
            "train min",
        ],
        [_pretext_cells(name, grouped.get(f"predet/{name}", [])) for name in PRETRAIN],
    )
    finetuned = [f"{target}/{KSHOT}shot/{init}" for target in TARGETS for init in INITS]
    kshot_table = t.markdown(
        ["initialisation", *(f"{title} AP / AP50" for title in TARGETS.values())],
        [
            [label, *(curves.kshot_cell(grouped.get(f"{target}/{KSHOT}shot/{init}", [])) for target in TARGETS)]
            for init, label in INITS.items()
        ],
    )
    restored_table = t.markdown(
        ["row", "n", "restored", *MODULES, "fresh", "train min"],
        [_restored_cells(name, grouped.get(name, [])) for name in finetuned],
    )
    similar = [f"similarity/{name}" for name in SIMILARITY]
    similarity_table = t.markdown(
        ["features", "n", "bucket", "pairs", "Pearson", "Spearman"],
        [line for name in SIMILARITY for line in _similarity_lines(name, grouped.get(f"similarity/{name}", []))],
    )
    return {
        "pretext": pretext_table + "\n" + t.provenance_line(rows(pretext)) + "\n",
        "kshot": kshot_table + "\n" + t.provenance_line(rows(finetuned)) + "\n",
        "restored": restored_table + "\n" + t.provenance_line(rows(finetuned)) + "\n",
        "curves": curves.curve_table(CURVES, records) + "\n" + t.provenance_line(rows(finetuned)) + "\n",
        "similarity": similarity_table + "\n" + t.provenance_line(rows(similar)) + "\n",
    }


STUDY = Study(name="predet", doc=__doc__.split("\n")[0], rows=ROWS, tables=tables, seeds=3, prepare=prepare)
