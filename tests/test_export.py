"""`frozen_det.export`: the SavedModel of a detector run, reloaded with `tf.saved_model.load`, gives
`frozen_det.predict`'s detections on images of other sizes than the canvas (boxes in original
pixels within 1e-3, the same classes, scores within 1e-4; Mask R-CNN's box-relative masks
within 1e-4 of the JAX model's); an existing non-empty --output is refused, on the command line
in one line with exit status 2.

No training: each run is its initialised state saved as a checkpoint (as tests/test_classification.py
does) with seeded noise on the heads' parameters, so that scores spread out rather than tie, at a
64-pixel canvas. The comparisons are `slow` (two detectors, each compiled by jax and by
TensorFlow's XLA: ~50 s on 2 cores); the refusals and the TFLite error line are quick."""

import importlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ((48, 90), (101, 75))  # (H, W): one wide, one tall, neither the canvas size


def tiny_config(kind: str):
    """The tiny configs at a 64-pixel canvas: Mask R-CNN (two_stage) or RetinaNet."""
    if kind == "mask_rcnn":
        config = importlib.import_module("configs.tiny.two_stage").get_config("mask")
    else:
        config = importlib.import_module("configs.tiny.retinanet").get_config()
        config.model.head.prior_probability = 0.2  # above the 0.05 score threshold without training
        config.model.neck.max_level = 6  # P3-P6: the canvas must be a multiple of 2^max_level
        config.model.backbone.width = 0.25
    config.data.canvas = 64
    return config


def save_run(config, workdir: str, noise: float = 0.05) -> dict:
    """A run's checkpoint without training: the initial state with seeded normal noise on the
    heads' parameters (their output layers start near zero: every score would tie). Returns its
    variables."""
    from frozen_det.tasks import get_task
    from frozen_det.training import sharding
    from frozen_det.training.checkpointing import Checkpointer
    from frozen_det.training.state import build_state
    from frozen_det.tree_paths import map_paths

    task = get_task(config)
    state, _, _, _ = build_state(config, task, task.build_model(), sharding.make_mesh(jax.devices()[:1]))
    rng = np.random.default_rng(0)

    def perturb(path, x):
        if "head" not in path.split("/")[0]:  # rpn_head, box_heads_0, mask_head; RetinaNet: head
            return x
        return x + noise * rng.standard_normal(x.shape).astype(np.float32)

    state = state.replace(params=map_paths(jax.device_get(state.params), perturb))
    checkpointer = Checkpointer(workdir)
    checkpointer.save(state, {"data": {}, "config": config.to_json()})
    checkpointer.close()
    return jax.device_get(state.variables())


