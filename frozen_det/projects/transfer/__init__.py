"""Classification pre-training and transfer, in miniature on real offline data (README.md):

* BCCD cell crops (configs/classification/bccd_crops.py) from the packaged ImageNet
  EfficientNet-Lite0: linear probe vs fine-tuning vs the same network from scratch, with every
  training crop and with 20 per class;
* a narrow ResNet-18 (width 0.25) pre-trained on Fashion-MNIST (configs/classification/
  fashion_mnist.py; seed s pre-trains the network that the transfer rows at seed s start from),
  transferred (``train.init_from``: its backbone, fresh heads) to a detection target, VOC-like
  canvases of Fashion-MNIST items (configs/canvases/detector.py; the validation canvases' items
  are Fashion-MNIST test images, never seen in pre-training), and to a classification target,
  BCCD cell crops with 20 and with 5 training crops per class, each against the same network
  from random weights.

    python -m frozen_det.projects.transfer --root /tmp/transfer [--rows canvas/fmnist] [--seeds 3]
    python -m frozen_det.projects.transfer --table_only

BCCD comes from BCCD_DIR or datasets/bccd (configs/data/bccd.py); Fashion-MNIST from the Debian
package dataset-fashion-mnist.
"""

from __future__ import annotations

import os

from frozen_det.projects import tables as t
from frozen_det.projects.canvases import ensure_canvases
from frozen_det.projects.runner import Row, Study

SHOTS = 20  # training crops per class of the few-shot rows (pre-training matters most with few)
CROPS = "configs/classification/bccd_crops.py"
CROPS_METRIC = ("mean_per_class_accuracy", "mean per-class acc.")
FEW = {"data.subset.images_per_class": SHOTS, "train.total_steps": 300}
CANVASES = "{root}/canvases_voc"

# (row, config, overrides, init_from, target, start, (metric key, label) ...)
_TABLE = (
    (
        "fmnist",
        "configs/classification/fashion_mnist.py",
        {},
        None,
        "Fashion-MNIST (source)",
        "scratch",
        (("top1", "top-1"),),
    ),
    *(
        (f"bccd_lite0/{s}", f"{CROPS}:{s}", {}, None, "BCCD crops, all", f"Lite0 {label}", (CROPS_METRIC,))
        for s, label in (("linear_probe", "linear probe"), ("finetune", "fine-tuned"), ("scratch", "from scratch"))
    ),
    *(
        (
            f"bccd_lite0_{SHOTS}shot/{s}",
            f"{CROPS}:{s}",
            FEW,
            None,
            f"BCCD crops, {SHOTS} per class",
            f"Lite0 {label}",
            (CROPS_METRIC,),
        )
        for s, label in (("linear_probe", "linear probe"), ("finetune", "fine-tuned"), ("scratch", "from scratch"))
    ),
    *(
        (
            f"bccd_resnet_{shots}shot/{init}",
            f"{CROPS}:finetune,resnet",
            dict(FEW, **{"data.subset.images_per_class": shots}),
            "fmnist" if init == "fmnist" else None,
            f"BCCD crops, {shots} per class",
            "ResNet from Fashion-MNIST" if init == "fmnist" else "ResNet from scratch",
            (CROPS_METRIC,),
        )
        for shots in (SHOTS, 5)
        for init in ("scratch", "fmnist")
    ),
    *(
        (
            f"canvas/{init}",
            "configs/canvases/detector.py",
            {"data.path": CANVASES},
            "fmnist" if init == "fmnist" else None,
            "VOC-like canvases",
            "ResNet from Fashion-MNIST" if init == "fmnist" else "ResNet from scratch",
            (("AP", "AP"), ("AP50", "AP50")),
        )
        for init in ("scratch", "fmnist")
    ),
)
ROWS = tuple(Row(name, config, overrides, init_from) for name, config, overrides, init_from, *_ in _TABLE)


def prepare(root: str, smoke: bool) -> None:
    num_train, num_val = (40, 16) if smoke else (2000, 400)
    ensure_canvases(os.path.join(root, "canvases_voc"), "voc", num_train=num_train, num_val=num_val, seed=0)


HEADER = ["target", "start", "metric", "n", "mean ± s.e.", "per seed", "train min"]


def tables(records: list[dict]) -> dict[str, str]:
    grouped = t.by_row(records)
    body = []
    for name, _, _, _, target, start, metrics in _TABLE:
        done = grouped.get(name, [])
        if not done:
            body.append([target, start, " / ".join(label for _, label in metrics), "0", "pending", "", ""])
            continue
        for key, label in metrics:
            values = t.metric(done, lambda r, key=key: r["metrics"].get(key))
            per_seed = ", ".join(f"{v:.3f}" for v in values)
            minutes = t.cell(t.metric(done, lambda r: r["train_seconds"]), 1, 1 / 60)
            body.append([target, start, label, str(len(values)), t.cell(values), per_seed, minutes])
    return {"transfer": t.markdown(HEADER, body) + "\n" + t.provenance_line(records) + "\n"}


STUDY = Study(name="transfer", doc=__doc__.split("\n")[0], rows=ROWS, tables=tables, seeds=3, prepare=prepare)
