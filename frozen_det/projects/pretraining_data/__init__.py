"""What makes a pre-training set good, in miniature on real offline data (README.md).

Huh, Agrawal, Efros 2016 (arXiv:1608.08614) with a narrow ResNet-18 (width 0.25,
configs/classification/fashion_mnist.py) pre-trained on subsets of Fashion-MNIST, as rows:

* ``pretrain/<setting>``: the pre-training on a subset (``SETTINGS``: the paper's Figure 1,
  images per class 100 / 50 / 25 / 10%; Figure 2, classes 10 / 5 / 2, both as the paper has it
  (``merged/K``: the ten classes merged at random into K labels, every image kept) and as a
  subset (``classes/K``: K classes and only their images, so the image count falls with the
  class count); Table 1, Fashion-MNIST's
  four coarse groups, tops / trousers / footwear / bags, vs the ten fine classes; Table 2, a
  fixed budget of 6,000 images as 10 x 600, 5 x 1,200 or 2 x 3,000), every one the same 1,500
  steps of batch 64, the subset drawn by the row's seed. Measured on its source: top-1 on its own
  label set (Fashion-MNIST test) and the induction accuracy (sec. 5.3; for a class subset also on
  the classes absent from pre-training alone): kNN (k = 20, cosine)
  top-1 / top-5 on all ten fine classes, features of the test split's first 5,000 images as the
  memory and the other 5,000 as queries; ``pretrain/images/100`` also sec. 5.4's coarse minus
  mean sub-class accuracy per group;
* ``canvases/<setting>``: transferred (``train.init_from``: backbone restored, heads fresh) to a
  detection target, VOC-like canvases of Fashion-MNIST items (configs/canvases/detector.py, 500
  steps; the validation canvases' items are test images, never seen in pre-training);
* ``bccd5/<setting>``: transferred to a classification target, BCCD cell crops with 5 training
  crops per class (configs/classification/bccd_crops.py:finetune,resnet, 300 steps; the same 5
  crops at every seed, ``data.subset.seed`` 0);

and both targets from random weights (``<target>/scratch``). A target row at seed s starts from
its pre-training row at seed s.

    python -m frozen_det.projects.pretraining_data --root /tmp/pretraining_data --rows canvases/images/10
    python -m frozen_det.projects.pretraining_data --table_only

BCCD comes from BCCD_DIR or datasets/bccd (configs/data/bccd.py); Fashion-MNIST from the Debian
package dataset-fashion-mnist.
"""

from __future__ import annotations

import functools

from frozen_det.data.classification.taxonomy import FASHION_MNIST_GROUPS
from frozen_det.projects import runner
from frozen_det.projects import tables as t
from frozen_det.projects.canvases import ensure_canvases
from frozen_det.projects.runner import Row, Study

FMNIST = "configs/classification/fashion_mnist.py"
CANVASES = "{root}/canvases_voc"
SHOTS = 5  # BCCD training crops per class (with 20 every start reaches ~0.99: no signal)
KNN = 20
# setting -> (its label on the page, the overrides of the Fashion-MNIST pre-training; None: no
# pre-training). model.num_classes: the label set's size (a test checks it against the data).
SETTINGS = {
    "images/100": ("images/100 (all 6,000 per class)", {}),
    "images/50": ("images/50", {"data.subset.images_per_class": 0.5}),
    "images/25": ("images/25", {"data.subset.images_per_class": 0.25}),
    "images/10": ("images/10", {"data.subset.images_per_class": 0.1}),
    "classes/5": ("classes/5 (random 5 of 10)", {"data.subset.num_classes": 5, "model.num_classes": 5}),
    "classes/2": ("classes/2", {"data.subset.num_classes": 2, "model.num_classes": 2}),
    # Fig. 2's protocol: fewer classes, every image (the ten classes merged at random into K).
    "merged/5": (
        "merged/5 (10 classes merged into 5, all images)",
        {"data.labels": "merged:5", "model.num_classes": 5},
    ),
    "merged/2": ("merged/2", {"data.labels": "merged:2", "model.num_classes": 2}),
    "coarse/4": (
        "coarse/4 (tops / trousers / footwear / bags)",
        {"data.taxonomy": "fashion_mnist", "data.labels": "bottom_up:1", "model.num_classes": 4},
    ),
    # The same 600 images per class as images/10 at the same seed: the determinism check.
    "budget/10x600": ("budget/10x600 (= images/10)", {"data.subset.image_budget": 6000}),
    "budget/5x1200": (
        "budget/5x1200",
        {"data.subset.image_budget": 6000, "data.subset.num_classes": 5, "model.num_classes": 5},
    ),
    "budget/2x3000": (
        "budget/2x3000",
        {"data.subset.image_budget": 6000, "data.subset.num_classes": 2, "model.num_classes": 2},
    ),
    "scratch": ("scratch (no pre-training)", None),
}
TARGETS = {
    "canvases": ("configs/canvases/detector.py", {"data.path": CANVASES, "train.total_steps": 500}),
    "bccd5": (
        "configs/classification/bccd_crops.py:finetune,resnet",
        {"train.total_steps": 300, "data.subset.images_per_class": SHOTS},
    ),
}


