"""Helpers the tools/bench_*.py benchmarks share: XLA's cost and memory of a compiled
function, and round-robin wall-clock timing."""

from __future__ import annotations

import time


def xla_stats(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = compiled.memory_analysis()
    return {"gflops": float(cost.get("flops", float("nan"))) / 1e9,
            "temp_mb": mem.temp_size_in_bytes / 1e6 if mem is not None else float("nan")}


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
