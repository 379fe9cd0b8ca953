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
    excess_mass,
    moment_box,
    paper_threshold_boxes,
    pseudo_boxes_from_cam,
    released_threshold_boxes,
    wsol_box,
)
from frozen_det.ops.boxes import pairwise_iou
from frozen_det.ops.nms import nms_indices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_cam_classifier():
    """A random narrow ResNet-18 classifier (7 classes, PRNGKey(0)) as a CamClassifier; the
    same weights in every process."""
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


@pytest.fixture(scope="module")
def tiny_classifier():
    return tiny_cam_classifier()


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


def _object_with_a_peak():
    """A 40x60 object at rows 20-60, columns 30-90 of a 100x120 map: CAM 0.35 over it, 1.0 on
    a 6x6 discriminative part, 0.02 background."""
    cam = np.full((100, 120), 0.02)
    cam[20:60, 30:90] = 0.35
    cam[30:36, 40:46] = 1.0
    return cam


def test_excess_mass_is_mass_share_minus_area_share_and_zero_on_a_uniform_map():
    cam = _object_with_a_peak()
    box = np.array([[20.0, 30.0, 60.0, 90.0]])
    inside = cam[20:60, 30:90].sum() / cam.sum() - 40 * 60 / cam.size
    np.testing.assert_allclose(excess_mass(cam, box), [inside])
    # a cell counts when the box holds its centre: 19.6 -> row 20 in, 59.4 -> row 59 in, row 60 out
    np.testing.assert_allclose(excess_mass(cam, [[19.6, 30.0, 60.4, 90.0]]), [inside])
    np.testing.assert_allclose(excess_mass(np.ones((30, 40)), [[0, 0, 30, 40], [3, 4, 20, 9]]), [0.0, 0.0])
    assert excess_mass(cam, [[0, 0, 0, 0]])[0] == 0.0  # an empty box


def test_excess_mass_ranks_the_object_above_its_peak_and_mean_cam_the_reverse():
    cam = _object_with_a_peak()
    truth = np.array([[20.0, 30.0, 60.0, 90.0], [30.0, 40.0, 36.0, 46.0]], np.float32)  # object, peak
    for score, top in (("mean_cam", 1), ("excess_mass", 0)):
        result = pseudo_boxes_from_cam(cam, PseudoBoxOptions(thresholds=(0.2, 0.5), score=score))
        assert len(result.boxes) == 2  # a moment box of the object at tau 0.2, the peak at 0.5
        ious = np.asarray(pairwise_iou(result.boxes, truth))
        assert ious[0, top] > 0.8 and ious[1, 1 - top] > 0.8, (score, ious)
    with pytest.raises(ValueError, match="only the paper variant"):
        PseudoBoxOptions(variant="released", score="mean_cam")


def test_wsol_box_bounds_the_largest_8_connected_component_above_a_fifth_of_the_max():
    cam = np.zeros((40, 50))
    cam[5:10, 5:10] = 1.0  # the peak: 25 cells
    cam[10:14, 10:14] = 0.25  # diagonal neighbour of the peak: joined by 8-connectivity
    cam[20:30, 20:45] = 0.21  # the largest component: 250 cells
    cam[35:38, 2:4] = 0.19  # under 20% of the max
    np.testing.assert_array_equal(wsol_box(cam), [20, 20, 30, 45])
    cam[20:30, 20:45] = 0.0
    np.testing.assert_array_equal(wsol_box(cam), [5, 5, 14, 14])
    result = pseudo_boxes_from_cam(cam, PseudoBoxOptions())
    np.testing.assert_array_equal(result.wsol_box, [5, 5, 14, 14])


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


# ---------------------------------------------------------------- batched, sharded, resumable


def _folder_of_images(folder, sizes):
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(folder / f"im{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")


