"""Two runs' feature spaces on the same images (Li et al., "An analysis of pre-training on object
detection", secs. 4.3-4.4; frozen_det.evaluation.feature_analysis): k-means co-membership over
several cluster counts, t-SNE plots, and activation and mask-out maps of a few images.

    python tools/plot_feature_spaces.py --runs cls=RUN_A,det=RUN_B --output /tmp/features \
        [--config configs/classification/fashion_mnist.py --images 2000 --clusters 5,10,20,40 --maps 4]

Each run is a classification run (any backbone, or a detector's tap: model.features); its
features are the pooled features its classifier reads (ClassificationTask.features_fn), on the
eval split of the data in --config, or of the first run's data (the same images for both runs). Writes
OUTPUT/co_membership.md / .json, OUTPUT/tsne.png (points coloured by class) and
OUTPUT/maps.png (per image: the image, each run's activation map of its classifier's input map,
each run's mask-out map for the true class).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy

import numpy as np


def _load(config_path: str):
    file, _, arg = config_path.partition(":")
    return runpy.run_path(file)["get_config"](arg or None)


def main(argv=None) -> None:
    from frozen_det.runtime import quiet_tensorflow

    quiet_tensorflow()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="name=WORKDIR,name=WORKDIR (two runs)")
    ap.add_argument(
        "--config",
        default="",
        help="the data both runs are compared on (a classification config; default: the first run's own data)",
    )
    ap.add_argument("--output", required=True)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--clusters", default="5,10,20,40")
    ap.add_argument("--maps", type=int, default=4)
    args = ap.parse_args(argv)
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from frozen_det.data import classification
    from frozen_det.evaluation.classification import extract_features
    from frozen_det.evaluation.feature_analysis import activation_map, co_membership, mask_out_map
    from frozen_det.training.run import Run

    os.makedirs(args.output, exist_ok=True)
    data = _load(args.config).data if args.config else None
    runs = dict(r.split("=", 1) for r in args.runs.split(","))
    features, models = {}, {}
    for name, workdir in runs.items():
        with Run(workdir) as run:
            config = run.config.copy_and_resolve_references()
            task, model, variables = run.task, run.model, run.variables()
        data = data or config.data
        config.data = data  # the images to compare on, in the run's own task
        pipeline = classification.build_eval_pipeline(config, process_index=0, process_count=1)
        feats, labels = extract_features(task.features_fn(model), variables, pipeline, label_key="fine_label")
        features[name] = feats[: args.images]
        models[name] = (model, variables)
    labels = labels[: args.images]
    (a_name, a), (b_name, b) = features.items()
    table = {int(k): co_membership(a, b, int(k), num_pairs=20_000) for k in args.clusters.split(",")}
    rows = [
        f"| k | P(same in {b_name} given same in {a_name}) | P(same in {a_name} given same in {b_name}) |",
        "|---|---|---|",
    ]
    rows += [f"| {k} | {v['a_in_b']:.3f} | {v['b_in_a']:.3f} |" for k, v in table.items()]
    with open(os.path.join(args.output, "co_membership.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    with open(os.path.join(args.output, "co_membership.json"), "w") as f:
        json.dump(table, f, indent=1)
    print("\n".join(rows))

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (name, feats) in zip(axes, features.items()):
        embedded = TSNE(2, init="pca", random_state=0, perplexity=30).fit_transform(feats)
        ax.scatter(embedded[:, 0], embedded[:, 1], c=labels, cmap="tab10", s=3)
        ax.set_title(f"t-SNE: {name}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(os.path.join(args.output, "tsne.png"), dpi=110)

    batch = next(iter(classification.build_eval_pipeline(data, process_index=0, process_count=1)))
    fig, axes = plt.subplots(
        args.maps, 1 + 2 * len(models), figsize=(2 * (1 + 2 * len(models)), 2 * args.maps), squeeze=False
    )
    for row in range(args.maps):
        image, label = batch["image"][row], int(batch["label"][row])
        axes[row][0].imshow((image - image.min()) / max(image.max() - image.min(), 1e-6))
        for col, (name, (model, variables)) in enumerate(models.items()):
            out = model.apply(variables, {"image": image[None]}, train=False, with_maps=True)
            probability = jax.jit(
                lambda x, m=model, v=variables: m.apply(v, {"image": x}, train=False)["probabilities"]
            )
            axes[row][1 + 2 * col].imshow(activation_map(np.asarray(out["pre_pool_map"][0])), cmap="magma")
            axes[row][2 + 2 * col].imshow(
                mask_out_map(probability, image, label, patch=image.shape[0] // 4, stride=max(1, image.shape[0] // 8)),
                cmap="magma",
            )
            if row == 0:
                axes[0][1 + 2 * col].set_title(f"{name}: activation", fontsize=8)
                axes[0][2 + 2 * col].set_title(f"{name}: mask-out", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(os.path.join(args.output, "maps.png"), dpi=110)


if __name__ == "__main__":
    main()