def prepare(root: str, smoke: bool) -> None:
    """The VOC-like canvases of the detection target."""
    num_train, num_val = (40, 16) if smoke else (2000, 400)
    ensure_canvases(CANVASES.format(root=root), "voc", num_train=num_train, num_val=num_val, seed=0)


# --- pre-training and its source measures -------------------------------------------------------


def source_measures(run_dir: str, config, coarse_minus_fine: bool = False) -> dict:
    """The induction accuracy (sec. 5.3: kNN on the ten fine classes, whatever labels the row
    trained on) and, with ``coarse_minus_fine`` (a classifier of the ten fine classes), sec. 5.4's
    coarse minus mean sub-class accuracy per group, on Fashion-MNIST test."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from frozen_det.data import classification
    from frozen_det.data.classification import taxonomy as taxonomy_lib
    from frozen_det.data.classification.subsets import label_set
    from frozen_det.data.offline import fashion_mnist
    from frozen_det.evaluation.classification import coarse_minus_fine_accuracy, extract_features, knn_accuracy
    from frozen_det.evaluation.gather import gathered_outputs
    from frozen_det.training.run import Run

    with Run(run_dir, config) as run:
        task, model, variables = run.task, run.model, run.variables()
    every_class = runner.repo_config(FMNIST).data  # all ten classes, fine labels
    pipeline = classification.build_eval_pipeline(every_class, process_index=0, process_count=1)
    features, fine = extract_features(task.features_fn(model), variables, pipeline, label_key="fine_label")
    half = len(fine) // 2
    knn = knn_accuracy(features[:half], fine[:half], features[half:], fine[half:], k=KNN, num_classes=10)
    out = {f"induction_{k}": v for k, v in knn.items()}
    unseen = sorted(set(range(10)) - set(label_set(config.data, list(fashion_mnist.CLASSES)).kept))
    if unseen:  # sec. 5.3 proper: induction on the classes the pre-training never saw
        memory, queries = np.isin(fine[:half], unseen), np.isin(fine[half:], unseen)
        knn_unseen = knn_accuracy(
            features[:half][memory],
            fine[:half][memory],
            features[half:][queries],
            fine[half:][queries],
            k=KNN,
            num_classes=10,
        )
        out["induction_unseen_top1"] = knn_unseen["top1"]
        out["unseen_classes"] = len(unseen)
    if coarse_minus_fine:
        predict = jax.jit(lambda v, x: {"prediction": jnp.argmax(model.apply(v, x, train=False)["logits"], -1)})
        outputs = list(gathered_outputs(predict, variables, pipeline, ("image",), carry=("fine_label",)))
        predictions = np.concatenate([o["prediction"] for o in outputs])
        labels = np.concatenate([o["fine_label"] for o in outputs])
        groups, names = taxonomy_lib.fashion_mnist(), list(taxonomy_lib.FASHION_MNIST_GROUPS)
        group_of = [names.index(groups.ancestor(leaf, 1)) for leaf in fashion_mnist.CLASSES]
        difference = coarse_minus_fine_accuracy(predictions, labels, group_of)
        out["coarse_minus_fine"] = {names[g]: v for g, v in difference.items()}
    return out


# --- the rows ----------------------------------------------------------------------------------


def _rows(setting: str, overrides: dict | None) -> tuple[Row, ...]:
    """A setting's pre-training (unless scratch) and its two targets."""
    source = None if overrides is None else f"pretrain/{setting}"
    pre = (
        ()
        if overrides is None
        else (
            Row(
                source,
                FMNIST,
                # The subset is drawn by the row's seed: which classes and images a setting keeps
                # varies with the seed, as in the paper's repeats.
                {**overrides, "data.subset.seed": "{seed}"},
                measure=functools.partial(source_measures, coarse_minus_fine=setting == "images/100"),
            ),
        )
    )
    targets = tuple(Row(f"{target}/{setting}", c, o, init_from=source) for target, (c, o) in TARGETS.items())
    return pre + targets