def test_batched_maps_are_one_image_at_a_time_maps(tiny_classifier):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, hw + (3,), np.uint8) for hw in [(40, 50), (50, 40), (40, 50), (41, 52), (40, 50)]]
    batched = cam_lib.batched_feature_maps(tiny_classifier, images, (64,), flip=True, batch_size=2)
    for image, maps in zip(images, batched):
        np.testing.assert_allclose(maps[0], cam_lib.feature_map(tiny_classifier, image, 64, True), atol=2e-5)
    coarse = cam_lib.batched_feature_maps(tiny_classifier, images, (64,), flip=True, batch_size=2, pad_multiple=128)
    assert [m[0].shape for m in coarse] == [m[0].shape for m in batched]  # cropped to each image's own grid
    with pytest.raises(ValueError, match="multiple of the stride"):
        cam_lib.batched_feature_maps(tiny_classifier, images, (64,), flip=True, pad_multiple=48)


def test_two_processes_resume_and_merge_into_the_one_process_file(tiny_classifier, tmp_path):
    from frozen_det.data.process_shards import ProcessSlot
    from frozen_det.localization.image_sources import FolderImages
    from frozen_det.pseudo_boxes import write_pseudo_boxes

    _folder_of_images(tmp_path / "images", [(40, 50), (50, 40), (40, 50), (44, 60), (40, 50)])
    images = FolderImages(str(tmp_path / "images"), None, tiny_classifier.class_names)
    options = PseudoBoxOptions(scales=(64,))
    alone = tmp_path / "alone.json"
    stats = write_pseudo_boxes(tiny_classifier, images, str(alone), options, progress=False, batch_size=2)
    assert stats["images"] == 5 and stats["num_unreadable"] == 1 and stats["merged"]["boxes_per_image"] > 0

    shared = tmp_path / "shared.json"
    first, second = ProcessSlot(0, 2), ProcessSlot(1, 2)
    run = dict(options=options, progress=False, batch_size=2)
    # Process 1 runs the boxes' host part in a worker process; it waits for process 0 to merge.
    assert write_pseudo_boxes(tiny_classifier, images, str(shared), slot=second, host_workers=1, **run) is None
    # Process 0 is preempted with its last line half written: the rerun keeps what is whole.
    path = first.shard_path(str(shared), ".jsonl")
    write_pseudo_boxes(tiny_classifier, images, str(shared), slot=first, **run)
    os.remove(shared)
    lines = open(path).read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(lines[:2]) + "\n" + lines[2][:20])
    stats = write_pseudo_boxes(tiny_classifier, images, str(shared), slot=first, **run)
    assert stats is not None and stats["processes"] == 2
    one, two = json.loads(alone.read_text()), json.loads(shared.read_text())
    assert two["images"] == one["images"] and two["categories"] == one["categories"]
    for a, b in zip(one["annotations"], two["annotations"], strict=True):
        assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.011)
    assert {k: v for k, v in two["stats"].items() if k != "processes"} == {
        k: v for k, v in one["stats"].items() if k != "processes"
    }

    with pytest.raises(ValueError, match="other inputs or options"):
        write_pseudo_boxes(tiny_classifier, images, str(shared), PseudoBoxOptions(scales=(96,)), slot=first)
    with pytest.raises(ValueError, match="another number of processes"):
        write_pseudo_boxes(tiny_classifier, images, str(shared), slot=ProcessSlot(0, 3), **run)


_MOCK_TFDS_BOXES = """
import sys
sys.path.insert(0, {tests!r})
import tensorflow_datasets as tfds
from test_pseudo_boxes import tiny_cam_classifier
from frozen_det.data.process_shards import process_slot
from frozen_det.localization.cam_boxes import PseudoBoxOptions
from frozen_det.localization.image_sources import TfdsImages
from frozen_det.pseudo_boxes import write_pseudo_boxes

from frozen_det.data.two_view.cache_proposals import cache_run_proposals

count, index, port, output = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
slot = process_slot(count > 1, f"localhost:{{port}}", count, index)
with tfds.testing.mock_data(num_examples=10):
    images = TfdsImages("oxford_flowers102", "train")
    clf = tiny_cam_classifier()
    write_pseudo_boxes(clf, images, output, PseudoBoxOptions(scales=(64,)), progress=False, slot=slot,
                       batch_size=4, pad_multiple=128)
    two_view = dict(source="tfds", name="oxford_flowers102", train_split="train", eval_split="validation")
    cache_run_proposals(two_view, output + ".npz", slot=slot, save_every=3, max_boxes=20, max_side=64)
"""


