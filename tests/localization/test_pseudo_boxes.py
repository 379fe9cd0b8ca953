"""Class activation maps and DAP's pseudo-boxes (frozen_det.localization, frozen_det.pseudo_boxes):
the CAM against the classifier's logits and an independent torch convolution; the moment boxes
on analytic maps; the released-code variant against a literal numpy / scipy re-derivation of
the authors' `compute_cam_box`; the merging NMS against torchvision; and the command on real
photos with the packaged ImageNet EfficientNet-Lite0 against boxes drawn by eye."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from frozen_det.config import complete
from frozen_det.localization import cam as cam_lib
from frozen_det.localization.cam_boxes import (
    PseudoBoxOptions,
    moment_box,
    paper_threshold_boxes,
    pseudo_boxes_from_cam,
    released_threshold_boxes,
)
from frozen_det.ops.boxes import pairwise_iou
from frozen_det.ops.nms import nms_indices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tiny_classifier():
    """A random narrow ResNet-18 classifier (7 classes) as a CamClassifier."""
    from frozen_det.models.classifier import Classifier

    config = complete(
        dict(
            model=dict(type="classifier", num_classes=7, backbone=dict(type="resnet", depth=18, width=0.125)),
            data=dict(image_size=64),
        )
    )
    model = Classifier(ml_collections.FrozenConfigDict(config.model))
    variables = model.init(jax.random.PRNGKey(0), {"image": np.zeros((1, 64, 64, 3), np.float32)})
    # A non-zero bias, so that the test sees it in the CAM.
    params = jax.tree_util.tree_map(np.asarray, variables["params"])
    params["backbone"]["classifier"]["bias"] = np.linspace(-1, 1, 7).astype(np.float32)
    variables = dict(variables, params=params)
    return cam_lib.cam_classifier_from_model(model, variables, (120.0,) * 3, (60.0,) * 3, [f"c{i}" for i in range(7)])


def test_cam_mean_is_the_logit_and_equals_a_torch_convolution(tiny_classifier):
    torch = pytest.importorskip("torch")
    clf = tiny_classifier
    images = np.random.default_rng(0).uniform(-2, 2, (2, 96, 64, 3)).astype(np.float32)
    maps, logits = (np.asarray(a) for a in clf.maps_and_logits(images))
    assert maps.shape[1:3] == (3, 2)  # stride 32
    for b in range(2):
        for c in range(clf.num_classes):
            np.testing.assert_allclose(cam_lib.cam_of(clf, maps[b], c).mean(), logits[b, c], rtol=1e-5, atol=1e-5)
    # The classifier's row of class c as a 1x1 convolution (F.conv2d on NCHW features).
    weight = torch.from_numpy(clf.kernel.T[:, :, None, None].copy())
    reference = torch.nn.functional.conv2d(
        torch.from_numpy(maps.transpose(0, 3, 1, 2).copy()), weight, torch.from_numpy(clf.bias)
    ).numpy()
    ours = np.stack([np.stack([cam_lib.cam_of(clf, maps[b], c) for c in range(7)]) for b in range(2)])
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_flip_averaging_and_the_paper_cam_is_normalised_in_image_pixels(tiny_classifier):
    clf = tiny_classifier
    image = np.random.default_rng(1).integers(0, 255, (50, 70, 3), np.uint8)
    one = cam_lib.feature_map(clf, image, 64, flip=False)
    mirrored = cam_lib.feature_map(clf, image[:, ::-1], 64, flip=False)
    both = cam_lib.feature_map(clf, image, 64, flip=True)
    assert one.shape[:2] == (2, 3)  # 64 x 90 padded to 64 x 96
    # The padding is at the right of the mirrored image too, so only the shapes and the
    # averaging of the image with its mirror (mapped back) are checked on the padded input.
    x = cam_lib.pad_to_stride(clf.normalise(cam_lib.resize_shorter_side(image, 64)))
    maps, _ = clf.maps_and_logits(np.stack([x, x[:, ::-1]]))
    np.testing.assert_allclose(both, 0.5 * (np.asarray(maps)[0] + np.asarray(maps)[1, :, ::-1]), rtol=1e-5, atol=1e-5)
    assert mirrored.shape == one.shape
    cam = cam_lib.cam_in_image_pixels(clf, [one, both], (50, 70), (64, 64), 3)
    assert cam.shape == (50, 70) and cam.min() == 0.0 and cam.max() == pytest.approx(1.0)


# ---------------------------------------------------------------- moment boxes (Eqs. 3-6)


def test_a_uniform_rectangle_gives_exactly_that_rectangle():
    cam = np.zeros((40, 60))
    cam[7:19, 11:42] = 0.8
    boxes, scores = paper_threshold_boxes(cam, 0.5)
    np.testing.assert_allclose(boxes, [[7, 11, 19, 42]], atol=1e-9)
    np.testing.assert_allclose(scores, [0.8])


def test_a_gaussian_blob_gives_sqrt12_sigma():
    ys, xs = np.mgrid[0:160, 0:200] + 0.5
    sy, sx = 9.0, 14.0
    cam = np.exp(-((ys - 70.0) ** 2) / (2 * sy**2) - (xs - 95.0) ** 2 / (2 * sx**2))
    (box,), _ = paper_threshold_boxes(cam, 0.0)
    h, w = box[2] - box[0], box[3] - box[1]
    np.testing.assert_allclose([h, w], [np.sqrt(12) * sy, np.sqrt(12) * sx], rtol=2e-3)
    np.testing.assert_allclose([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], [70.0, 95.0], atol=1e-6)
    # moment_box is the same computation on explicit weights
    iy, ix = np.nonzero(cam > 0)
    np.testing.assert_allclose(moment_box(cam[iy, ix], iy, ix), box, atol=1e-9)


def test_two_blobs_give_two_boxes_and_a_small_component_is_dropped():
    cam = np.zeros((50, 80))
    cam[5:25, 5:25] = 1.0  # 400 px
    cam[30:45, 50:70] = 0.9  # 300 px: kept (>= half of 400)
    cam[2:8, 60:70] = 0.95  # 60 px: dropped
    boxes, _ = paper_threshold_boxes(cam, 0.3)
    np.testing.assert_allclose(sorted(boxes.tolist()), [[5, 5, 25, 25], [30, 50, 45, 70]], atol=1e-9)
    merged = pseudo_boxes_from_cam(cam, PseudoBoxOptions(thresholds=(0.3, 0.92)))
    # tau 0.92 finds the square alone again (the 60-px patch is under half of it): NMS merges
    # the two copies of the square.
    assert len(merged.per_threshold[1]) == 1 and len(merged.boxes) == 2


# ---------------------------------------------------------------- the authors' released code


def _released_reference(cam0, img_wh, scale, ths=(0.2, 0.3, 0.4, 0.5), bias=0.22, k=4):
    """A literal numpy / scipy transcription of `compute_cam_box` (github.com/mikuhatsune/dap,
    code/compute_box_imagenet1k.py), torch replaced by numpy, boxes x1y1x2y2."""

    def xyxy_by_moments(cam):
        gy, gx = np.meshgrid(np.arange(cam.shape[0], dtype=np.float32), np.arange(cam.shape[1], dtype=np.float32))
        gy, gx = gy.T, gx.T  # torch.meshgrid is "ij"
        total = cam.sum()
        cx, cy = (cam * gx).sum() / total, (cam * gy).sum() / total
        ix, iy = (cam * (gx - cx) ** 2).sum() / total, (cam * (gy - cy) ** 2).sum() / total
        w, h = max(1.0, np.sqrt(ix * 12)), max(1.0, np.sqrt(iy * 12))
        x1, y1 = cx + 0.5 - w / 2, cy + 0.5 - h / 2
        return x1, y1, x1 + w, y1 + h

    r = float(min(img_wh)) / scale
    ry = rx = 32 * r
    boxes = []
    for th in ths:
        label_image = cam0 > th
        cam = (cam0 + bias) * label_image
        label_image, max_label = ndimage.label(label_image)
        object_slices = ndimage.find_objects(label_image, max_label)
        if not len(object_slices):
            continue
        areas = [(o[0].stop - o[0].start) * (o[1].stop - o[1].start) for o in object_slices]
        ind = np.argsort(areas)[::-1]
        a0 = areas[ind[0]] * 0.5
        kk = 0
        for o in ind:
            obj, area = object_slices[o], areas[o]
            if area < a0 or kk == k:
                break
            kk += 1
            mask = np.zeros_like(cam)
            mask[obj] = 1.0
            x1, y1, x2, y2 = xyxy_by_moments(cam * mask)
            if (x2 - x1) * (y2 - y1) > 0.01 or not boxes:
                y1, x1, y2, x2 = y1 * ry, x1 * rx, y2 * ry, x2 * rx
                boxes.append(
                    np.r_[
                        np.clip(x1, 0, img_wh[0] - 1),
                        np.clip(y1, 0, img_wh[1] - 1),
                        np.clip(x2, 0, img_wh[0] - 1),
                        np.clip(y2, 0, img_wh[1] - 1),
                    ]
                )
    return np.stack(boxes)


def test_released_variant_equals_a_rederivation_of_the_authors_code():
    torchvision = pytest.importorskip("torchvision")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for trial in range(12):
        grid = ndimage.gaussian_filter(rng.normal(size=(12, 17)), 1.5)
        grid = (grid - grid.min()) / (grid.max() - grid.min())
        img_wh = (int(rng.integers(300, 700)), int(rng.integers(250, 500)))
        scale = 576
        expected = _released_reference(grid.astype(np.float32), img_wh, scale)
        options = PseudoBoxOptions(variant="released", nms_iou=1.0)
        cell = 32 * min(img_wh) / scale
        ours = pseudo_boxes_from_cam(grid.astype(np.float32), options, (img_wh[1], img_wh[0]), cell)
        raw = np.concatenate(ours.per_threshold)
        np.testing.assert_allclose(raw[:, [1, 0, 3, 2]], expected, rtol=1e-4, atol=1e-3, err_msg=f"trial {trial}")
        # merging: NMS (IoU 0.8) ordered by area relative to the first box, as boxlist_nms
        area = (expected[:, 2:] - expected[:, :2]).prod(1)
        keep = torchvision.ops.nms(torch.from_numpy(expected), torch.from_numpy(area / area[0]), 0.8).numpy()
        merged = pseudo_boxes_from_cam(
            grid.astype(np.float32), PseudoBoxOptions(variant="released"), (img_wh[1], img_wh[0]), cell
        )
        np.testing.assert_allclose(merged.boxes[:, [1, 0, 3, 2]], expected[keep], rtol=1e-4, atol=1e-3)


def test_released_components_use_their_bounding_slice_and_at_most_k():
    grid = np.zeros((20, 20))
    for i in range(6):  # six equal 2x2 blobs: four kept
        grid[1 + 3 * i : 3 + 3 * i, 2:4] = 1.0
    assert len(released_threshold_boxes(grid, 0.5, max_components=4)) == 4
    # the release compares bounding slices, not pixel counts: an L of 7 px has a 16-cell slice
    grid = np.zeros((20, 20))
    grid[0:4, 0] = grid[3, 0:4] = 1.0  # 7 px, slice 16
    grid[10:13, 10:13] = 1.0  # 9 px, slice 9 (< 16/2? no: 9 >= 8, kept)
    assert len(released_threshold_boxes(grid, 0.5)) == 2
    grid[10:13, 10:13] = 0.0
    grid[10:12, 10:13] = 1.0  # 6 px, slice 6 < 8: dropped, though 6/7 of the L's pixels
    assert len(released_threshold_boxes(grid, 0.5)) == 1


def test_merging_keeps_what_torchvision_nms_keeps():
    torchvision = pytest.importorskip("torchvision")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for n in (1, 5, 20, 40):
        yx = rng.uniform(0, 80, (n, 2))
        boxes = np.concatenate([yx, yx + rng.uniform(10, 60, (n, 2))], 1)
        scores = rng.uniform(size=n)
        for iou in (0.5, 0.8):
            expected = torchvision.ops.nms(torch.from_numpy(boxes[:, [1, 0, 3, 2]]), torch.from_numpy(scores), iou)
            np.testing.assert_array_equal(nms_indices(boxes, scores, iou), expected.numpy())


# ---------------------------------------------------------------- the command on real photos

# Boxes drawn by eye (x1, y1, x2, y2) around the object of the class the ImageNet Lite0 gives.
EYE_BOXES = {
    "chelsea": ("Egyptian_cat", (0, 0, 395, 300)),  # the cat's head and chest
    "coffee": ("espresso", (172, 18, 410, 300)),  # the cup, handle included, saucer not
    "astronaut": ("football_helmet", (275, 342, 505, 512)),  # the helmet at the bottom right
}


@pytest.mark.slow
def test_the_command_finds_eye_drawn_boxes_on_photos(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    images = tmp_path / "photos"
    images.mkdir()
    for name in EYE_BOXES:
        Image.fromarray(getattr(skimage_data, name)()).save(images / f"{name}.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    output = tmp_path / "pseudo.json"
    cmd = [
        sys.executable,
        "-m",
        "frozen_det.pseudo_boxes",
        f"--config={ROOT}/configs/backbones/efficientnet_lite0_imagenet.py",
        f"--images={images}",
        f"--output={output}",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["stats"]["num_unreadable"] == 1 and result["stats"]["unreadable"][0]["file_name"] == "broken.jpg"
    names = {c["id"]: c["name"] for c in result["categories"]}
    assert len(names) == 1000
    for image in result["images"]:
        name = image["file_name"][: -len(".png")]
        expected_class, eye = EYE_BOXES[name]
        boxes = [a for a in result["annotations"] if a["image_id"] == image["id"]]
        assert names[boxes[0]["category_id"]] == expected_class
        found = np.array([(x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in boxes)], np.float32)
        best = float(np.max(pairwise_iou(np.asarray([eye], np.float32), found)))  # xyxy: IoU is symmetric in x / y
        assert best >= 0.5, (name, best, boxes)
    merged = result["stats"]["merged"]
    assert merged["boxes_per_image"] >= 1 and set(result["stats"]["per_threshold"]) == {"0.2", "0.3", "0.4", "0.5"}

    # The detection pipeline's COCO-folder source reads the file.
    from frozen_det.data.detection.sources.coco_folder import CocoFolderSource

    source = CocoFolderSource(str(tmp_path), files={"train": (output.name, images.name)})
    records = source.split_records("train")
    assert len(records) == 3 and source.info.num_classes == 1000
    assert sum(len(r.boxes) for r in records) == len(result["annotations"])
