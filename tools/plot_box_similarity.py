"""PreDet's Fig. 5b for any runs: cosine similarity of two boxes' RoI features against their IoU,
per box-size bucket, the same box pairs for every run (frozen_det/projects/predet/similarity.py,
whose docstring says what a run SPEC and the images may be).

    python tools/plot_box_similarity.py --runs imagenet=lite0,predet=ROOT/runs/predet/full/s0 \\
        --images bccd --output /tmp/box_similarity

--runs: comma-separated NAME=SPEC (a run's folder, or "lite0"). --images: bccd | photos | DIR.
Writes OUTPUT/box_similarity.json (statistics per run and bucket, per-pair values) and
OUTPUT/similarity_vs_iou.png (mean similarity per IoU bin, one panel per size bucket).
"""

from __future__ import annotations

import argparse
import json
import os

from frozen_det.projects.predet.similarity import compare, load_images, plot, summary
from frozen_det.runtime import one_line_errors, quiet_tensorflow


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="NAME=RUN_FOLDER or NAME=lite0, comma-separated")
    parser.add_argument("--images", default="bccd", help="bccd | photos | DIR")
    parser.add_argument("--output", required=True)
    parser.add_argument("--canvas", type=int, default=128, help="images resized to this square (multiple of 32)")
    parser.add_argument("--max_images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quiet_tensorflow()
    with one_line_errors():  # a SPEC that is no run, a folder without images: one line, exit 2
        runs = dict(item.split("=", 1) for item in args.runs.split(",") if item)
        images, references, described = load_images(args.images, args.canvas, args.max_images, args.seed)
        results = compare(runs, images, references, args.seed)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "box_similarity.json"), "w") as f:
        json.dump({"images": described, "runs": results}, f, indent=2, sort_keys=True)
    plot(results, os.path.join(args.output, "similarity_vs_iou.png"), f"similarity vs IoU on {described}")
    print(summary(results), flush=True)
    print(json.dumps({"written": args.output}))


if __name__ == "__main__":
    main()