ROWS = tuple(row for setting, (_, overrides) in SETTINGS.items() for row in _rows(setting, overrides))


# --- tables ------------------------------------------------------------------------------------


def _group(records: list[dict], *gets) -> list[str]:
    """[n, a cell per getter] of one row's records: "pending" before the first."""
    if not records:
        return ["0"] + ["pending"] * len(gets)
    return [str(len(records))] + [t.cell(t.metric(records, get)) for get in gets]


def _metric(key: str):
    return lambda r: r["metrics"].get(key)


def _extra(key: str):
    return lambda r: r.get("extra", {}).get(key)


HEADER = [
    "pre-training",
    "n (pre-training)",
    "source top-1 (own labels)",
    "induction kNN top-1",
    "induction kNN top-5",
    "induction kNN top-1, unseen classes only",
    "n (canvases)",
    "canvases AP",
    "canvases AP50",
    "n (BCCD)",
    f"BCCD {SHOTS}-shot mean per-class acc.",
    "train min (pre-training / canvases / BCCD)",
]


def _setting_cells(setting: str, grouped: dict[str, list[dict]]) -> list[str]:
    label, overrides = SETTINGS[setting]
    pre, det, bccd = (grouped.get(f"{part}/{setting}", []) for part in ("pretrain", *TARGETS))
    if overrides is None:
        source = ["—"] * 5
    else:
        source = _group(pre, _metric("top1"), _extra("induction_top1"), _extra("induction_top5"))
        source.append(t.cell(t.metric(pre, _extra("induction_unseen_top1"))) if pre else "pending")
    minutes = " / ".join(t.cell(t.metric(rs, lambda r: r["train_seconds"]), 1, 1 / 60) for rs in (pre, det, bccd))
    return [
        label,
        *source,
        *_group(det, _metric("AP"), _metric("AP50")),
        *_group(bccd, _metric("mean_per_class_accuracy")),
        minutes,
    ]


def tables(records: list[dict]) -> dict[str, str]:
    grouped = t.by_row(records)
    main = t.markdown(HEADER, [_setting_cells(setting, grouped) for setting in SETTINGS])
    fine = grouped.get("pretrain/images/100", [])
    coarse = t.markdown(
        ["group", "sub-classes", "n", "coarse minus mean sub-class accuracy"],
        [
            [group, ", ".join(members), *_group(fine, lambda r, g=group: r["extra"]["coarse_minus_fine"].get(g))]
            for group, members in FASHION_MNIST_GROUPS.items()
        ],
    )
    return {
        "pretraining_data": main + "\n" + t.provenance_line(records) + "\n",
        "coarse_minus_fine": coarse + "\n" + t.provenance_line(fine) + "\n",
    }


STUDY = Study(name="pretraining_data", doc=__doc__.split("\n")[0], rows=ROWS, tables=tables, seeds=3, prepare=prepare)
