"""CAMs and pseudo-boxes of the packaged ImageNet EfficientNet-Lite0 on scikit-image's bundled
photos, beside boxes drawn by eye (the check of DAP's step 2 on real images; the same eye boxes
as tests/localization/test_pseudo_boxes.py):

    python tools/pseudo_box_photos.py --output docs/studies/figures/dap_photos.png [--variant released]

One panel per photo: the normalised CAM of the Lite0's top-1 class over the photo, the merged
pseudo-boxes (red, the top-scoring one thick), the eye-drawn box (green, dashed), the class and
the best IoU. Prints one JSON line per photo.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from frozen_det.projects.runner import repo_config

# (x1, y1, x2, y2) drawn by eye around the object of the class the Lite0 gives.
EYE_BOXES = {
    "chelsea": (0, 0, 395, 300),  # Egyptian cat: the cat's head and chest
    "coffee": (172, 18, 410, 300),  # espresso: the cup, handle included, saucer not
    "astronaut": (275, 342, 505, 512),  # football helmet: the helmet at the bottom right
    "rocket": (300, 125, 345, 410),  # missile (class 657, given): the rocket on its pad
}
GIVEN_CLASS = {"rocket": 657}  # the Lite0's top-1 there is "drilling platform"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="/tmp/dap_photos.png")
    parser.add_argument("--variant", default="paper", choices=("paper", "released"))
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import skimage.data

    from frozen_det.evaluation.localization import iou_matrix
    from frozen_det.localization.cam import resize_map
    from frozen_det.localization.cam_boxes import PseudoBoxOptions, image_pseudo_boxes
    from frozen_det.pseudo_boxes import load_cam_classifier

    config = repo_config("configs/backbones/efficientnet_lite0_imagenet.py")
    clf = load_cam_classifier(config)
    options = PseudoBoxOptions(variant=args.variant)
    fig, axes = plt.subplots(1, len(EYE_BOXES), figsize=(4.2 * len(EYE_BOXES), 3.6))
    for ax, (name, eye) in zip(axes, EYE_BOXES.items()):
        image = getattr(skimage.data, name)()
        result, cam, class_id = image_pseudo_boxes(clf, image, options, GIVEN_CLASS.get(name))
        xyxy = result.boxes[:, [1, 0, 3, 2]]
        best = float(iou_matrix(xyxy, np.asarray([eye])).max()) if len(xyxy) else 0.0
        h, w = image.shape[:2]
        ax.imshow(image)
        ax.imshow(resize_map(cam, h, w), cmap="jet", alpha=0.35, vmin=0, vmax=1)
        for k, (x1, y1, x2, y2) in enumerate(xyxy):
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red", lw=3 if k == 0 else 1))
        x1, y1, x2, y2 = eye
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=2, ls="--"))
        given = " (given)" if name in GIVEN_CLASS else ""
        ax.set_title(f"{name}: {clf.class_names[class_id]}{given}\n{len(xyxy)} boxes, best IoU {best:.2f}", fontsize=9)
        ax.axis("off")
        print(json.dumps({"photo": name, "class": clf.class_names[class_id], "boxes": len(xyxy), "best_iou": best}))
    fig.suptitle(f"ImageNet Lite0 CAMs and pseudo-boxes ({args.variant} variant; red: pseudo-boxes, green: by eye)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=90)


if __name__ == "__main__":
    main()
