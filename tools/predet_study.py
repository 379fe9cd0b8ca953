"""PreDet (Ramanathan, Wang, Mahajan, "PreDet: Large-scale weakly supervised pre-training for
detection", ICCV 2021) in miniature on offline data, on 2 CPU cores:

(a) unlabelled pre-training images: BCCD trainval images + the VOC-like canvases' training
    images (frozen_det.data.offline.canvases; their labels unused), as one image folder
    (ROOT/pretrain_images/train; held out for the pretext diagnostics: 32 BCCD test images + 32
    validation canvases in ROOT/pretrain_images/validation), 128 x 128 views;
(b) PreDet pre-training (configs/predet/pretrain.py:lite0,<losses>) of the layers of the Lite0
    Faster R-CNN (configs/canvases/detector.py:lite0), the backbone starting from the packaged
    ImageNet EfficientNet-Lite0, random-box queries. Table 1 as three rows that need no labels
    (on the image folder of (a)):
      full      "crpn,croi,reg"  L_crpn + L_info + L_croi-reg (the paper's full model minus L_cls);
      no_crpn   "croi,reg"       the CROI head on random proposals (Table 1's rows without L_crpn):
                                 what the CRPN adds; the RPN convolution is then never trained
                                 (and not transferred);
      crpn      "crpn"           the query-conditioned RPN alone (no contrastive term): whether
                                 L_crpn alone teaches the box head anything (not a Table 1 row;
                                 it isolates the term the paper adds to the CROI head);
    and Table 1's control, two rows on the 2,000 VOC-like training canvases with their image
    labels (the classes of their objects; held out: 64 validation canvases):
      mlc       "mlc"            L_cls alone: classification pre-training on the same images;
      mlc_full  "mlc,crpn,croi,reg"  all four losses (the paper's full PreDet: 47.1 vs 44.6 AP);
(c) k-shot fine-tuning (k = 5, data.kshot) of the Lite0 Faster R-CNN on the VOC-like canvases
    (configs/dap/detector.py:voc,lite0, 128 x 128) and on BCCD (bccd,lite0, 256 x 256) from the
    ImageNet Lite0 alone ("imagenet": backbone only, FPN and heads fresh) and from each PreDet
    row (train.init_from: backbone, FPN, RPN convolution, box head convs / FCs restored; the
    class-specific layers excluded as configs/dap/detector.py's CLASS_SPECIFIC, the RPN's
    objectness / delta layers not in the source), and ("full_heads") from the ImageNet Lite0
    backbone with the full PreDet row's FPN, RPN convolution and box head, two seeds
    (train.seed, data.seed and the k-shot subset), 400 steps, AP every 100 steps; the number of
    leaves restored from the PreDet run (init_from.json) is in the table;
(d) pretext diagnostics of every PreDet row (its evaluation JSON on the held-out images):
    retrieval top-1 of InfoNCE vs chance 1 / (|P_neg| + 1), CRPN query recall (IoU > 0.5);
    and how far the row moved the ImageNet backbone (relative L2 distance per stage,
    frozen_det.evaluation.drift; cached in ROOT/predet/<row>/drift.json);
(e) Fig. 5b: RoI feature similarity vs IoU of box pairs on 64 validation canvases (their true
    boxes as references, frozen_det.evaluation.box_similarity, tools/plot_box_similarity.py) for the
    ImageNet Lite0 (C4 RoIAlign, its neck would be random) and the full and no_crpn PreDet rows
    (FPN + box head's last FC);
(f) ROOT/results.md, results.json, learning_curves.png, similarity_vs_iou.png.

    python -m tools.predet_study                    # every row (from the repository root)
    python -m tools.predet_study --rows predet/full,voc/5shot/full/s0
    python -m tools.predet_study --table_only
    python -m tools.predet_study --smoke            # every row at ~10 steps, ROOT /tmp/predet_study_smoke

Each step writes into ROOT and is skipped when its result exists (a stopped row resumes from its
checkpoint). BCCD comes from BCCD_DIR or datasets/bccd (configs/data/bccd.py).

Step rates, measured with the --smoke run (batch 8, steps after the first; `nice -n 10` on the
shared 2-core CPU while another CPU-heavy job held ~1.3 cores, so this run had ~0.7 of a core):
PreDet "crpn,croi,reg" 0.29 steps/s (the CRPN is most of the cost), "croi,reg" 1.1 steps/s; the
Lite0 Faster R-CNN at 128 (VOC-like canvases) 1.6 steps/s, at 256 (BCCD) 0.49 steps/s. With both
cores free, roughly 2.5x faster (CPU time per step x 2 cores at ~80% efficiency, not measured):
~0.7 steps/s for the full PreDet row, so PREDET_STEPS = 200 takes ~5 min a row there (~12 min
on the loaded machine; the rows without the CRPN ~1.5 / ~3.5 min; every row gets the same steps
so the ablation compares equal schedules). The whole study: ~3.5 h on the loaded machine
(PreDet ~30 min, 8 VOC rows ~7 min each, 8 BCCD rows ~16 min each, Fig. 5b ~2 min), ~1.5 h
with both cores. The --smoke run (every row at 10 steps, 100 + 40 canvases) took ~35 min on the
loaded machine (the last 15 of its 20 rows in 32.5 min), nearly all of it compilation.
"""