def sample_images():
    rng = np.random.default_rng(1)
    images = []
    for i, (h, w) in enumerate(SIZES):
        pixels = np.full((h, w, 3), 100, np.uint8) + rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        pixels[h // 4 : h // 2, w // 5 : w // 2] = (230, 60, 40)
        pixels[h // 2 : h - 3, w // 2 : w - 4] = (40, 80, 220)
        images.append((f"image{i}", Image.fromarray(pixels)))
    return images


def export_run(kind: str, tmp_path_factory, tflite: bool) -> dict:
    """A saved run of `tiny_config(kind)` and its export (frozen_det.export.export)."""
    from frozen_det.export import export

    root = tmp_path_factory.mktemp(f"export_{kind}")
    config = tiny_config(kind)
    workdir = str(root / "run")
    variables = save_run(config, workdir)
    info = export(config, workdir, str(root / "saved_model"), tflite=tflite)
    return dict(config=config, workdir=workdir, output=root / "saved_model", info=info, variables=variables)


@pytest.fixture(scope="module")
def mask_rcnn(tmp_path_factory):
    """Mask R-CNN (two_stage), with the TFLite attempt."""
    return export_run("mask_rcnn", tmp_path_factory, tflite=True)


@pytest.fixture(scope="module")
def retinanet(tmp_path_factory):
    return export_run("retinanet", tmp_path_factory, tflite=False)


def serve(exported):
    """The reloaded SavedModel's signature, numpy in and out (loaded once per export: TensorFlow
    compiles the model's XLA program at the first call of each load)."""
    if "serve" not in exported:
        signature = tf.saved_model.load(str(exported["output"])).signatures["serving_default"]
        exported["serve"] = lambda pixels: {k: v.numpy() for k, v in signature(image=tf.constant(pixels[None])).items()}
    return exported["serve"]


def match(expected: list[dict], boxes, classes, scores) -> None:
    """Every expected detection has its own counterpart of the same class, its box within 1e-3
    pixels and its score within 1e-4 (in order, a tie of scores within 1e-4 may swap)."""
    assert len(boxes) == len(expected)
    free = list(range(len(boxes)))
    for det in expected:
        close = [
            k
            for k in free
            if classes[k] == det["class_id"]
            and abs(scores[k] - det["score"]) <= 1e-4
            and np.max(np.abs(boxes[k] - det["box_xyxy"])) <= 1e-3
        ]
        assert close, (det, boxes, classes, scores)
        free.remove(close[0])


def check_detections(exported, records: list[dict]) -> None:
    """The SavedModel's outputs on `sample_images()` against predict's records of them."""
    info, run = exported["info"], serve(exported)
    max_detections = int(exported["config"].model.detections.max_detections)
    total = 0
    for (_, image), record in zip(sample_images(), records):
        out = run(np.asarray(image))
        n = int(out["num_detections"][0])
        total += n
        assert out["boxes"].shape == (1, max_detections, 4) and out["boxes"].dtype == np.float32
        assert out["classes"].dtype == np.int32 and out["scores"].dtype == np.float32
        assert not out["boxes"][0, n:].any() and not out["scores"][0, n:].any() and not out["classes"][0, n:].any()
        assert np.all(np.diff(out["scores"][0, :n]) <= 1e-6), "best first"
        match(record["detections"], out["boxes"][0, :n], out["classes"][0, :n], out["scores"][0, :n])
        # in the image's own pixels (boxes are clipped to the canvas, then mapped back)
        assert np.all(out["boxes"][0, :n, 2] <= image.width + 1e-3)
        assert np.all(out["boxes"][0, :n, 3] <= image.height + 1e-3)
        assert ("masks" in out) == (info["model_type"] == "two_stage" and exported["config"].model.mask.enabled)
    assert total >= 4, "too few detections to compare anything"


@pytest.mark.slow  # two detectors exported, compiled by jax and by TensorFlow
def test_mask_rcnn_saved_model_matches_predict(mask_rcnn, tmp_path):
    from frozen_det.predict import predict_images

    info = mask_rcnn["info"]
    assert info["model_type"] == "two_stage" and info["step"] == 0 and info["canvas"] == 64
    with open(mask_rcnn["output"] / "export.json") as f:
        assert json.load(f)["class_names"] == ["background", "circle", "square", "triangle"]
    records = predict_images(
        mask_rcnn["config"], mask_rcnn["workdir"], sample_images(), str(tmp_path / "pred"), min_score=0.0
    )
    check_detections(mask_rcnn, records)


@pytest.mark.slow  # two detectors exported, compiled by jax and by TensorFlow
def test_retinanet_saved_model_matches_predict(retinanet):
    """Against the task's predict (what frozen_det.predict runs) on the run's variables, without
    opening the run a second time."""
    from frozen_det.config import resolve
    from frozen_det.tasks import get_task

    assert retinanet["info"]["model_type"] == "retinanet"
    task = get_task(resolve(retinanet["config"]))
    records = task.predict(task.build_model(), retinanet["variables"], sample_images(), min_score=0.0)
    check_detections(retinanet, records)


@pytest.mark.slow  # two detectors exported, compiled by jax and by TensorFlow
def test_mask_rcnn_masks_match_the_jax_model(mask_rcnn):
    from frozen_det.config import resolve
    from frozen_det.tasks import get_task

    task = get_task(resolve(mask_rcnn["config"]))
    model = task.build_model()
    pixels = np.asarray(sample_images()[1][1])
    canvas_image, image_info = task.preprocess(pixels)
    # predict's jitted inference (frozen_det.tasks.detection.DetectionTask.predict)
    expected = jax.jit(lambda v, b: model.apply(v, b, train=False))(
        mask_rcnn["variables"], {"image": canvas_image[None], "image_info": image_info[None]}
    )
    got = serve(mask_rcnn)(pixels)
    n = int(got["num_detections"][0])
    order = np.argsort(~np.asarray(expected["valid"][0]), kind="stable")[:n]
    assert n == int(np.sum(expected["valid"][0])) and got["masks"].shape[-2:] == expected["masks"].shape[-2:]
    np.testing.assert_allclose(got["masks"][0, :n], np.asarray(expected["masks"][0])[order], atol=1e-4)
    assert not got["masks"][0, n:].any()


@pytest.mark.slow  # two detectors exported, compiled by jax and by TensorFlow
def test_tflite_written_only_when_it_converts(mask_rcnn):
    """model.tflite exists exactly when export.json says it was written, with the reason either
    way; when written, it gives the SavedModel's detections."""
    tflite = mask_rcnn["info"]["tflite"]
    path = mask_rcnn["output"] / "model.tflite"
    assert tflite["reason"] and os.path.isfile(path) == tflite["written"], tflite
    if not tflite["written"]:
        return
    run = serve(mask_rcnn)
    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    for _, image in sample_images():
        pixels = np.asarray(image)[None]
        expected, got = run(pixels[0]), runner(image=pixels)
        n = int(expected["num_detections"][0])
        assert int(got["num_detections"][0]) == n
        detections = [
            {"box_xyxy": b, "class_id": c, "score": s}
            for b, c, s in zip(expected["boxes"][0, :n], expected["classes"][0, :n], expected["scores"][0, :n])
        ]
        match(detections, got["boxes"][0, :n], got["classes"][0, :n], got["scores"][0, :n])


def test_refuses_a_non_empty_output(tmp_path):
    """Checked before the run is opened (here there is none): nothing written, nothing removed."""
    from frozen_det.export import export

    output = tmp_path / "taken"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="never overwrites"):
        export(None, str(tmp_path / "no_run"), str(output))
    assert os.listdir(output) == ["keep.txt"] and (output / "keep.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["taken"]


def test_command_line_refuses_in_one_line(tmp_path):
    """The entry point's check runs before any run is opened: one line, exit status 2."""
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    output = tmp_path / "taken"
    output.mkdir()
    (output / "saved_model.pb").write_bytes(b"not yours to replace")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "frozen_det.export",
            "--config",
            os.path.join(ROOT, "configs", "tiny", "two_stage.py"),
            "--workdir",
            str(workdir),
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "never overwrites" in lines[0] and str(output) in lines[0], result.stderr
    assert (output / "saved_model.pb").read_bytes() == b"not yours to replace"


def test_converter_errors_become_one_line_naming_the_model_source():
    """What `TFLite: not written (...)` says, from the converter's messages of the two detectors
    (TensorFlow 2.21), shortened."""
    from frozen_det.export import _converter_reason

    two_stage = (
        "Could not translate MLIR to FlatBuffer.\n<unknown>:0: note: loc(callsite(...)): called from\n"
        "/work/main/frozen_det/ops/roi_align.py:100:23: error: failed to legalize operation 'tfl.mul' "
        "that was explicitly marked illegal\n        return jnp.sum(values * weights, axis=(2, 4))"
    )
    assert _converter_reason(Exception(two_stage)) == (
        "failed to legalize operation 'tfl.mul' that was explicitly marked illegal (at frozen_det/ops/roi_align.py:100)"
    )
    retinanet = (
        'loc(callsite("sort" at ...)): error: x\nCould not translate MLIR to FlatBuffer./site/frozen_det/ops/nms.py:'
        "57:12: error: 'vhlo.sort_v1' op is not part of the vhlo support yet.\n"
        "<unknown>:0: error: failed while converting"
    )
    assert _converter_reason(Exception(retinanet)) == (
        "'vhlo.sort_v1' op is not part of the vhlo support yet. (at frozen_det/ops/nms.py:57)"
    )
    unlocated = "<unknown>:0: error: loc(callsite(fused[\"XlaCallModule:\"])): 'tf.XlaCallModule' op is neither"
    assert _converter_reason(Exception(unlocated)) == "'tf.XlaCallModule' op is neither"
