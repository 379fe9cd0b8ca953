"""What the k-shot fine-tuning rows of the DAP and PreDet projects share: their final AP / AP50
cell, their best AP over the evaluated steps, their learning curves over the seeds as a table
and as a plot (the pattern of DAP's Fig. 5: the head start a pre-training gives, and whether it
lasts). One implementation, so that the two pages read alike.

A project names its curves as panels, {panel title: {line label: row}} (``CURVES`` in its
module). The curve of a row is read from its records' ``curve`` field, which the runner fills
with every evaluation of the run ([[step, {metric: value}], ...]: AP every ``train.eval_every``
steps); a step's cell is the mean ± standard error over the seeds that reached it.

    python -m frozen_det.projects.curves dap --output /tmp/dap_curves.png   # from results/
    python -m frozen_det.projects.curves predet --results ROOT/records --output curves.png
"""

from __future__ import annotations

import argparse
import importlib

from frozen_det.projects import tables as t
from frozen_det.projects.runner import load_records

Panels = dict[str, dict[str, str]]


def kshot_cell(records: list[dict]) -> str:
    """ "AP / AP50 (n)" of a fine-tuning row over its seeds; "pending" before its first record."""
    if not records:
        return "pending"
    ap, ap50 = (t.cell(t.metric(records, lambda r, k=k: r["metrics"].get(k))) for k in ("AP", "AP50"))
    return f"{ap} / {ap50} (n {len(records)})"


def best_step_cell(records: list[dict], metric: str = "AP") -> str:
    """ "AP at step s (n)": the metric at the evaluated step where its mean over the seeds that
    all reached it is highest (early stopping as the DAP and PreDet papers tune the iterations,
    chosen on the mean curve, not per seed, so that the maximum is not a max over noise);
    "pending" before a curve."""
    full = {step: values for step, values in curve(records, metric).items() if len(values) == len(records)}
    if not full:
        return "pending"
    step = max(full, key=lambda s: (t.mean_se(full[s])[0], -s))  # ties: the earlier step
    return f"{t.cell(full[step])} at {step} (n {len(full[step])})"


def curve(records: list[dict], metric: str = "AP50") -> dict[int, list[float]]:
    """{step: the metric at that step in each seed's record that has it}."""
    out: dict[int, list[float]] = {}
    for record in records:
        for step, values in record.get("curve", []):
            if metric in values:
                out.setdefault(int(step), []).append(values[metric])
    return dict(sorted(out.items()))


def curve_table(panels: Panels, records: list[dict], metric: str = "AP50") -> str:
    """One line per panel and evaluated step, one column per line label (the labels of the
    first panel; every panel of a project has the same ones)."""
    grouped = t.by_row(records)
    labels = list(next(iter(panels.values())))
    body = []
    for title, lines in panels.items():
        curves = {label: curve(grouped.get(row, []), metric) for label, row in lines.items()}
        steps = sorted({s for c in curves.values() for s in c})
        if not steps:
            body.append([title, "pending"] + [""] * len(labels))
        for i, step in enumerate(steps):
            cells = [_with_n(curves[label].get(step, [])) for label in labels]
            body.append([title if i == 0 else "", str(step)] + cells)
    return t.markdown(["panel", "step"] + [f"{label} ({metric})" for label in labels], body)


def _with_n(values: list[float]) -> str:
    return f"{t.cell(values)} (n {len(values)})" if values else "—"


def plot(panels: Panels, records: list[dict], output: str, title: str, metric: str = "AP50") -> None:
    """The panels side by side: each line the mean over seeds, its band ± one standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = t.by_row(records)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (panel, lines) in zip(axes[0], panels.items()):
        for label, row in lines.items():
            values = curve(grouped.get(row, []), metric)
            if not values:
                continue
            steps = list(values)
            means, errors = zip(*(t.mean_se(v) for v in values.values()))
            errors = [e or 0.0 for e in errors]  # one seed: no band
            ax.plot(steps, means, marker="o", label=label)
            ax.fill_between(
                steps, [m - e for m, e in zip(means, errors)], [m + e for m, e in zip(means, errors)], alpha=0.2
            )
        ax.set_title(panel)
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "pending", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", help="a project with learning curves (its module's CURVES): dap, predet")
    parser.add_argument("--output", required=True, help="the figure (PNG)")
    parser.add_argument("--results", default="", help="records to read (default: the project's committed results/)")
    parser.add_argument("--metric", default="AP50")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"frozen_det.projects.{args.study}")
    records = load_records(args.results or module.STUDY.results_dir)
    title = f"{module.STUDY.name}: fine-tuning learning curves (mean over seeds, band ± one standard error)"
    plot(module.CURVES, records, args.output, title, args.metric)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
