"""The BCCD transfer study: EfficientNet-Lite0 scratch / fine-tuned / frozen / frozen + adapters / frozen + FiLM,
under a Faster R-CNN FPN head and a Cascade R-CNN head (configs/bccd/), one schedule for all.

    python tools/bccd_study.py                              # every row, table in /tmp/bccd_study
    python tools/bccd_study.py --rows frozen:fpn,frozen:cascade
    python tools/bccd_study.py --rows finetune:fpn --force  # rerun a finished row
    python tools/bccd_study.py --table_only                 # the table from what has run so far

Each row trains into ROOT/<strategy>_<head> with the library's Python API
(frozen_det.training.loop.train_and_evaluate, then frozen_det.evaluate.evaluate on the test
split) and is timed. A row whose final evaluation JSON exists is read back, not rerun, so the
table can be assembled over several sessions; an interrupted row resumes from its checkpoint
(its timed sessions add up). Rows not asked for and not finished are listed as pending.

Columns: COCO AP / AP50 / AP75 on BCCD test (max 100 detections), per-class AP, train wall
time (training sessions incl. compilation and checkpoints, without the final evaluation) and
seconds per step, and from XLA (frozen_det.resources.train_step_cost, at the config's canvas
and batch): train-step GFLOPs, train-step temporary memory, parameters (trainable / total).
Writes ROOT/results.md and ROOT/results.json.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_common import (  # noqa: E402
    chosen_rows,
    eval_path,
    last_logged_step,
    read_json,
    repo_config,
    study_arguments,
    train_row,
    train_seconds,
    write_json,
)

STRATEGIES = ("frozen", "adapters", "film", "finetune", "scratch")  # cheapest first
HEADS = ("fpn", "cascade")
ALL_ROWS = tuple(f"{s}:{h}" for s in STRATEGIES for h in HEADS)
CLASSES = ("Platelets", "RBC", "WBC")


def load_config(row: str, total_steps: int | None = None):
    strategy, head = row.split(":")
    config = repo_config(f"configs/bccd/{strategy}.py:{head}")
    if total_steps:
        config.train.total_steps = total_steps
    return config


def row_dir(root: str, row: str) -> str:
    return os.path.join(root, row.replace(":", "_"))


# --- running a row --------------------------------------------------------------------------


def run_row(row: str, workdir: str, config) -> None:
    train_row(row, workdir, config, cost=True)


# --- collecting and writing the table -------------------------------------------------------


def collect_row(row: str, workdir: str, split: str, total_steps: int) -> dict:
    """One table row from a workdir's eval/<split>_step<total_steps>.json, timing.json and
    cost.json; status 'pending' when the final evaluation is missing."""
    strategy, head = row.split(":")
    out = {"row": row, "strategy": strategy, "head": head, "steps": total_steps, "workdir": workdir}
    result = read_json(eval_path(workdir, split, total_steps))
    if result is None:
        return dict(out, status="pending", reached_step=last_logged_step(workdir))
    seconds = train_seconds(workdir)
    cost = read_json(os.path.join(workdir, "cost.json")) or {}
    return dict(
        out,
        status="done",
        AP=result["AP"],
        AP50=result["AP50"],
        AP75=result["AP75"],
        per_class_AP=result.get("per_class_AP", {}),
        train_seconds=seconds,
        seconds_per_step=seconds / total_steps if seconds else None,
        **cost,
    )


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, spec)


COLUMNS = (
    "backbone",
    "head",
    "AP",
    "AP50",
    "AP75",
    "AP " + " / ".join(CLASSES),
    "train time (min)",
    "s/step",
    "train-step GFLOPs",
    "train-step temp (MB)",
    "params trainable / total (M)",
)


def _cells(r: dict) -> list[str]:
    if r["status"] != "done":
        progress = f" (trained {r['reached_step']}/{r['steps']} steps)" if r.get("reached_step") else ""
        return [r["strategy"], r["head"], "pending" + progress] + [""] * (len(COLUMNS) - 3)
    return [
        r["strategy"],
        r["head"],
        f"{r['AP']:.3f}",
        f"{r['AP50']:.3f}",
        f"{r['AP75']:.3f}",
        " / ".join(_fmt(r["per_class_AP"].get(c), ".3f") for c in CLASSES),
        _fmt(r.get("train_seconds"), ".1f", 1 / 60),
        _fmt(r.get("seconds_per_step"), ".2f"),
        _fmt(r.get("train_step_gflops"), ".1f"),
        _fmt(r.get("train_step_temp_bytes"), ".0f", 1e-6),
        f"{_fmt(r.get('params_trainable'), '.2f', 1e-6)} / {_fmt(r.get('params_total'), '.2f', 1e-6)}",
    ]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], root: str, note: str = "") -> str:
    """ROOT/results.md (the markdown table, then `note`) and ROOT/results.json; returns the table."""
    os.makedirs(root, exist_ok=True)
    table = markdown_table(rows)
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write(table + (f"\n{note}\n" if note else ""))
    write_json(os.path.join(root, "results.json"), rows)
    return table


def main(argv=None) -> None:
    rows_help = f"comma-separated rows (default all): {','.join(ALL_ROWS)}"
    parser = study_arguments(__doc__, "/tmp/bccd_study", rows_help)
    parser.add_argument(
        "--total_steps",
        type=int,
        default=0,
        help="override the configs' schedule length (smoke tests; use another --root)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    chosen = [] if args.table_only else chosen_rows(args.rows, ALL_ROWS)
    configs = {row: load_config(row, args.total_steps) for row in ALL_ROWS}

    def table_rows():
        return [
            collect_row(row, row_dir(args.root, row), c.data.eval_split, int(c.train.total_steps))
            for row, c in configs.items()
        ]

    command = "python tools/bccd_study.py" + (
        " --table_only" if args.table_only else f" --rows {args.rows}" if args.rows else ""
    )
    for row in chosen:
        workdir = row_dir(args.root, row)
        if args.force and os.path.isdir(workdir):
            shutil.rmtree(workdir)
        config = configs[row]
        if collect_row(row, workdir, config.data.eval_split, int(config.train.total_steps))["status"] != "done":
            run_row(row, workdir, config)
        write_table(table_rows(), args.root, f"Command: `{command}`")
    print(write_table(table_rows(), args.root, f"Command: `{command}`"), flush=True)


if __name__ == "__main__":
    main()