from __future__ import annotations

import glob
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
INITS = {"imagenet": "ImageNet Lite0", **{k: f"PreDet {v}" for k, v in PRETRAIN.items()}}
# Heads only: the PreDet row's FPN, RPN convolution and box head on the ImageNet Lite0 backbone
# (whether what PreDet's pretext teaches the heads helps when the backbone stays ImageNet's).
HEADS_ONLY = {"full_heads": "full"}
INITS["full_heads"] = "ImageNet Lite0 + PreDet crpn,croi,reg heads"
BACKBONE = (r"^\w+/backbone/",)
PREDET_STEPS = 200
FINETUNE_STEPS = 400
SMOKE_STEPS = 10
HELD_OUT = 32  # per source, in the pretext diagnostics' folder
SIMILARITY_RUNS = ("imagenet", "full", "no_crpn")
MODULES = ("backbone", "neck", "rpn_head", "box_heads_0")  # the shared layers, counted in the report


def paths(root: str) -> dict:
    return {"voc": os.path.join(root, "canvases_voc"), "images": os.path.join(root, "pretrain_images")}


def bccd_path() -> str:
    return repo_config("configs/data/bccd.py").data.path


def ensure_data(root: str, smoke: bool) -> None:
    """The VOC-like canvases and the pre-training image folder (symbolic links)."""
    p = paths(root)
    num_train, num_val = (100, 40) if smoke else (2000, 300)
    ensure_canvases(p["voc"], "voc", num_train=num_train, num_val=num_val, seed=1)
    done = os.path.join(p["images"], "done.json")
    if os.path.exists(done):
        return
    shutil.rmtree(p["images"], ignore_errors=True)
    bccd = bccd_path()
    split_ids = lambda split: open(os.path.join(bccd, "ImageSets", "Main", f"{split}.txt")).read().split()
    canvases = lambda split: sorted(glob.glob(os.path.join(p["voc"], split, "*")))
    sources = {
        "train": {
            "bccd": [os.path.join(bccd, "JPEGImages", f"{i}.jpg") for i in split_ids("trainval")],
            "canvases": canvases("train"),
        },
        "validation": {
            "bccd": [os.path.join(bccd, "JPEGImages", f"{i}.jpg") for i in split_ids("test")[:HELD_OUT]],
            "canvases": canvases("val")[:HELD_OUT],
        },
    }
    counts = {}
    for split, by_source in sources.items():
        for source, files in by_source.items():
            folder = os.path.join(p["images"], split, source)
            os.makedirs(folder, exist_ok=True)
            for f in files:
                os.symlink(os.path.abspath(f), os.path.join(folder, os.path.basename(f)))
            counts[f"{split}/{source}"] = len(files)
    write_json(done, counts)