@pytest.mark.slow
def test_a_mocked_tfds_split_boxed_by_two_jax_processes_equals_one_and_reads_back(tmp_path):
    """Two processes under jax.distributed (localhost) box their halves of a mocked TFDS split
    into the same file as one process, and cache the same proposals; the TFDS pseudo-box source
    reads the boxes back."""
    import socket

    import tensorflow_datasets as tfds

    script = tmp_path / "box.py"
    script.write_text(_MOCK_TFDS_BOXES.format(tests=os.path.dirname(os.path.abspath(__file__))))
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    env = dict(os.environ, XLA_FLAGS="")  # one device per process
    run = lambda count, index, out: subprocess.Popen(  # noqa: E731
        [sys.executable, str(script), str(count), str(index), port, str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    alone, shared = tmp_path / "alone.json", tmp_path / "shared.json"
    for procs in ([run(1, 0, alone)], [run(2, 0, shared), run(2, 1, shared)]):
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
    one, two = json.loads(alone.read_text()), json.loads(shared.read_text())
    assert len(one["images"]) == 10 and two["stats"]["processes"] == 2
    assert two["images"] == one["images"] and len(two["annotations"]) == len(one["annotations"])
    for a, b in zip(one["annotations"], two["annotations"]):
        assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.011)
    assert all(".tfrecord-" in image["file_name"] for image in one["images"])
    from frozen_det.data.two_view.proposals import load_proposals

    proposals_one, proposals_two = load_proposals(f"{alone}.npz"), load_proposals(f"{shared}.npz")
    assert len(proposals_one) >= 10 and proposals_two.keys() == proposals_one.keys()  # mocked splits share names
    for key, boxes in proposals_one.items():
        np.testing.assert_array_equal(proposals_two[key], boxes)

    from frozen_det.data.detection.sources.tfds_pseudo_boxes import TfdsPseudoBoxSource

    with tfds.testing.mock_data(num_examples=10):
        source = TfdsPseudoBoxSource(tfds.builder("oxford_flowers102"), {"train": (str(shared), "train")})
        assert source.num_records("train") == 10 and source.info.num_classes == 7
        examples = list(source.stream("train", (1, 2), seed=3, buffer=16).map(lambda r: source.decode(r, False)))
    assert sorted(int(e["image_id"]) for e in examples) == [2, 4, 6, 8, 10]  # record i % 2 == 1
    by_image = {}
    for a in two["annotations"]:
        x, y, w, h = a["bbox"]
        by_image.setdefault(a["image_id"], []).append([y, x, y + h, x + w])
    for e in examples:
        image = two["images"][int(e["image_id"]) - 1]
        assert tuple(e["image"].shape[:2]) == (image["height"], image["width"])
        np.testing.assert_allclose(e["boxes"].numpy(), by_image[int(e["image_id"])], rtol=1e-6)

    # ... and the detection pipeline trains on it: batches, resuming, evaluation's ground truth.
    from frozen_det.data import detection

    cfg = ml_collections.ConfigDict(
        dict(
            source="tfds_pseudo_boxes",
            name="oxford_flowers102",
            coco_files={"train": (str(shared), "train")},
            canvas=64,
            batch_size=2,
            eval_batch_size=4,
            max_instances=4,
            num_parallel_calls=1,
            train_split="train",
            eval_split="train",
        )
    )
    with tfds.testing.mock_data(num_examples=10):
        train = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
        batch = next(train)
        assert batch["image"].shape == (2, 64, 64, 3) and (batch["classes"] > 0).any()
        state, following = train.state(), next(train)
        again = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
        again.restore(state)
        np.testing.assert_array_equal(next(again)["image"], following["image"])
        evaluation = detection.build_eval_pipeline(cfg, process_index=0, process_count=1)
        assert evaluation.num_examples == 10
        assert len(evaluation.source.coco_ground_truth("train")["annotations"]) == len(two["annotations"])
