"""What makes a pre-training set good (Huh, Agrawal, Efros 2016, arXiv:1608.08614), in miniature
on real offline data: a narrow ResNet-18 (width 0.25, configs/classification/fashion_mnist.py)
pre-trained on subsets of Fashion-MNIST, then measured

* on its source: accuracy on its own label set (Fashion-MNIST test) and the induction
  accuracy (sec. 5.3): kNN (k = 20, cosine) top-1 / top-5 on all ten fine classes, features of
  the test split's first 5,000 images as the memory and the other 5,000 as queries;
* transferred (`train.init_from`, backbone restored, heads fresh) to a detection target,
  VOC-like canvases of Fashion-MNIST items (configs/canvases/detector.py; 500 steps), and to a
  classification target, BCCD cell crops with 5 training crops per class
  (configs/classification/bccd_crops.py:finetune,resnet; 300 steps);

for the subsets of the paper's Figure 1 (images per class 100 / 50 / 25 / 10%), Figure 2
(classes 10 / 5 / 2), Table 1 (coarse labels: Fashion-MNIST's four groups, tops / trousers /
footwear / bags, vs the ten fine classes) and Table 2 (a fixed budget of 6,000 images as 10 x
600, 5 x 1,200 or 2 x 3,000), and for random initialisation, over two seeds (the pre-training's
subset, initialisation and data order, and the transfer's; by default every setting with
seed 0 and four of them with seed 1 too, as the CPU allows). Every pre-training runs the same
1,500 steps of batch 64. The fine 100% row also reports sec. 5.4's "coarse minus mean of its
sub-classes" accuracy per group.

    python tools/pretraining_data_study.py                 # every row; table in /tmp/pretraining_data_study
    python tools/pretraining_data_study.py --rows images/50/s0 --targets det
    python tools/pretraining_data_study.py --table_only

Resumable: finished steps are read back, interrupted runs resume from their checkpoints.
Writes ROOT/results.md and ROOT/results.json.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_common import (  # noqa: E402
    ensure_canvases,
    final_eval,
    read_json,
    repo_config,
    study_arguments,
    train_row,
    write_json,
    write_results,
)

SEEDS = (0, 1)
SHOTS = 5  # BCCD training crops per class (with 20 every start reaches ~0.99: no signal)
# setting -> data.subset / data.labels overrides of the Fashion-MNIST pre-training
SETTINGS = {
    "images/100": {},
    "images/50": {"subset.images_per_class": 0.5},
    "images/25": {"subset.images_per_class": 0.25},
    "images/10": {"subset.images_per_class": 0.1},
    "classes/5": {"subset.num_classes": 5},
    "classes/2": {"subset.num_classes": 2},
    "coarse/4": {"taxonomy": "fashion_mnist", "labels": "bottom_up:1"},
    "budget/10x600": {"subset.image_budget": 6000},
    "budget/5x1200": {"subset.image_budget": 6000, "subset.num_classes": 5},
    "budget/2x3000": {"subset.image_budget": 6000, "subset.num_classes": 2},
    "scratch": None,  # no pre-training: the targets from random weights
}
# The CPU budget: every setting with seed 0, the second seed for a few, to measure the noise.
DEFAULT_ROWS = [f"{s}/s0" for s in SETTINGS] + [f"{s}/s1" for s in ("images/100", "images/10", "coarse/4", "scratch")]
TARGETS = {
    "det": ("configs/canvases/detector.py", {"train.total_steps": 500}, ("AP", "AP50")),
    "bccd5": (
        "configs/classification/bccd_crops.py:finetune,resnet",
        {"train.total_steps": 300, "data.subset.images_per_class": SHOTS},
        ("mean_per_class_accuracy",),
    ),
}


def pretrain_config(setting: str, seed: int):
    overrides = {f"data.{k}": v for k, v in SETTINGS[setting].items()}
    config = repo_config("configs/classification/fashion_mnist.py", overrides)
    config.train.seed, config.data.seed, config.data.subset.seed = seed, seed, seed
    if config.data.labels != "fine" or config.data.subset.num_classes:
        from frozen_det.data.classification.subsets import label_set
        from frozen_det.data.offline import fashion_mnist

        config.model.num_classes = len(label_set(config.data, list(fashion_mnist.CLASSES)).names)
    return config


def target_config(target: str, setting: str, seed: int, root: str, canvases: str):
    path, overrides, _ = TARGETS[target]
    config = repo_config(path, overrides)
    config.train.seed, config.data.seed = seed, seed
    if target == "det":
        config.data.path = canvases
    if setting != "scratch":
        config.train.init_from = pretrain_dir(root, setting, seed)
    return config


def pretrain_dir(root, setting, seed):
    return os.path.join(root, "pretrain", setting, f"s{seed}")


def target_dir(root, target, setting, seed):
    return os.path.join(root, target, setting, f"s{seed}")


def source_measures(root: str, setting: str, seed: int) -> dict:
    """Induction accuracy (kNN on the ten fine classes) and, for the fine 100% row, the coarse
    minus sub-class accuracy per group; cached in the pre-training's workdir."""
    workdir = pretrain_dir(root, setting, seed)
    path = os.path.join(workdir, "source_measures.json")
    cached = read_json(path)
    if cached is not None:
        return cached
    from frozen_det.data import classification
    from frozen_det.data.classification import taxonomy as taxonomy_lib
    from frozen_det.data.offline import fashion_mnist
    from frozen_det.evaluation.classification import coarse_minus_fine_accuracy, extract_features, knn_accuracy
    from frozen_det.training.run import Run

    config = pretrain_config(setting, seed)
    with Run(workdir, config) as run:
        task, model, variables = run.task, run.model, run.variables()
    all_classes = pretrain_config("images/100", seed).data  # every class, fine labels
    pipeline = classification.build_eval_pipeline(all_classes, process_index=0, process_count=1)
    features, fine = extract_features(task.features_fn(model), variables, pipeline, label_key="fine_label")
    half = len(fine) // 2
    out = {
        f"induction_{k}": v
        for k, v in knn_accuracy(
            features[:half], fine[:half], features[half:], fine[half:], k=20, num_classes=10
        ).items()
    }
    if setting == "images/100":
        import jax

        logits = jax.jit(lambda v, b: model.apply(v, b, train=False)["logits"])
        predictions = []
        for batch in classification.build_eval_pipeline(all_classes, process_index=0, process_count=1):
            predictions.append(
                np.argmax(np.asarray(logits(variables, {"image": batch["image"]})), 1)[batch["example_valid"]]
            )
        groups = taxonomy_lib.fashion_mnist()
        names = list(taxonomy_lib.FASHION_MNIST_GROUPS)
        group_of = [names.index(groups.ancestor(leaf, 1)) for leaf in fashion_mnist.CLASSES]
        diff = coarse_minus_fine_accuracy(np.concatenate(predictions), fine, group_of)
        out["coarse_minus_fine"] = {names[g]: v for g, v in diff.items()}
    write_json(path, out)
    return out


