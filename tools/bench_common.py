"""Helpers the tools/bench_*.py benchmarks share: XLA's cost and memory of a compiled
function, round-robin wall-clock timing, and the machine description and JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
import time

import jax

from frozen_det.resources import compiled_cost


def xla_stats(compiled) -> dict:
    """XLA's GFLOPs and temporary memory (MB) of a compiled function."""
    cost = compiled_cost(compiled)
    return {"gflops": cost["gflops"], "temp_mb": cost["temp_bytes"] / 1e6 if cost["temp_bytes"] >= 0 else float("nan")}


def round_robin(contenders: dict, repeats: int, cpu_times: dict | None = None) -> dict:
    """Wall seconds per call, A B C A B C ...; process CPU seconds (all threads) into `cpu_times`
    (steadier than wall time when other jobs share the cores)."""
    times = {k: [] for k in contenders}
    for _ in range(repeats):
        for key, fn in contenders.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
            if cpu_times is not None:
                cpu_times.setdefault(key, []).append(time.process_time() - c0)
    return times


def machine_info() -> dict:
    """What a timing depends on besides the code and the load: versions, cores, XLA flags."""
    return {
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def keyed(table: dict) -> dict:
    """{("a", "b"): v} -> {"a/b": v}: tuple keys as JSON object keys."""
    return {"/".join(map(str, k)): v for k, v in table.items()}


def write_json(path: str, out: dict) -> None:
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(f"wrote {path}", file=sys.stderr)
