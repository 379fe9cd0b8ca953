"""Per-class AP of two or more runs against the number of training annotations per class:
where a transfer strategy gains over a baseline along the long tail (Vasconcelos et al. 2022, Figures 4-5
and Table 5).

    python tools/lvis_stratified.py --runs finetune=/tmp/ft,frozen=/tmp/frozen \
        --data-config configs/data/long_tail.py:/tmp/long_tail --output /tmp/stratified
    python tools/lvis_stratified.py --runs finetune=ft/eval/val_step90000.json,frozen=fz/eval/val_step90000.json \
        --data-config configs/data/lvis.py:folder --data-path /data/lvis --sigma 1000 --output lvis_strat

Runs: ``name=PATH`` separated by commas; PATH is an evaluation JSON
(frozen_det.evaluation.runner.write_eval_json), an ``eval/`` directory or a workdir (its
newest ``eval/<split>_step<N>.json``). The first run is the baseline.

Training annotations per class: the non-crowd instances of the train split of
``--data-config`` (frozen_det.data.class_stats.source_statistics; written to counts.json in
the output) or ``--counts counts.json`` ({class name: {"instances": n, "images": m,
"frequency": "r"|"c"|"f"}}; frequency optional, else from the image count).

Difference of a class: AP_run - AP_base in AP points (x100), the figures' "class-wise mAP
relative to fine-tuning the backbone" (the baseline fine-tunes) and the convention of the
paper's (+x.x) table entries. A ratio would be undefined wherever the baseline AP is 0, which
is common for rare classes. Classes with a NaN AP in either run (no ground truth in the eval
split) are left out of the curve and the difference.

Smoothing: a Gaussian kernel average (Nadaraya-Watson) over the annotation-count axis: the
curve at x averages the class differences with weights exp(-(x - n_c)^2 / (2 sigma^2)); a
constant difference stays constant and a step becomes a monotone ramp. The paper uses
sigma = 1000 annotations on LVIS. A small dataset needs a small sigma (the generated long
tail has 1 to a few hundred annotations per class): the default is 5% of the count range of
the evaluated classes. ``--log-x`` plots and smooths over log10(annotations); sigma is then in
decades (default: 5% of the log range).

Outputs in ``--output``: stratified.png (one panel per task: box, and mask when every run has
mask APs; points = classes, line = smoothed), per_class.csv (class, instances, images,
frequency, AP per run, difference and smoothed difference per run vs the baseline) and
groups.md (AP, APr, APc, APf per run with the difference to the baseline, box and mask;
also printed).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import re
import sys

import numpy as np

TASKS = (("box", ""), ("mask", "mask_"))  # task name, prefix of its keys in the eval JSON
GROUP_KEYS = ("AP", "APr", "APc", "APf")
_EVAL_FILE = re.compile(r"^(?P<split>.+)_step(?P<step>\d+)\.json$")


# --- inputs ------------------------------------------------------------------------------


def parse_runs(spec: str) -> list:
    """ "base=PATH,other=PATH" -> [(name, path), ...] (at least two, names unique)."""
    runs = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--runs: {item!r} is not name=PATH")
        runs.append((name, path))
    names = [n for n, _ in runs]
    if len(runs) < 2 or len(set(names)) != len(names):
        raise ValueError(f"--runs: need at least two runs with distinct names (the first is the baseline), got {names}")
    return runs


def find_eval_json(path: str) -> str:
    """An eval JSON itself, or the newest <split>_step<N>.json of a workdir or its eval/ folder."""
    if os.path.isfile(path):
        return path
    folder = os.path.join(path, "eval") if os.path.isdir(os.path.join(path, "eval")) else path
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: neither an eval JSON nor a workdir / eval directory")
    found = [(int(m["step"]), m["split"], name) for name in os.listdir(folder) if (m := _EVAL_FILE.match(name))]
    if not found:
        raise FileNotFoundError(f"{folder}: no <split>_step<N>.json (run python -m frozen_det.evaluate first)")
    step = max(f[0] for f in found)
    newest = sorted(f for f in found if f[0] == step)
    if len(newest) > 1:
        raise ValueError(f"{folder}: several splits at step {step} ({[f[2] for f in newest]}); pass the JSON file")
    return os.path.join(folder, newest[0][2])


def load_run(path: str) -> dict:
    """The evaluation of a run (``path`` as in :func:`find_eval_json`)."""
    json_path = find_eval_json(path)
    with open(json_path) as f:
        result = json.load(f)
    if "per_class_AP" not in result:
        raise ValueError(f"{json_path}: no per_class_AP (not an evaluation written by frozen_det.evaluate)")
    return dict(result, file=json_path)


def load_counts(path: str) -> dict:
    """counts.json -> {class name: {"instances", "images", "frequency"}}."""
    from frozen_det.data.class_stats import frequency_group

    with open(path) as f:
        raw = json.load(f)
    return {
        name: {
            "instances": int(c["instances"]),
            "images": int(c["images"]),
            "frequency": c.get("frequency") or frequency_group(int(c["images"])),
        }
        for name, c in raw.items()
    }


def counts_from_data_config(spec: str, data_path: str = "") -> dict:
    """Per-class counts of the train split of a data config ``file.py[:arg]``."""
    from frozen_det.data import class_stats, detection
    from frozen_det.data.detection import config as detection_config

    file, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("data_config", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    if data_path:
        (config.data if "data" in config else config).path = data_path
    cfg = detection_config.resolve(config)
    source = detection.build_source(cfg, split=cfg.train_split)
    stats = class_stats.source_statistics(source, cfg.train_split)
    groups = source.info.frequencies or stats.frequency_groups()
    return {
        name: {"instances": int(stats.instance_counts[i]), "images": int(stats.image_counts[i]), "frequency": groups[i]}
        for i, name in enumerate(source.info.class_names)
        if i > 0
    }


# --- per-class table and smoothing -------------------------------------------------------


def gaussian_smooth(x, y, at, sigma: float) -> np.ndarray:
    """Gaussian kernel average of the points (x, y) evaluated at ``at``. Weights are scaled by
    their largest value per evaluation point, so far from every point the nearest one
    dominates instead of all weights underflowing."""
    if sigma <= 0:
        raise ValueError(f"sigma={sigma}: must be positive")
    x, y, at = (np.asarray(v, np.float64).reshape(-1) for v in (x, y, at))
    if not len(x):
        return np.full(len(at), np.nan)
    z = -0.5 * ((at[:, None] - x[None, :]) / sigma) ** 2
    w = np.exp(z - z.max(axis=1, keepdims=True))
    return (w @ y) / w.sum(axis=1)


def default_sigma(u) -> float:
    """5% of the range of the smoothing coordinate (1 when all points coincide)."""
    u = np.asarray(u, np.float64)
    span = float(u.max() - u.min()) if len(u) else 0.0
    return 0.05 * span if span > 0 else 1.0


def tasks_of(runs: dict) -> list:
    """("box", "") always; ("mask", "mask_") when every run has mask per-class APs."""
    return [t for t in TASKS if all(f"{t[1]}per_class_AP" in r for r in runs.values())]


def per_class_rows(runs: dict, counts: dict, *, sigma: float | None = None, log_x: bool = False) -> tuple:
    """One row per class of the evaluations, sorted by training annotations: class, instances,
    images, frequency, then per task (prefix "" or "mask_") and run ``<p>AP_<run>``, and per
    non-baseline run ``<p>delta_<run>`` and ``<p>smoothed_delta_<run>`` (AP points). Returns
    (rows, sigma used) -- sigma in annotations, or in decades with ``log_x``."""
    names = list(runs)
    base = names[0]
    tasks = tasks_of(runs)
    classes = sorted(set().union(*(r[f"{p}per_class_AP"] for r in runs.values() for _, p in tasks)))
    missing = [c for c in classes if c not in counts]
    if missing:
        raise ValueError(
            f"{len(missing)} evaluated classes have no training counts (e.g. {missing[:5]}); "
            "the counts must come from the dataset the runs were evaluated on"
        )
    rows = [
        {
            "class": c,
            "instances": counts[c]["instances"],
            "images": counts[c]["images"],
            "frequency": counts[c]["frequency"],
        }
        for c in classes
    ]
    rows.sort(key=lambda r: (r["instances"], r["class"]))
    coords = np.array([_coordinate(r["instances"], log_x) for r in rows])
    on_axis = np.isfinite(coords)
    if sigma is None:
        sigma = default_sigma(coords[on_axis])
    for _, p in tasks:
        for name in names:
            per_class = runs[name][f"{p}per_class_AP"]
            for row in rows:
                ap = per_class.get(row["class"])
                row[f"{p}AP_{name}"] = 100 * float(ap) if ap is not None else math.nan
        for name in names[1:]:
            delta = np.array([r[f"{p}AP_{name}"] - r[f"{p}AP_{base}"] for r in rows])
            ok = np.isfinite(delta) & on_axis
            smooth = gaussian_smooth(coords[ok], delta[ok], coords, sigma)
            for row, d, sm, finite in zip(rows, delta, smooth, on_axis):
                row[f"{p}delta_{name}"] = float(d)
                row[f"{p}smoothed_delta_{name}"] = float(sm) if finite else math.nan
    return rows, sigma


def _coordinate(instances: int, log_x: bool) -> float:
    if not log_x:
        return float(instances)
    return math.log10(instances) if instances > 0 else math.nan  # no place on a log axis


# --- outputs -----------------------------------------------------------------------------


def write_csv(rows: list, path: str) -> None:
    columns = list(rows[0]) if rows else ["class"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                [
                    "" if isinstance(v, float) and math.isnan(v) else f"{v:.4f}" if isinstance(v, float) else v
                    for v in (row[c] for c in columns)
                ]
            )


def plot(rows: list, runs: dict, path: str, sigma: float, log_x: bool = False) -> None:
    """Per task: each class's difference to the baseline (points) and the smoothed curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, tasks = list(runs), tasks_of(runs)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    x = np.array([r["instances"] for r in rows], np.float64)
    coords = np.array([_coordinate(n, log_x) for n in x])
    on_axis = np.isfinite(coords)
    grid_u = np.linspace(coords[on_axis].min(), coords[on_axis].max(), 300) if on_axis.any() else np.zeros(0)
    grid_x = 10**grid_u if log_x else grid_u
    for ax, (task, p) in zip(axes[0], tasks):
        ax.axhline(0, color="0.5", lw=0.8)
        for k, name in enumerate(names[1:]):
            colour = f"C{k}"
            delta = np.array([r[f"{p}delta_{name}"] for r in rows])
            ok = np.isfinite(delta) & on_axis
            ax.scatter(x[ok], delta[ok], s=14, alpha=0.6, color=colour, label=f"{name} (classes)")
            if ok.any():
                ax.plot(
                    grid_x,
                    gaussian_smooth(coords[ok], delta[ok], grid_u, sigma),
                    color=colour,
                    lw=2,
                    label=f"{name} (smoothed)",
                )
        if log_x:
            ax.set_xscale("log")
        unit = "decades" if log_x else "annotations"
        ax.set_title(f"{task} AP relative to {names[0]} (Gaussian sigma = {sigma:.3g} {unit})", fontsize=10)
        ax.set_xlabel("training annotations per class")
        ax.set_ylabel(f"{task} AP - {names[0]} AP (points)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _points(value) -> float:
    """An eval JSON summary value as AP points; NaN for missing or the API's -1 (no classes)."""
    if value is None or not math.isfinite(float(value)) or float(value) < 0:
        return math.nan
    return 100 * float(value)


def group_table(runs: dict) -> str:
    """Markdown: per task, AP / APr / APc / APf of each run with (difference to the baseline)."""
    names, base = list(runs), list(runs)[0]
    lines = []
    for task, p in tasks_of(runs):
        lines += [
            f"**{task}** (AP points; in parentheses: difference to {base})",
            "",
            "| run | " + " | ".join(GROUP_KEYS) + " |",
            "|---|" + "---:|" * len(GROUP_KEYS),
        ]
        for name in names:
            cells = []
            for key in GROUP_KEYS:
                v, b = _points(runs[name].get(p + key)), _points(runs[base].get(p + key))
                cell = "n/a" if math.isnan(v) else f"{v:.1f}"
                if name != base and not math.isnan(v) and not math.isnan(b):
                    cell += f" ({v - b:+.1f})"
                cells.append(cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="name=PATH,name=PATH (the first is the baseline)")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-config", help="data config file[:arg] of the training set")
    source.add_argument("--counts", help="counts.json (written by an earlier run of this tool)")
    ap.add_argument("--data-path", default="", help="sets config.data.path of --data-config")
    ap.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="Gaussian sigma (annotations; decades with --log-x); default 5%% of the range",
    )
    ap.add_argument("--log-x", action="store_true", help="log10 annotation axis for the plot and smoothing")
    ap.add_argument("--output", default="stratified", help="output directory")
    a = ap.parse_args(argv)

    runs = {}
    for name, path in parse_runs(a.runs):
        runs[name] = load_run(path)
        print(f"{name}: {runs[name]['file']} (step {runs[name].get('step')}, split {runs[name].get('split')})")
    os.makedirs(a.output, exist_ok=True)
    if a.counts:
        counts = load_counts(a.counts)
    else:
        counts = counts_from_data_config(a.data_config, a.data_path)
        with open(os.path.join(a.output, "counts.json"), "w") as f:
            json.dump(counts, f, indent=1)
    rows, sigma = per_class_rows(runs, counts, sigma=a.sigma, log_x=a.log_x)
    write_csv(rows, os.path.join(a.output, "per_class.csv"))
    plot(rows, runs, os.path.join(a.output, "stratified.png"), sigma, a.log_x)
    table = group_table(runs)
    with open(os.path.join(a.output, "groups.md"), "w") as f:
        f.write(table)
    print(table)
    print(
        f"{len(rows)} classes, sigma {sigma:.3g} {'decades' if a.log_x else 'annotations'}; wrote "
        f"{a.output}/per_class.csv, stratified.png, groups.md" + ("" if a.counts else ", counts.json")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
