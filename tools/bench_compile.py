"""Compile time of train steps: trace + lower, then XLA's compile, with JAX's persistent
compilation cache off, cold (empty) and warm (filled by the cold run), each in a fresh process.

    python tools/bench_compile.py [--json out.json] [CONFIG[=FIELD=VALUE;...] ...]

Default configs: the tiny ones (configs/tiny/*) and the paper's NAS-FPN Cascade R-CNN
(configs/paper/resnetrs101_nasfpn_cascade.py:72ep,frozen, 1280x1280) at a per-device batch of 8
(its batch of 256 over a v4-32's 32 chips; compile time hardly depends on the batch). Shapes
only (frozen_det.resources.lowered_train_step): no data and no weights are read, so the paper
configs run here without COCO. Each row also counts the lowered module's StableHLO
operations, the size XLA has to compile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench_common import machine_info, write_json

DEFAULT_CONFIGS = (
    "configs/tiny/two_stage.py",
    "configs/tiny/lite0_frozen.py",
    "configs/tiny/retinanet.py:frozen",
    "configs/quickstart.py",
    "configs/paper/resnetrs101_nasfpn_cascade.py:72ep,frozen=train.batch_size=8",
)
MODES = ("off", "cold", "warm")


def _parse(spec: str) -> tuple[str, dict]:
    """ "FILE[:ARG][=FIELD=VALUE;...]" -> (config spec, overrides with Python-literal values)."""
    import ast

    config, _, rest = spec.partition("=")
    overrides = {}
    for item in filter(None, rest.split(";")):
        field, _, value = item.partition("=")
        try:
            overrides[field] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[field] = value
    return config, overrides


def measure_one(spec: str) -> dict:
    """In this process: seconds to build the abstract model, to trace and lower the train step,
    and to compile it; the StableHLO operation count."""
    import jax

    from frozen_det.projects.runner import repo_config
    from frozen_det.resources import lowered_train_step

    config_spec, overrides = _parse(spec)
    t0 = time.perf_counter()
    config = repo_config(config_spec, overrides)
    lowered = lowered_train_step(config)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    text = lowered.as_text()
    return {
        "trace_lower_s": round(t1 - t0, 2),
        "compile_s": round(t2 - t1, 2),
        "stablehlo_ops": sum("stablehlo." in line for line in text.splitlines()),
        "jax_cache_dir": jax.config.jax_compilation_cache_dir,
    }


def run_fresh(spec: str, cache_dir: str | None) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if cache_dir:
        env.update(
            JAX_COMPILATION_CACHE_DIR=cache_dir,
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    else:
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--one", spec],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if done.returncode != 0:
        raise SystemExit(f"{spec}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", default=DEFAULT_CONFIGS)
    parser.add_argument("--json", help="write the table and the machine description here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a worker process: measure this spec, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one)))
        return 0

    rows = []
    print(
        "| config | StableHLO ops | config + trace + lower (s) | compile, no cache (s) | compile, cache cold (s) "
        "| warm (s) |"
    )
    print("|---|---|---|---|---|---|")
    for spec in args.configs:
        with tempfile.TemporaryDirectory(prefix="jax_cache_") as cache:
            by_mode = {"off": run_fresh(spec, None), "cold": run_fresh(spec, cache), "warm": run_fresh(spec, cache)}
        row = {"config": spec, **{mode: by_mode[mode] for mode in MODES}}
        rows.append(row)
        print(
            f"| {spec} | {by_mode['off']['stablehlo_ops']:,} | {by_mode['off']['trace_lower_s']:.1f} | "
            f"{by_mode['off']['compile_s']:.1f} | {by_mode['cold']['compile_s']:.1f} | "
            f"{by_mode['warm']['compile_s']:.1f} |",
            flush=True,
        )
    if args.json:
        from frozen_det.projects.provenance import commit

        write_json(args.json, {"rows": rows, "machine": machine_info(), **commit()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
