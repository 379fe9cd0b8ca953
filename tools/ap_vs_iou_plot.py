"""AP against the IoU threshold for several runs in one figure (the pattern of Li et al.'s Fig. 1:
detection pre-training's gain grows with the threshold), from each run's
`eval/<split>_step<N>_ap_vs_iou.json` (`python -m frozen_det.evaluate --iou_thresholds=default`).

    python tools/ap_vs_iou_plot.py --runs cls=runs/a,det=runs/b --output /tmp/ap_vs_iou.png [--metric voc_AP_all_point]

Writes the PNG and, next to it, a markdown table (one row per run, one column per threshold).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re


def latest_curve(workdir: str) -> dict:
    paths = glob.glob(os.path.join(workdir, "eval", "*_ap_vs_iou.json"))
    if not paths:
        raise SystemExit(
            f"{workdir}: no eval/*_ap_vs_iou.json; run python -m frozen_det.evaluate --iou_thresholds=default"
        )
    step = lambda p: int(re.search(r"_step(\d+)_ap_vs_iou", p).group(1))
    with open(max(paths, key=step)) as f:
        return json.load(f)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="name=WORKDIR,name=WORKDIR,...")
    ap.add_argument("--output", required=True, help="the figure (.png)")
    ap.add_argument("--metric", default="coco_AP", choices=("coco_AP", "voc_AP_all_point", "voc_AP_11_point"))
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: latest_curve(path) for name, path in (r.split("=", 1) for r in args.runs.split(","))}
    thresholds = next(iter(curves.values()))["iou_thresholds"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, curve in curves.items():
        ax.plot(curve["iou_thresholds"], curve[args.metric], marker="o", label=name)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel(args.metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    rows = ["| run | " + " | ".join(f"{t:.1f}" for t in thresholds) + " |", "|---" * (len(thresholds) + 1) + "|"]
    rows += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in c[args.metric]) + " |" for name, c in curves.items()]
    with open(os.path.splitext(args.output)[0] + ".md", "w") as f:
        f.write("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
