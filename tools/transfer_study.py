"""Classification pre-training and transfer, in miniature on real offline data:

* BCCD cell crops (configs/classification/bccd_crops.py) from the packaged ImageNet
  EfficientNet-Lite0: linear probe vs fine-tuning vs the same network from scratch;
* a narrow ResNet-18 (width 0.25) pre-trained on Fashion-MNIST (configs/classification/
  fashion_mnist.py), transferred (`train.init_from`: its backbone, fresh heads) to
  - a detection target: VOC-like canvases of Fashion-MNIST items (configs/canvases/detector.py,
    data from frozen_det.data.offline.canvases; the items of the validation canvases are Fashion-MNIST
    test images, never seen in pre-training),
  - a classification target: BCCD cell crops with 20 and with 5 training crops per class
    (bccd_crops.py:finetune,resnet; pre-training matters most with little target data),
  each against the same network from random weights, two seeds per row (train.seed and
  data.seed), so that the gap can be set against the run-to-run spread. The Lite0 rows run
  with every training crop and with 20 per class.

    python tools/transfer_study.py                       # every row; table in /tmp/transfer_study
    python tools/transfer_study.py --rows fmnist,canvas/scratch/s0
    python tools/transfer_study.py --table_only

Each row trains into ROOT/<row name> (frozen_det.training.loop.train_and_evaluate, then the
evaluate entry point's API) and is read back when its final evaluation exists, so the study
resumes where it stopped; rows that transfer from the pre-training run it first. Writes
ROOT/results.md and ROOT/results.json. BCCD comes from BCCD_DIR or datasets/bccd
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
    repo_config,
    study_arguments,
    train_row,
    train_seconds,
    write_results,
)

SEEDS = (0, 1)
PRETRAIN = "fmnist"
SHOTS = 20  # training crops per class of the few-shot BCCD rows (pre-training matters most with few)


def _rows() -> dict:
    """row name -> (config file:argument, seed, row to initialise from or None, target, metric keys,
    config overrides)."""
    crops = "configs/classification/bccd_crops.py"
    crops_metrics = ("mean_per_class_accuracy", "top1")
    few = {"data.subset.images_per_class": SHOTS, "train.total_steps": 300}
    rows = {PRETRAIN: ("configs/classification/fashion_mnist.py", 0, None, "Fashion-MNIST", ("top1",), {})}
    for seed in SEEDS:
        for strategy in ("linear_probe", "finetune", "scratch"):
            rows[f"bccd_lite0/{strategy}/s{seed}"] = (
                f"{crops}:{strategy}",
                seed,
                None,
                "BCCD crops",
                crops_metrics,
                {},
            )
            rows[f"bccd_lite0_{SHOTS}shot/{strategy}/s{seed}"] = (
                f"{crops}:{strategy}",
                seed,
                None,
                f"BCCD crops, {SHOTS} per class",
                crops_metrics,
                few,
            )
        for init in ("scratch", "fmnist"):
            source = PRETRAIN if init == "fmnist" else None
            rows[f"canvas/{init}/s{seed}"] = (
                "configs/canvases/detector.py",
                seed,
                source,
                "VOC-like canvases",
                ("AP", "AP50"),
                {},
            )
            for shots in (SHOTS, 5):
                rows[f"bccd_resnet_{shots}shot/{init}/s{seed}"] = (
                    f"{crops}:finetune,resnet",
                    seed,
                    source,
                    f"BCCD crops, {shots} per class",
                    crops_metrics,
                    dict(few, **{"data.subset.images_per_class": shots}),
                )
    return rows


ROWS = _rows()


def load_config(name: str, root: str, canvases: str):
    path, seed, init, _, _, overrides = ROWS[name]
    config = repo_config(path, overrides)
    config.train.seed = seed
    config.data.seed = seed
    if init:
        config.train.init_from = os.path.join(root, init)
    if name.startswith("canvas/"):
        config.data.path = canvases
    return config


def run(name: str, root: str, canvases: str) -> None:
    workdir = os.path.join(root, name)
    config = load_config(name, root, canvases)
    if final_eval(workdir, config) is not None:
        return
    init = ROWS[name][2]
    if init:
        run(init, root, canvases)
    train_row(name, workdir, config)


def collect(root: str, canvases: str) -> list[dict]:
    out = []
    for name, (_, seed, init, target, metrics, _) in ROWS.items():
        workdir = os.path.join(root, name)
        config = load_config(name, root, canvases)
        result = final_eval(workdir, config)
        row = {"row": name, "target": target, "seed": seed, "init": init or "", "status": "pending"}
        if result is not None:
            row.update(status="done", train_seconds=train_seconds(workdir), **{m: result[m] for m in metrics})
        out.append(row)
    return out


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def markdown(rows: list[dict]) -> str:
    """One line per (target, setting): the metrics' mean ± std over seeds and each seed's value."""
    groups: dict = {}
    for r in rows:
        setting = r["row"].rsplit("/s", 1)[0] if r["row"] != PRETRAIN else PRETRAIN
        groups.setdefault((r["target"], setting), []).append(r)
    lines = [
        "| target | row | metric | mean ± std over seeds | per seed | train min (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for (target, setting), members in groups.items():
        done = [m for m in members if m["status"] == "done"]
        if not done:
            lines.append(f"| {target} | {setting} | pending | | | |")
            continue
        for metric in ROWS[members[0]["row"]][4]:
            values = [m[metric] for m in done]
            minutes = np.mean([m["train_seconds"] or 0 for m in done]) / 60
            per_seed = ", ".join(f"{v:.3f}" for v in values) + (" (pending seeds)" if len(done) < len(members) else "")
            lines.append(f"| {target} | {setting} | {metric} | {_mean_std(values)} | {per_seed} | {minutes:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = study_arguments(
        __doc__, "/tmp/transfer_study", f"comma-separated rows (default all): {','.join(ROWS)}", True
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    canvases = args.canvases or os.path.join(args.root, "canvases_voc")
    chosen = chosen_rows(args.rows, list(ROWS))
    if not args.table_only:
        ensure_canvases(canvases, "voc", num_train=2000, num_val=400, seed=0)
        for name in chosen:
            if args.force:
                shutil.rmtree(os.path.join(args.root, name), ignore_errors=True)
            run(name, args.root, canvases)
    rows = collect(args.root, canvases)
    table = markdown(rows)
    write_results(args.root, table, rows)


if __name__ == "__main__":
    main()