def run(setting: str, seed: int, targets: list, root: str, canvases: str) -> None:
    if setting != "scratch":
        workdir = pretrain_dir(root, setting, seed)
        config = pretrain_config(setting, seed)
        if final_eval(workdir, config) is None:
            train_row(f"pretrain/{setting}/s{seed}", workdir, config)
        source_measures(root, setting, seed)
    for target in targets:
        workdir = target_dir(root, target, setting, seed)
        config = target_config(target, setting, seed, root, canvases)
        if final_eval(workdir, config) is None:
            train_row(f"{target}/{setting}/s{seed}", workdir, config)


def collect(root: str, canvases: str) -> list[dict]:
    rows = []
    for setting in SETTINGS:
        for seed in SEEDS:
            row = {"setting": setting, "seed": seed}
            if setting != "scratch":
                result = final_eval(pretrain_dir(root, setting, seed), pretrain_config(setting, seed))
                if result is not None:
                    row["source_top1"] = result["top1"]
                    row.update(read_json(os.path.join(pretrain_dir(root, setting, seed), "source_measures.json")) or {})
            for target, (_, _, metrics) in TARGETS.items():
                result = final_eval(
                    target_dir(root, target, setting, seed), target_config(target, setting, seed, root, canvases)
                )
                for metric in metrics:
                    if result is not None:
                        row[f"{target}_{metric}"] = result[metric]
            rows.append(row)
    return rows


COLUMNS = (
    ("source_top1", "source top-1 (own labels)"),
    ("induction_top1", "induction kNN top-1"),
    ("induction_top5", "induction kNN top-5"),
    ("det_AP", "canvases AP"),
    ("det_AP50", "canvases AP50"),
    ("bccd5_mean_per_class_accuracy", f"BCCD {SHOTS}-shot mean per-class acc."),
)


def markdown(rows: list[dict]) -> str:
    lines = ["| pre-training | " + " | ".join(title for _, title in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for setting in SETTINGS:
        members = [r for r in rows if r["setting"] == setting]
        cells = []
        for key, _ in COLUMNS:
            values = [r[key] for r in members if key in r]
            if not values:
                cells.append("—" if setting == "scratch" and key.startswith(("source", "induction")) else "pending")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f} (1 seed)")
            else:
                cells.append(f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    fine = [r.get("coarse_minus_fine") for r in rows if r["setting"] == "images/100" and r.get("coarse_minus_fine")]
    if fine:
        groups = fine[0].keys()
        lines.append("")
        lines.append(
            "Coarse minus mean sub-class accuracy of the fine (100%) classifier (sec. 5.4), per group: "
            + ", ".join(f"{g} {np.mean([f[g] for f in fine]):+.3f}" for g in groups)
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = study_arguments(__doc__, "/tmp/pretraining_data_study", "SETTING/sSEED,... (default: DEFAULT_ROWS)", True)
    parser.add_argument("--targets", default="det,bccd5")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    canvases = args.canvases or os.path.join(args.root, "canvases_voc")
    targets = [t for t in args.targets.split(",") if t]
    chosen = [r for r in args.rows.split(",") if r] or DEFAULT_ROWS
    if not args.table_only:
        ensure_canvases(canvases, "voc", num_train=2000, num_val=400, seed=0)
        for row in chosen:
            setting, seed = row.rsplit("/s", 1)
            if args.force:
                shutil.rmtree(pretrain_dir(args.root, setting, int(seed)), ignore_errors=True)
            run(setting, int(seed), targets, args.root, canvases)
    rows = collect(args.root, canvases)
    table = markdown(rows)
    write_results(args.root, table, rows)


if __name__ == "__main__":
    main()
