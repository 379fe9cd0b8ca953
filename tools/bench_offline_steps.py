"""Throughput of the offline steps that precede pre-training at scale: DAP's CAM pseudo-boxes
(one image at a time vs batched on the device) and PreDet's unsupervised proposals, on this
machine, and the wall time they project for ImageNet-1k on a TPU v4-32 slice.

    python tools/bench_offline_steps.py [--images 32] [--batch_size 8] [--repeats 2] [--json out.json]

Images: scikit-image's bundled photos (chelsea, coffee, astronaut, rocket) resized to ImageNet's
two most common sizes, 500x375 and 375x500, alternately. Pseudo-boxes: the packaged ImageNet
EfficientNet-Lite0, the paper's options (scales 288 / 576, flip, four thresholds); each way is
run once to compile (not timed) and then `--repeats` times:

* one at a time: `image_pseudo_boxes` per image (two device calls per image: one per scale);
* batched: `batched_feature_maps` on all images (`--batch_size` images per device call), then
  the host's boxes per image (`pseudo_boxes_from_maps`), timed apart;
* the command's path: `write_pseudo_boxes` on the images saved as JPEG files (decoding, shard
  lines and the merged file included).

Proposals: `selective_search` per image (PreDet's proposal cache; host only, the defaults:
longer side 512, four segmentation scales).

The projection takes the classifier's GFLOPs per image from XLA's cost analysis of the batched
call (Lite0, measured) and of a ResNet-50 classifier (DAP's, from shapes only), ImageNet-1k's
1,281,167 training images, a v4-32 slice's 16 chips at 275 bf16 TFLOP/s each at a stated
utilisation, and its 4 hosts running the boxes' host part on `--host_workers` processes each,
at this machine's measured seconds per image per core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from bench_common import machine_info, write_json

IMAGENET_TRAIN = 1_281_167
V4_CHIPS, V4_PEAK_TFLOPS, V4_HOSTS = 16, 275.0, 4  # a v4-32 slice: 16 chips (32 cores), 4 hosts
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
LITE0 = "configs/backbones/efficientnet_lite0_imagenet.py"


def photos(n: int) -> list[np.ndarray]:
    import skimage.data
    from PIL import Image

    out = []
    for i in range(n):
        image = Image.fromarray(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
        out.append(np.asarray(image.resize((500, 375) if i % 2 == 0 else (375, 500), Image.BILINEAR)))
    return out


def timed(fn, repeats: int) -> float:
    """Median wall seconds of `fn()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cam_gflops(model_config, options, batch_size: int) -> float:
    """XLA's GFLOPs per 375x500 image of a classifier's CAM calls (every scale, flip included),
    from shapes only (nothing is compiled or materialised)."""
    import jax
    import ml_collections

    from frozen_det.localization.cam import STRIDE
    from frozen_det.models.classifier import Classifier

    model = Classifier(ml_collections.FrozenConfigDict(model_config))
    total = 0.0
    for scale in options.scales:
        h, w = scale, round(500 * scale / 375)
        shape = (batch_size * (2 if options.flip else 1), h + -h % STRIDE, w + -w % STRIDE, 3)
        images = jax.ShapeDtypeStruct(shape, np.float32)
        variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), {"image": x}), images)

        def forward(variables, x):
            return model.apply(variables, {"image": x}, train=False, with_maps=True)["pre_pool_map"]

        total += jax.jit(forward).lower(variables, images).cost_analysis()["flops"] / batch_size
    return total / 1e9


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--utilisation", type=float, default=0.3, help="of the chips' bf16 peak")
    parser.add_argument("--host_workers", type=int, default=1, help="processes per host for the boxes' host part")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)

    from PIL import Image

    from frozen_det.data.two_view.proposals import selective_search
    from frozen_det.localization.cam import batched_feature_maps
    from frozen_det.localization.cam_boxes import PseudoBoxOptions, image_pseudo_boxes, pseudo_boxes_from_maps
    from frozen_det.localization.image_sources import FolderImages
    from frozen_det.projects.runner import repo_config
    from frozen_det.pseudo_boxes import load_cam_classifier, write_pseudo_boxes

    images = photos(args.images)
    options = PseudoBoxOptions()
    clf = load_cam_classifier(repo_config(LITE0))
    n, bs = len(images), args.batch_size

    def one_at_a_time():
        for image in images:
            image_pseudo_boxes(clf, image, options)

    maps = []

    def batched_maps():
        maps[:] = batched_feature_maps(clf, images, options.scales, options.flip, bs)

    def batched_boxes():
        for image, image_maps in zip(images, maps):
            pseudo_boxes_from_maps(clf, image_maps, image.shape[:2], options)

    folder = tempfile.mkdtemp(prefix="bench_offline_")
    os.makedirs(os.path.join(folder, "images"))
    for i, image in enumerate(images):
        Image.fromarray(image).save(os.path.join(folder, "images", f"{i:04d}.jpg"), quality=90)
    source = FolderImages(os.path.join(folder, "images"), None, clf.class_names)
    runs = iter(range(10**6))

    def command_path():
        output = os.path.join(folder, f"boxes{next(runs)}.json")
        write_pseudo_boxes(clf, source, output, options, progress=False, batch_size=bs)

    def proposals():
        for image in images:
            selective_search(image)

    seconds = {}
    for name, fn in [
        ("pseudo_boxes_one_at_a_time", one_at_a_time),
        ("pseudo_boxes_batched_maps", batched_maps),
        ("pseudo_boxes_batched_host_boxes", batched_boxes),
        ("pseudo_boxes_command", command_path),
        ("proposals", proposals),
    ]:
        fn()  # compiles (and warms the caches); not timed
        seconds[name] = timed(fn, args.repeats)
        print(f"{name:34s} {n / seconds[name]:7.2f} images/s", file=sys.stderr)

    from frozen_det.config import complete

    lite0 = cam_gflops(complete(repo_config(LITE0)).model, options, bs)
    resnet50 = dict(type="classifier", num_classes=1000, backbone=dict(type="resnet", depth=50))
    r50 = cam_gflops(complete(dict(model=resnet50)).model, options, bs)
    host_s = seconds["pseudo_boxes_batched_host_boxes"] / n
    device_rate = V4_CHIPS * V4_PEAK_TFLOPS * 1e12 * args.utilisation
    projection = {}
    for name, gflops in (("efficientnet_lite0", lite0), ("resnet50", r50)):
        device_h = IMAGENET_TRAIN * gflops * 1e9 / device_rate / 3600
        host_h = IMAGENET_TRAIN * host_s / (V4_HOSTS * args.host_workers) / 3600
        projection[name] = {
            "gflops_per_image": round(gflops, 2),
            "device_hours": round(device_h, 3),
            "host_hours": round(host_h, 2),
            "hours": round(max(device_h, host_h), 2),
        }
    proposals_h = IMAGENET_TRAIN * seconds["proposals"] / n / (V4_HOSTS * args.host_workers) / 3600
    rates = {k: round(n / v, 2) for k, v in seconds.items()}
    out = {
        "machine": machine_info(),
        "args": vars(args),
        "images_per_second": rates,
        "batched_speedup": round(
            seconds["pseudo_boxes_one_at_a_time"]
            / (seconds["pseudo_boxes_batched_maps"] + seconds["pseudo_boxes_batched_host_boxes"]),
            2,
        ),
        "host_seconds_per_image": round(host_s, 4),
        "projection_imagenet_v4_32": dict(projection, proposals_hours=round(proposals_h, 2)),
    }
    print(f"{'step':34s} {'images/s':>9s}")
    for k, v in rates.items():
        print(f"{k:34s} {v:9.2f}")
    print(f"batched (maps + host boxes) vs one at a time: {out['batched_speedup']}x")
    print(f"host part of the boxes: {host_s * 1e3:.1f} ms/image/core")
    for name, p in projection.items():
        print(
            f"ImageNet-1k on v4-32, {name} CAMs ({p['gflops_per_image']} GFLOPs/image, "
            f"{args.utilisation:.0%} of peak): device {p['device_hours']} h, host {p['host_hours']} h "
            f"({args.host_workers} worker(s)/host) -> {p['hours']} h"
        )
    print(f"ImageNet-1k proposals on v4-32's hosts ({args.host_workers} worker(s)/host): {proposals_h:.2f} h")
    if args.json:
        from frozen_det.projects.provenance import commit

        write_json(args.json, dict(out, **commit()))


if __name__ == "__main__":
    main()
