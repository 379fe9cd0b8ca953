"""The BCCD transfer study: EfficientNet-Lite0 scratch / fine-tuned / frozen / frozen + adapters,
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

import argparse
import json
import logging
import os
import runpy
import shutil
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "configs", "bccd")
STRATEGIES = ("frozen", "adapters", "finetune", "scratch")  # cheapest first
HEADS = ("fpn", "cascade")
ALL_ROWS = tuple(f"{s}:{h}" for s in STRATEGIES for h in HEADS)
CLASSES = ("Platelets", "RBC", "WBC")


def parse_rows(spec: str | None) -> list[str]:
    if not spec:
        return list(ALL_ROWS)
    rows = [r.strip() for r in spec.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ALL_ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {', '.join(ALL_ROWS)}")
    return rows


def load_config(row: str, total_steps: int | None = None):
    strategy, head = row.split(":")
    config = runpy.run_path(os.path.join(CONFIG_DIR, f"{strategy}.py"))["get_config"](head)
    if total_steps:
        config.train.total_steps = total_steps
    return config


def row_dir(root: str, row: str) -> str:
    return os.path.join(root, row.replace(":", "_"))


def _read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, value) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)


def eval_path(workdir: str, split: str, step: int) -> str:
    return os.path.join(workdir, "eval", f"{split}_step{step}.json")


# --- running a row --------------------------------------------------------------------------


def run_row(row: str, workdir: str, config) -> None:
    """Trains (or resumes) and evaluates one row; appends the session's time to timing.json
    and writes cost.json (XLA train-step cost) once. Exits after a preempted session (SIGTERM
    saves a checkpoint) without evaluating."""
    from frozen_det.evaluate import evaluate
    from frozen_det.resources import train_step_cost
    from frozen_det.training.checkpointing import Checkpointer
    from frozen_det.training.loop import train_and_evaluate

    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
    config.train.eval_at_end = False  # evaluated below, with the evaluate entry point's API
    timing_path = os.path.join(workdir, "timing.json")
    timing = _read_json(timing_path) or {"sessions": []}
    start = time.time()
    train_and_evaluate(config, workdir)
    timing["sessions"].append({"seconds": round(time.time() - start, 1), "finished_at": time.ctime()})
    _write_json(timing_path, timing)
    checkpointer = Checkpointer(workdir)
    reached, total = checkpointer.latest_step(), int(config.train.total_steps)
    checkpointer.close()
    if reached is None or reached < total:  # SIGTERM: the loop saved a checkpoint and returned
        raise SystemExit(f"{row} stopped at step {reached} of {total}; run the same command again to resume")
    result = evaluate(config, workdir)
    logging.info("%s: AP %.4f AP50 %.4f (%s)", row, result["AP"], result["AP50"], result["path"])
    cost_path = os.path.join(workdir, "cost.json")
    if not os.path.exists(cost_path):
        _write_json(cost_path, train_step_cost(config))


# --- collecting and writing the table -------------------------------------------------------


def _last_logged_step(workdir: str) -> int:
    path = os.path.join(workdir, "train_metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.read().splitlines()
    return json.loads(lines[-1])["step"] if lines else 0


def collect_row(row: str, workdir: str, split: str, total_steps: int) -> dict:
    """One table row from a workdir's eval/<split>_step<total_steps>.json, timing.json and
    cost.json; status 'pending' when the final evaluation is missing."""
    strategy, head = row.split(":")
    out = {"row": row, "strategy": strategy, "head": head, "steps": total_steps, "workdir": workdir}
    result = _read_json(eval_path(workdir, split, total_steps))
    if result is None:
        return dict(out, status="pending", reached_step=_last_logged_step(workdir))
    timing = _read_json(os.path.join(workdir, "timing.json")) or {"sessions": []}
    seconds = sum(s["seconds"] for s in timing["sessions"]) if timing["sessions"] else None
    cost = _read_json(os.path.join(workdir, "cost.json")) or {}
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
    _write_json(os.path.join(root, "results.json"), rows)
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="", help=f"comma-separated rows (default all): {','.join(ALL_ROWS)}")
    parser.add_argument("--root", default="/tmp/bccd_study", help="one workdir per row under this directory")
    parser.add_argument("--force", action="store_true", help="delete and rerun the chosen rows even if finished")
    parser.add_argument("--table_only", action="store_true", help="only assemble the table from the workdirs")
    parser.add_argument(
        "--total_steps",
        type=int,
        default=0,
        help="override the configs' schedule length (smoke tests; use another --root)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    chosen = [] if args.table_only else parse_rows(args.rows)
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
