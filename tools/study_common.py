"""What the resumable study tools (tools/*_study.py) share: their command line, the repository's
configs, the canvases, JSON files, evaluation paths, and training one row of a study into its own
workdir with the library's API, timed."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def study_arguments(doc: str, default_root: str, rows_help: str, canvases: bool = False) -> argparse.ArgumentParser:
    """The options every study takes: --rows, --root, --force (delete and rerun the chosen rows),
    --table_only, and (``canvases``) --canvases; a tool adds its own."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--rows", default="", help=rows_help)
    parser.add_argument("--root", default=default_root)
    if canvases:
        parser.add_argument("--canvases", default="", help="the VOC-like canvases (default ROOT/canvases_voc)")
    parser.add_argument("--force", action="store_true", help="delete and rerun the chosen rows")
    parser.add_argument("--table_only", action="store_true")
    return parser


def chosen_rows(text: str, known, default=None) -> list[str]:
    """The comma-separated ``--rows`` (``default``, else every known row, when empty); an unknown
    name exits with the choices."""
    chosen = [r.strip() for r in text.split(",") if r.strip()] or list(default if default is not None else known)
    unknown = [r for r in chosen if r not in known]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {', '.join(known)}")
    return chosen


def repo_config(spec: str, overrides: dict | None = None):
    """The config of ``configs/FILE.py[:ARG]`` (a path in the repository), dotted overrides set."""
    file, _, arg = spec.partition(":")
    if REPO not in sys.path:
        sys.path.insert(0, REPO)  # config files import each other from the `configs` package
    get_config = importlib.import_module(file[: -len(".py")].replace("/", ".")).get_config
    config = get_config(arg) if arg else get_config()
    set_fields(config, overrides or {})
    return config


def ensure_canvases(path: str, mode: str, num_train: int, num_val: int, seed: int) -> None:
    """Writes 128 x 128 canvases (frozen_det.data.offline.canvases) to ``path`` unless they are there."""
    if not os.path.exists(os.path.join(path, "annotations", "instances_val.json")):
        from frozen_det.data.offline.canvases import write_canvases

        logging.info("writing %s-like canvases to %s", mode, path)
        write_canvases(path, mode, num_train=num_train, num_val=num_val, image_size=128, seed=seed)


def read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json(path: str, value) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)


def set_fields(config, overrides: dict) -> None:
    """Sets dotted fields of a config in place: {"train.schedule.base_lr": 0.05, ...}."""
    for field, value in overrides.items():
        section, key = field.rsplit(".", 1)
        node = config
        for part in section.split("."):
            node = node[part]
        node[key] = value


def write_results(root: str, table: str, rows: list) -> None:
    """A study's ROOT/results.md (the table) and ROOT/results.json (its rows), and the table on stdout."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write(table)
    write_json(os.path.join(root, "results.json"), rows)
    print(table, flush=True)


def eval_path(workdir: str, split: str, step: int) -> str:
    return os.path.join(workdir, "eval", f"{split}_step{step}.json")


def final_eval(workdir: str, config) -> dict | None:
    """The evaluation of a row's last step; None until the row is done."""
    return read_json(eval_path(workdir, config.data.eval_split, int(config.train.total_steps)))


def seed_cell(values: list, expected: int) -> str:
    """A table cell: mean ± sample std over the seeds that finished ("pending" for none)."""
    if not values:
        return "pending"
    text = f"{np.mean(values):.3f}"
    if len(values) > 1:
        text += f" ± {np.std(values, ddof=1):.3f}"
    return text + (f" ({len(values)}/{expected} seeds)" if len(values) < expected else "")


def last_logged_step(workdir: str) -> int:
    path = os.path.join(workdir, "train_metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.read().splitlines()
    return json.loads(lines[-1])["step"] if lines else 0


def train_row(name: str, workdir: str, config, cost: bool = False, iou_thresholds=None) -> dict:
    """Trains (or resumes) one row and evaluates its final checkpoint with the evaluate entry
    point's API (detectors: with `iou_thresholds`, AP at each); appends the session's time to
    timing.json and (with `cost`) writes cost.json (XLA train-step cost) once. Exits after a
    preempted session (SIGTERM saves a checkpoint) without evaluating."""
    from frozen_det.evaluate import evaluate
    from frozen_det.resources import train_step_cost
    from frozen_det.training.loop import train_and_evaluate
    from frozen_det.training.run import Run

    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
    config.train.eval_at_end = False  # evaluated below, with the evaluate entry point's API
    timing_path = os.path.join(workdir, "timing.json")
    timing = read_json(timing_path) or {"sessions": []}
    start = time.time()
    train_and_evaluate(config, workdir)
    timing["sessions"].append({"seconds": round(time.time() - start, 1), "finished_at": time.ctime()})
    write_json(timing_path, timing)
    with Run(workdir, config) as run:
        reached, total = run.latest_step, int(config.train.total_steps)
    if reached is None or reached < total:  # SIGTERM: the loop saved a checkpoint and returned
        raise SystemExit(f"{name} stopped at step {reached} of {total}; run the same command again to resume")
    result = evaluate(config, workdir, iou_thresholds=iou_thresholds)
    logging.info("%s: %s", name, {k: v for k, v in result.items() if isinstance(v, float)})
    cost_path = os.path.join(workdir, "cost.json")
    if cost and not os.path.exists(cost_path):
        write_json(cost_path, train_step_cost(config))
    return result


def train_seconds(workdir: str) -> float | None:
    timing = read_json(os.path.join(workdir, "timing.json")) or {"sessions": []}
    return sum(s["seconds"] for s in timing["sessions"]) if timing["sessions"] else None