# --- (b) PreDet pre-training -------------------------------------------------------------------


def pretrain_config(root: str, name: str, smoke: bool):
    config = repo_config(f"configs/predet/pretrain.py:lite0,{PRETRAIN[name]}")
    steps = SMOKE_STEPS if smoke else PREDET_STEPS
    if name in LABELLED:  # COCO folder of the canvases; held out: 64 validation canvases
        from frozen_det.data.offline import fashion_mnist

        data = {"data.path": paths(root)["voc"], "data.eval_split": "val", "data.num_eval_examples": 2 * HELD_OUT}
        data["model.predet.num_labels"] = len(fashion_mnist.CLASSES)
    else:
        data = {"data.path": paths(root)["images"], "data.num_eval_examples": 0}
    set_fields(
        config,
        {
            **data,
            "data.eval_batch_size": 8,
            "train.total_steps": steps,
            "train.checkpoint_every": steps,
            "train.log_every": 5 if smoke else 25,
            "train.schedule.boundaries": (int(steps * 0.8),),
            "train.schedule.warmup_steps": 2 if smoke else 20,
        },
    )
    return config


def ensure_pretrained(root: str, name: str, smoke: bool) -> str:
    workdir = os.path.join(root, "predet", name)
    config = pretrain_config(root, name, smoke)
    if final_eval(workdir, config) is None:
        train_row(f"predet/{name}", workdir, config)
    return workdir


# --- (c) k-shot fine-tuning --------------------------------------------------------------------


def finetune_rows() -> list[str]:
    return [f"{target}/{KSHOT}shot/{init}/s{seed}" for seed in SEEDS for target in TARGETS for init in INITS]


def finetune_config(root: str, name: str, smoke: bool):
    target, kshot, init, seed = name.split("/")
    config = repo_config(f"configs/dap/detector.py:{target},lite0")
    s = int(seed[1:])
    overrides = {"data.kshot": int(kshot[: -len("shot")]), "train.seed": s, "data.seed": s, "data.kshot_seed": s}
    source = HEADS_ONLY.get(init, init)
    overrides["train.init_from"] = "" if init == "imagenet" else os.path.join(root, "predet", source)
    if init in HEADS_ONLY:
        overrides["train.init_exclude"] = tuple(config.train.init_exclude) + BACKBONE
    if target == "voc":
        overrides["data.path"] = paths(root)["voc"]
    if smoke:
        overrides.update(
            {
                "train.total_steps": SMOKE_STEPS,
                "train.eval_every": SMOKE_STEPS // 2,
                "train.checkpoint_every": SMOKE_STEPS,
                "train.log_every": 5,
                "train.schedule.warmup_steps": 2,
            }
        )
    set_fields(config, overrides)
    return config


def run_finetune(root: str, name: str, smoke: bool) -> None:
    config = finetune_config(root, name, smoke)
    workdir = os.path.join(root, name)
    if final_eval(workdir, config) is not None:
        return
    init = name.split("/")[2]
    if init != "imagenet":
        ensure_pretrained(root, HEADS_ONLY.get(init, init), smoke)
    train_row(name, workdir, config)


# --- (e) Fig. 5b ---------------------------------------------------------------------------------


def ensure_similarity(root: str, smoke: bool) -> dict:
    """ROOT/box_similarity/box_similarity.json: the ImageNet Lite0 vs the PreDet rows."""
    out = os.path.join(root, "box_similarity")
    path = os.path.join(out, "box_similarity.json")
    if os.path.exists(path):
        return read_json(path)
    from plot_box_similarity import compare, load_images, plot

    for name in SIMILARITY_RUNS[1:]:
        ensure_pretrained(root, name, smoke)
    runs = {"imagenet": "lite0", **{name: os.path.join(root, "predet", name) for name in SIMILARITY_RUNS[1:]}}
    images, references, described = load_images(paths(root)["voc"], canvas=128, max_images=16 if smoke else 64)
    results = compare({INITS[k]: v for k, v in runs.items()}, images, references)
    os.makedirs(out, exist_ok=True)
    value = {"images": described, "runs": results}
    write_json(path, value)
    plot(results, os.path.join(root, "similarity_vs_iou.png"), f"similarity vs IoU on {described}")
    return value


