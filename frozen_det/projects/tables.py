"""Table cells of the study projects: a metric over a row's seeds as mean ± standard error with
n, and Markdown tables. One format for every study, so pages read alike."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable


def by_row(records: Iterable[dict]) -> dict[str, list[dict]]:
    """{row: its records, by seed}."""
    out: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (r["row"], r["seed"])):
        out.setdefault(r["row"], []).append(r)
    return out


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (sample std / sqrt(n); None for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def cell(values: list[float], digits: int = 3, scale: float = 1.0) -> str:
    """ "0.557 ± 0.004" (mean ± standard error), "0.557" for one seed, "—" for none."""
    if not values:
        return "—"
    mean, se = mean_se([v * scale for v in values])
    return f"{mean:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def metric(records: list[dict], get: Callable[[dict], float | None]) -> list[float]:
    """The values of ``get(record)`` over the records that have one."""
    return [v for v in (get(r) for r in records) if v is not None]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def provenance_line(records: list[dict]) -> str:
    """Which commits, devices and seeds the records come from, for the line under a table."""
    if not records:
        return "No records yet."
    smoke = sum(1 for r in records if r.get("smoke"))
    warning = f" **{smoke} of them are smoke runs (a few steps): they check the code, not the study.**" if smoke else ""
    commits = sorted(
        {r["provenance"]["commit"][:10] + (" (dirty)" if r["provenance"]["dirty"] else "") for r in records}
    )
    devices = sorted({f"{r['provenance']['device_count']} x {r['provenance']['device_kind']}" for r in records})
    return (
        f"{len(records)} runs;{warning} commit {', '.join(commits)}; devices {', '.join(devices)}. "
        "Cells: mean ± standard error over seeds (n = seeds)."
    )
