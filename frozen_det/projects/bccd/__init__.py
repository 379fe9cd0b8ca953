"""The BCCD transfer study: the ImageNet EfficientNet-Lite0 trained from scratch, fine-tuned,
frozen, frozen + residual adapters and frozen + FiLM, under a Faster R-CNN FPN head, a Cascade
R-CNN head and RetinaNet on the same FPN levels (configs/bccd/), one schedule for all, on BCCD blood cells (README.md).

    python -m frozen_det.projects.bccd --root /tmp/bccd --rows frozen:fpn,finetune:fpn
    python -m frozen_det.projects.bccd --table_only

Columns: COCO AP / AP50 / AP75 on BCCD test (max 100 detections), per-class AP, train wall time
(training sessions with compilation and checkpoints, without the final evaluation) and seconds
per step, and from XLA (frozen_det.resources.train_step_cost, at the config's canvas and batch):
train-step GFLOPs, temporary memory, parameters (trainable / total).
"""

from __future__ import annotations

from frozen_det.projects import tables as t
from frozen_det.projects.runner import SMOKE_SCHEDULE, Row, Study

STRATEGIES = ("frozen", "adapters", "film", "finetune", "scratch")  # cheapest first
HEADS = ("fpn", "cascade", "retinanet")
CLASSES = ("Platelets", "RBC", "WBC")

ROWS = tuple(Row(f"{s}:{h}", f"configs/bccd/{s}.py:{h}", cost=True) for s in STRATEGIES for h in HEADS)

SMOKE = {**SMOKE_SCHEDULE, "data.canvas": 128}

HEADER = [
    "backbone",
    "head",
    "n",
    "AP",
    "AP50",
    "AP75",
    "AP " + " / ".join(CLASSES),
    "train time (min)",
    "s/step",
    "train-step GFLOPs",
    "train-step temp (MB)",
    "params trainable / total (M)",
]


def _cells(row: Row, records: list[dict]) -> list[str]:
    strategy, head = row.name.split(":")
    if not records:
        return [strategy, head, "0", "pending"] + [""] * (len(HEADER) - 4)
    m = lambda key: t.cell(t.metric(records, lambda r: r["metrics"].get(key)))
    per_class = " / ".join(
        t.cell(t.metric(records, lambda r, c=c: r["metrics"].get("per_class_AP", {}).get(c))) for c in CLASSES
    )
    steps = lambda r: r["resolved_config"]["train"]["total_steps"]
    cost = records[0].get("cost", {})  # the same for every seed: one config
    params = f"{cost.get('params_trainable', 0) / 1e6:.2f} / {cost.get('params_total', 0) / 1e6:.2f}" if cost else "—"
    return [
        strategy,
        head,
        str(len(records)),
        m("AP"),
        m("AP50"),
        m("AP75"),
        per_class,
        t.cell(t.metric(records, lambda r: r["train_seconds"]), 1, 1 / 60),
        t.cell(t.metric(records, lambda r: r["train_seconds"] / steps(r)), 2),
        f"{cost['train_step_gflops']:.1f}" if cost else "—",
        f"{cost['train_step_temp_bytes'] / 1e6:.0f}" if cost else "—",
        params,
    ]


def tables(records: list[dict]) -> dict[str, str]:
    grouped = t.by_row(records)
    body = [_cells(row, grouped.get(row.name, [])) for row in ROWS]
    return {"transfer": t.markdown(HEADER, body) + "\n" + t.provenance_line(records) + "\n"}


STUDY = Study(name="bccd", doc=__doc__.split("\n")[0], rows=ROWS, tables=tables, seeds=3, smoke=SMOKE)