# --- (d, f) tables and figures -----------------------------------------------------------------


def last_train_metrics(workdir: str) -> dict:
    path = os.path.join(workdir, "train_metrics.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        lines = f.read().splitlines()
    return json.loads(lines[-1]) if lines else {}


def backbone_drift(workdir: str) -> dict:
    """{group: relative L2 distance of its parameters from the ImageNet Lite0} at the PreDet
    row's last checkpoint (frozen_det.evaluation.drift), cached in WORKDIR/drift.json."""
    path = os.path.join(workdir, "drift.json")
    if not os.path.exists(path):
        from frozen_det.training.run import Run

        with Run(workdir) as run:
            drift = run.drift()
        write_json(path, {group: v["params"] for group, v in drift[max(drift)].items()})
    return read_json(path)


def collect(root: str, smoke: bool) -> dict:
    pretrained = {}
    for name in PRETRAIN:
        workdir = os.path.join(root, "predet", name)
        config = pretrain_config(root, name, smoke)
        result = final_eval(workdir, config)
        row = {"row": f"predet/{name}", "losses": PRETRAIN[name], "status": "pending" if result is None else "done"}
        if result is not None:
            row.update({k: v for k, v in result.items() if not isinstance(v, str)})
            row["train_seconds"] = train_seconds(workdir)
            row["steps"] = int(config.train.total_steps)
            row["last_train_metrics"] = last_train_metrics(workdir)
            row["backbone_drift"] = backbone_drift(workdir)
        pretrained[name] = row
    rows = []
    for name in finetune_rows():
        config = finetune_config(root, name, smoke)
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
            row["restored_by_module"] = {
                m: sum(1 for path in report.get("restored", []) if path.split("/")[1] == m) for m in MODULES
            }
            row["fresh_leaves"] = len(report.get("not_in_source", [])) + len(report.get("excluded", []))
        rows.append(row)
    return {
        "smoke": smoke,
        "pretrained": pretrained,
        "finetune": rows,
        "box_similarity": read_json(os.path.join(root, "box_similarity", "box_similarity.json")),
        "data": read_json(os.path.join(paths(root)["images"], "done.json")),
    }


def _minutes(seconds) -> str:
    return f"{seconds / 60:.1f}" if seconds else "-"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(results: dict) -> str:
    from frozen_det.evaluation.drift import BACKBONE_GROUPS

    lines = []
    if results["smoke"]:
        lines += ["**Smoke run: every row at ~10 steps; the numbers check the pipeline, not PreDet.**", ""]
    lines += [f"Pre-training images: {results['data']}", ""]
    lines += ["### PreDet pre-training: pretext diagnostics on the held-out images", ""]
    lines += [
        "| row | losses | steps | retrieval top-1 | chance 1/(neg+1) | CRPN query recall "
        "| final train loss | backbone drift stem / stage1-4 | train min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in results["pretrained"].items():
        if p["status"] != "done":
            lines.append(f"| {name} | {p['losses']} | pending | | | | | | |")
            continue
        loss = p["last_train_metrics"].get("total")
        drift = " / ".join(f"{p['backbone_drift'][g]:.3f}" for g in BACKBONE_GROUPS)
        lines.append(
            f"| {name} | {p['losses']} | {p['steps']} | {_fmt(p.get('retrieval_top1'))} "
            f"| {_fmt(p.get('retrieval_chance'))} | {_fmt(p.get('crpn_query_recall'))} | {_fmt(loss)} "
            f"| {drift} | {_minutes(p['train_seconds'])} |"
        )
    rows = results["finetune"]
    lines += ["", f"### {KSHOT}-shot fine-tuning (AP / AP50 at the end; mean ± std over {len(SEEDS)} seeds)", ""]
    lines += ["| target | " + " | ".join(INITS.values()) + " |", "|---" * (len(INITS) + 1) + "|"]
    for target, title in TARGETS.items():
        cells = []
        for init in INITS:
            members = [r for r in rows if r["target"] == target and r["init"] == init]
            done = [r for r in members if r["status"] == "done"]
            ap, ap50 = (seed_cell([r[m] for r in done], len(members)) for m in ("AP", "AP50"))
            cells.append(f"{ap} / {ap50}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", "Leaves restored from the PreDet run (init_from.json; fresh: not in the source or excluded):", ""]
    lines += ["| row | restored | " + " | ".join(MODULES) + " | fresh | train min |", "|---" * (len(MODULES) + 4) + "|"]
    for r in rows:
        if r["status"] == "done":
            if r["init"] == "imagenet":
                cells = ["- (no init_from)"] + ["-"] * (len(MODULES) + 1)
            else:
                by_module = [str(r["restored_by_module"][m]) for m in MODULES]
                cells = [str(r["restored_leaves"])] + by_module + [str(r["fresh_leaves"])]
            lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {_minutes(r['train_seconds'])} |")
    sim = results["box_similarity"]
    if sim:
        lines += ["", f"### Fig. 5b: RoI feature similarity vs IoU ({sim['images']})", ""]
        lines += ["| features | bucket | pairs | Pearson | Spearman |", "|---|---|---|---|---|"]
        for name, r in sim["runs"].items():
            for bucket in ("small", "medium", "large", "all"):
                s = r[bucket]
                lines.append(f"| {name} | {bucket} | {s['pairs']} | {_fmt(s['pearson'])} | {_fmt(s['spearman'])} |")
    return "\n".join(lines) + "\n"


def plot_learning_curves(results: dict, output: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["finetune"] if r["status"] == "done"]
    if not rows:
        return
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(10, 3.8), squeeze=False)
    for j, (target, title) in enumerate(TARGETS.items()):
        ax = axes[0][j]
        for init, label in INITS.items():
            curves = [r["curve"] for r in rows if r["target"] == target and r["init"] == init]
            if not curves:
                continue
            steps = [s for s, _, _ in curves[0]]
            values = np.asarray([[ap50 for _, _, ap50 in c] for c in curves if len(c) == len(steps)])
            ax.plot(steps, values.mean(0), marker="o", label=label)
            if len(values) > 1:
                ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
        ax.set_title(f"{title}, {KSHOT}-shot")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("AP50")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("PreDet in miniature: learning curves (mean of seeds, band = min-max)")
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    steps = [f"predet/{name}" for name in PRETRAIN] + ["similarity"]
    all_rows = steps + finetune_rows()
    # --root default: /tmp/predet_study, or /tmp/predet_study_smoke with --smoke
    parser = study_arguments(__doc__, "", f"comma-separated (default: {','.join(all_rows)})")
    parser.add_argument("--smoke", action="store_true", help=f"every row at {SMOKE_STEPS} steps, small canvases")
    args = parser.parse_args(argv)
    root = args.root or ("/tmp/predet_study_smoke" if args.smoke else "/tmp/predet_study")
    logging.basicConfig(level=logging.INFO)
    from frozen_det.runtime import quiet_tensorflow

    quiet_tensorflow()
    chosen = chosen_rows(args.rows, all_rows)
    if not args.table_only:
        ensure_data(root, args.smoke)
        for name in chosen:
            if name == "similarity":
                ensure_similarity(root, args.smoke)
            elif name in steps:
                ensure_pretrained(root, name.split("/")[1], args.smoke)
            else:
                if args.force:
                    shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                run_finetune(root, name, args.smoke)
    results = collect(root, args.smoke)
    write_results(root, markdown(results), results)
    plot_learning_curves(results, os.path.join(root, "learning_curves.png"))
    print(json.dumps({"written": os.path.join(root, "results.md")}))


if __name__ == "__main__":
    main()
