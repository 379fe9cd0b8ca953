"""Examples/s of the full training input pipeline (decode, flip, LSJ, [Copy-Paste], batch).

    python tools/bench_data_pipeline.py --config configs/data/bccd.py --canvas 512 --batches 20
    python tools/bench_data_pipeline.py --config configs/data/synthetic.py:copy_paste --canvas 1024

The first batch (graph tracing, tf.data start-up) is excluded.
"""

import argparse
import importlib.util
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--canvas", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=20)
    a = ap.parse_args()
    path, _, arg = a.config.partition(":")
    spec = importlib.util.spec_from_file_location("cfg", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    config = mod.get_config(arg or None)
    config.data.canvas, config.data.batch_size = a.canvas, a.batch
    from frozen_det.data.detection import build_train_pipeline

    pipe = build_train_pipeline(config, process_index=0, process_count=1)
    next(pipe)
    t = time.perf_counter()
    for _ in range(a.batches):
        next(pipe)
    dt = time.perf_counter() - t
    print(
        f"{a.batches * a.batch / dt:.1f} examples/s ({a.config}, canvas {a.canvas}, batch {a.batch}, "
        f"{a.batches} batches, {dt:.1f} s)"
    )


if __name__ == "__main__":
    main()
