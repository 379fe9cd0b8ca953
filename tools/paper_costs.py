"""What each paper-scale config costs to train, from shapes only: XLA's FLOPs of its train step
per example (traced and lowered at 2 examples per device, nothing compiled or run), times its
global batch and iterations, and the hours that take at a stated fraction of a chip's bf16 peak
on a TPU v4 slice and on one 8-GPU A100 host. Prints the table docs/scaling.md quotes.

    python tools/paper_costs.py [--utilisation 0.3] [--json docs/results/paper_costs.json] [--only SPEC,...]
    python tools/paper_costs.py --table_from docs/results/paper_costs.json   # the committed table

Peaks (dense bf16): TPU v4 275 TFLOP/s per chip; A100 312 TFLOP/s per GPU. The FLOPs are XLA's
count of the lowered program (multiply-adds count 2): the model, its target assignment and
losses, the backward pass of what trains and the optimizer update. Per-device memory is not
estimated here: `python -m frozen_det.resources --config C` compiles the step for it (with
XLA_FLAGS=--xla_force_host_platform_device_count=N for N devices' per-device batch).
"""

from __future__ import annotations

import argparse
import json
import sys

from bench_common import write_json

TPU_V4_PEAK, A100_PEAK = 275e12, 312e12
PER_DEVICE = 2


def example_gflops(spec: str) -> tuple[float, object]:
    """(train-step GFLOPs per example, the config) of a paper config."""
    from frozen_det.projects.runner import repo_config
    from frozen_det.resources import lowered_train_step

    config = repo_config(spec)
    small_batch = config.copy_and_resolve_references()
    small_batch.train.batch_size = PER_DEVICE  # one device here: 2 examples per step
    cost = lowered_train_step(small_batch).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / PER_DEVICE / 1e9, config


def table(rows: list[dict]) -> str:
    """The markdown table of docs/scaling.md."""
    lines = [
        "| study | config | batch | iterations | GFLOPs / example | EFLOPs | TPU v4 chip-hours | 8 x A100 hours |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        lines.append(
            f"| {r['study']} | `{r['config']}` | {r['batch']} | {r['iterations']:,} "
            f"| {r['train_gflops_per_example']:,} | {r['total_exaflops']} | {r['tpu_v4_chip_hours']:,} "
            f"| {r['a100x8_hours']:,} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utilisation", type=float, default=0.3)
    parser.add_argument("--json", default="")
    parser.add_argument("--only", default="", help="comma-separated config specs (default: every paper config)")
    parser.add_argument("--table_from", default="", help="print the table of a results JSON, nothing traced")
    args = parser.parse_args(argv)
    if args.table_from:
        with open(args.table_from) as f:
            print(table(json.load(f)["rows"]))
        return

    from frozen_det.projects.paper_configs import PAPER_CONFIGS

    rows = []
    for study, specs in PAPER_CONFIGS.items():
        for spec in specs:
            if args.only and spec not in args.only.split(","):
                continue
            gflops, config = example_gflops(spec)
            total = gflops * 1e9 * config.train.batch_size * config.train.total_steps
            rows.append(
                {
                    "study": study,
                    "config": spec,
                    "batch": int(config.train.batch_size),
                    "iterations": int(config.train.total_steps),
                    "train_gflops_per_example": round(gflops, 1),
                    "total_exaflops": float(f"{total / 1e18:.3g}"),
                    "tpu_v4_chip_hours": float(f"{total / (TPU_V4_PEAK * args.utilisation) / 3600:.3g}"),
                    "a100x8_hours": float(f"{total / (8 * A100_PEAK * args.utilisation) / 3600:.3g}"),
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        from frozen_det.projects.provenance import commit

        write_json(args.json, {"rows": rows, "utilisation": args.utilisation, **commit()})


if __name__ == "__main__":
    main()
