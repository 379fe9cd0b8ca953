"""Weight drift per backbone stage over training, for several runs in one figure (Vasconcelos et
al. 2022 sec. 3: how far fine-tuning, partial freezing and adapters move the pre-trained
backbone), from every checkpoint each run kept (frozen_det.evaluation.drift; keep more
checkpoints with --config.train.keep_checkpoints when training).

    python tools/weight_drift.py \
        --runs finetune=/tmp/bccd/runs/finetune_fpn/s0,adapters=/tmp/bccd/runs/adapters_fpn/s0 \
        --output /tmp/drift.png

Writes the PNG (parameters' relative L2 distance from the start per stage against the step, one
panel per run) and, next to it, a markdown table of the drift at each run's last checkpoint and
a JSON of every value.
"""

from __future__ import annotations

import argparse
import json
import os

from frozen_det.evaluation.drift import BACKBONE_GROUPS
from frozen_det.runtime import one_line_errors
from frozen_det.training.run import Run


def parse_runs(text: str) -> dict:
    """{name: workdir} of `--runs`: `name=WORKDIR` items, or a bare WORKDIR named by its folder."""
    runs = {}
    for item in filter(None, text.split(",")):
        name, path = item.split("=", 1) if "=" in item else (os.path.basename(os.path.normpath(item)), item)
        if not name or not path:
            raise ValueError(f"--runs {text}: {item!r} is not name=WORKDIR (or WORKDIR)")
        if name in runs:
            raise ValueError(f"--runs {text}: two runs named {name!r}; name them: name=WORKDIR")
        runs[name] = path
    if not runs:
        raise ValueError(f"--runs {text!r}: give name=WORKDIR,name=WORKDIR,...")
    return runs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="name=WORKDIR,name=WORKDIR,... (or WORKDIR: named by its folder)")
    ap.add_argument("--output", required=True, help="the figure (.png)")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        runs = parse_runs(args.runs)
    except ValueError as e:
        ap.error(str(e))
    drifts = {}
    with one_line_errors():  # a path that holds no run, an unreadable checkpoint: one line, exit 2
        for name, path in runs.items():
            with Run(path) as run:
                drifts[name] = run.drift()
    fig, axes = plt.subplots(1, len(drifts), figsize=(4 * len(drifts), 3.2), sharey=True, squeeze=False)
    for ax, (name, drift) in zip(axes[0], drifts.items()):
        steps = sorted(drift)
        for group in BACKBONE_GROUPS:
            ax.plot(steps, [drift[s].get(group, {}).get("params", 0.0) for s in steps], marker="o", label=group)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("||w - w0|| / ||w0||")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    rows = [
        "| run (last step) | " + " | ".join(BACKBONE_GROUPS) + " | BN statistics (stage4) |",
        "|---" * (len(BACKBONE_GROUPS) + 2) + "|",
    ]
    for name, drift in drifts.items():
        last = drift[max(drift)]
        cells = [f"{last.get(g, {}).get('params', 0.0):.4f}" for g in BACKBONE_GROUPS]
        rows.append(
            f"| {name} ({max(drift)}) | "
            + " | ".join(cells)
            + f" | {last.get('stage4', {}).get('batch_stats', 0.0):.4f} |"
        )
    stem = os.path.splitext(args.output)[0]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(rows) + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({name: {str(s): v for s, v in d.items()} for name, d in drifts.items()}, f, indent=1)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
