"""RetinaNet (frozen_det.models.retinanet) on a tiny config at a 64x64 canvas: the focal and box
losses against torchvision's, anchor labels against a brute-force numpy matcher, the
prior-probability bias; one train step leaves a frozen backbone bit-identical, and inference
returns fixed-size detections under jit.

The assembled model is built, initialised and stepped once per module (compilation dominates on
a CPU).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from frozen_det import config_defaults as d
from frozen_det import losses
from frozen_det.config import complete
from frozen_det.models.heads.retina import RetinaNetHead, assign_anchors, prior_bias
from frozen_det.ops import matching
from frozen_det.ops.anchors import multilevel_anchors
from frozen_det.ops.boxes import decode_boxes, pairwise_iou
from frozen_det.tasks import get_task
from frozen_det.training import partition
from frozen_det.training.state import create_train_state
from frozen_det.training.step import make_train_step
from frozen_det.tree_paths import flatten, leaf_paths

CANVAS, BATCH, MAX_GT, CLASSES = 64, 2, 4, 3


# ---------------------------------------------------------------------------- losses


def _random_anchor_labels(seed, num_anchors=300, num_fg=CLASSES):
    """(logits [2, A, K], one-hot targets, labels 1 / 0 / -1 per anchor)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(2, num_anchors, num_fg)).astype(np.float32)
    labels = rng.choice([1, 0, -1], p=[0.05, 0.85, 0.10], size=(2, num_anchors))
    classes = rng.integers(0, num_fg, size=(2, num_anchors))
    targets = np.where((labels == 1)[..., None], np.eye(num_fg)[classes], 0.0).astype(np.float32)
    return logits, targets, labels


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.5, 1.5)])
def test_focal_loss_equals_torchvision_with_the_positive_anchor_normaliser(alpha, gamma):
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    logits, targets, labels = _random_anchor_labels(0)
    reference = tv_ops.sigmoid_focal_loss(torch.from_numpy(logits), torch.from_numpy(targets), alpha, gamma)
    np.testing.assert_allclose(
        losses.sigmoid_focal_loss(logits, targets, alpha, gamma), reference.numpy(), rtol=1e-5, atol=1e-7
    )

    kept = labels != -1
    num_positive = int((labels == 1).sum())
    expected = tv_ops.sigmoid_focal_loss(
        torch.from_numpy(logits[kept]), torch.from_numpy(targets[kept]), alpha, gamma, reduction="sum"
    ) / max(1, num_positive)
    got = losses.focal_class_loss(logits, targets, kept, max(1, num_positive), alpha, gamma)
    np.testing.assert_allclose(got, expected.item(), rtol=1e-5)


def test_box_loss_is_tf_model_gardens_huber_and_1p25_smooth_l1():
    """50 x Huber(0.1) averaged over the coordinates (tensorflow/models official/vision/tasks/retinanet.py)
    is 1.25 x torch's smooth-L1 (beta 0.1) summed over them, over the positive anchors / N."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    deltas, targets = rng.normal(scale=0.3, size=(2, 2, 50, 4)).astype(np.float32)
    positive = rng.random((2, 50)) < 0.2
    got = 50.0 * losses.dense_box_loss(deltas, targets, positive, positive.sum(), delta=0.1)
    smooth_l1 = torch.nn.functional.smooth_l1_loss(
        torch.from_numpy(deltas[positive]), torch.from_numpy(targets[positive]), reduction="sum", beta=0.1
    )
    np.testing.assert_allclose(got, 1.25 * smooth_l1.item() / positive.sum(), rtol=1e-5)


# ---------------------------------------------------------------------------- anchor labels


def _reference_labels(anchors, boxes, valid, positive_from=0.5, negative_below=0.4):
    """Loops over the boxes: (labels 1 / 0 / -1, matched box or -1). Each valid box's best anchor
    (the first among equals) is positive for it; when boxes share a best anchor, the lowest box
    index keeps it (TF Model Garden's force_match_for_each_row). IoU: frozen_det.ops (tested
    against torchvision's in tests/ops/test_box_ops.py); padding -1."""
    iou = np.where(valid[None, :], np.asarray(pairwise_iou(anchors, boxes)), -1.0)
    best = iou.max(axis=1)
    labels = np.where(best >= positive_from, 1, np.where(best < negative_below, 0, -1))
    matched = np.where(labels == 1, iou.argmax(axis=1), -1)
    for j in reversed(range(len(boxes))):
        if valid[j]:
            i = int(np.argmax(iou[:, j]))
            labels[i], matched[i] = 1, j
    return labels, matched


def test_anchor_labels_and_matches_equal_a_brute_force_reference():
    anchors = multilevel_anchors((CANVAS, CANVAS), 3, 7, 3, (0.5, 1.0, 2.0), 4.0).boxes
    rng = np.random.default_rng(2)
    boxes = np.zeros((3, 5, 4), np.float32)
    valid = np.zeros((3, 5), bool)
    for b, n in enumerate((5, 2, 0)):  # the last image has no ground truth: every anchor negative
        for j in range(n):
            size = rng.uniform(6, 60, 2)  # from smaller than any anchor (forced matches) to most of the canvas
            corner = rng.uniform(0, CANVAS - size)
            boxes[b, j] = (*corner, *(corner + size))
            valid[b, j] = True
    classes = rng.integers(1, CLASSES + 1, size=(3, 5)).astype(np.int32)
    targets = jax.jit(assign_anchors)(jnp.asarray(anchors), boxes, classes, valid)
    for b in range(3):
        labels, matched = _reference_labels(anchors, boxes[b], valid[b])
        np.testing.assert_array_equal(targets.labels[b], labels)
        np.testing.assert_array_equal(targets.matched_gt[b], matched)
        np.testing.assert_array_equal(targets.classes[b], np.where(matched >= 0, classes[b][matched], 0))
    assert {int(v) for v in np.unique(targets.labels)} == {matching.POSITIVE, matching.NEGATIVE, matching.IGNORE}
    assert not (targets.labels[2] != matching.NEGATIVE).any()
    # Box targets decode back to the matched boxes.
    positive = np.asarray(targets.labels) == matching.POSITIVE
    decoded = np.asarray(decode_boxes(targets.box_targets, jnp.asarray(anchors)))
    matched_boxes = np.take_along_axis(boxes, np.maximum(np.asarray(targets.matched_gt), 0)[..., None], axis=1)
    np.testing.assert_allclose(decoded[positive], matched_boxes[positive], atol=1e-3)


def test_class_bias_starts_every_anchor_at_the_prior_probability():
    head = RetinaNetHead(num_classes=CLASSES, num_anchors=9, num_convs=1, num_filters=8)
    features = {3: jnp.ones((1, 8, 8, 8)), 4: jnp.ones((1, 4, 4, 8))}
    variables = jax.jit(lambda f: head.init(jax.random.key(0), f, False))(features)
    np.testing.assert_allclose(variables["params"]["class_logits"]["bias"], -np.log(99.0), rtol=1e-6)
    assert prior_bias(0.01) == pytest.approx(-np.log(99.0))
    assert not np.asarray(variables["params"]["box_deltas"]["bias"]).any()
    logits, deltas = head.apply(variables, {3: jnp.zeros((1, 8, 8, 8)), 4: jnp.zeros((1, 4, 4, 8))}, False)
    assert logits[3].shape == (1, 8 * 8 * 9, CLASSES) and deltas[4].shape == (1, 4 * 4 * 9, 4)
    np.testing.assert_allclose(jax.nn.sigmoid(logits[3]), 0.01, rtol=1e-5)  # zero input: the bias alone


# ---------------------------------------------------------------------------- the assembled model


def make_batch(seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(BATCH, CANVAS, CANVAS, 3)).astype(np.float32) * 0.1
    boxes = np.zeros((BATCH, MAX_GT, 4), np.float32)
    valid = np.zeros((BATCH, MAX_GT), bool)
    classes = np.zeros((BATCH, MAX_GT), np.int32)
    for b, n in enumerate((3, 1)):
        for i in range(n):
            y, x = rng.uniform(0, CANVAS * 0.5, 2)
            h, w = rng.uniform(12, 30, 2)
            boxes[b, i], valid[b, i], classes[b, i] = (y, x, y + h, x + w), True, rng.integers(1, CLASSES + 1)
            image[b, int(y) : int(y + h), int(x) : int(x + w), classes[b, i] - 1] += 1.0
    info = np.tile(np.array([[CANVAS, CANVAS], [CANVAS, CANVAS], [1, 1], [0, 0]], np.float32), (BATCH, 1, 1))
    return {"image": image, "boxes": boxes, "classes": classes, "valid": valid, "image_info": info}


@functools.lru_cache(maxsize=None)
def tiny():
    """(config, task, model, variables): a frozen tiny RetinaNet (narrow ResNet-18, P3-P7)."""
    config = complete(
        d.ConfigDict(
            dict(
                model=d.tiny_retinanet_model(num_classes=CLASSES + 1, freeze="all", width=0.25),
                data=dict(source="synthetic", canvas=CANVAS, max_instances=MAX_GT),
                train=d.train(batch_size=BATCH),
            )
        )
    )
    task = get_task(config)
    model = task.build_model()
    init = jax.jit(lambda b: model.init(task.init_rngs(jax.random.key(0)), b, train=True))
    return config, task, model, jax.device_get(init(make_batch(0)))


@functools.lru_cache(maxsize=None)
def one_step():
    """(variables before, state after one SGD step, metrics) of the frozen tiny model."""
    config, task, model, variables = tiny()
    mask = partition.trainable_mask(variables["params"], frozen=task.frozen_patterns())
    optimizer = optax.sgd(0.05, momentum=0.9)
    step = jax.jit(make_train_step(task.loss_fn(model), optimizer))
    state, metrics = step(create_train_state(variables, mask, optimizer), make_batch(0), jax.random.key(1))
    return variables, jax.device_get(state), jax.device_get(metrics)


def _changed(before, after):
    b, a = flatten(before), flatten(after)
    return {k for k in b if not np.array_equal(np.asarray(b[k]), np.asarray(a[k]))}


@pytest.mark.slow
def test_a_frozen_backbone_gets_no_gradient_and_stays_bit_identical():
    before, state, metrics = one_step()
    assert all(np.isfinite(metrics[k]) for k in ("focal", "box", "total"))
    assert metrics["total"] == pytest.approx(metrics["focal"] + metrics["box"], rel=1e-6)
    assert metrics["positive_anchors"] >= 2  # at least each box's best anchor
    changed = _changed(before["params"], state.all_params())
    assert changed and not {p for p in changed if p.startswith("backbone/")}
    assert {p.split("/")[0] for p in changed} == {"neck", "head"}
    assert not {p for p in _changed(before["batch_stats"], state.batch_stats) if p.startswith("backbone/")}
    # Neither gradients nor optimizer state for the backbone: it is not in the trainable partition.
    assert not any(p.startswith("backbone/") for p in leaf_paths(state.opt_state[0].trace))


@pytest.mark.slow
def test_inference_returns_fixed_size_class_aware_detections_under_jit():
    config, task, model, _ = tiny()
    _, state, _ = one_step()
    params = jax.tree.map(np.array, state.all_params())  # a copy: the cached state stays as it is
    # Scores near 0.5 (bias 0) so that most anchors pass the 0.05 threshold and NMS has work.
    params["head"]["class_logits"]["bias"] = np.zeros_like(params["head"]["class_logits"]["bias"])
    variables = {"params": params, "batch_stats": state.batch_stats}
    detect = jax.jit(lambda v, b: model.apply(v, b, train=False))
    inputs = task.model_inputs(train=False)
    out = jax.device_get(detect(variables, {k: v for k, v in make_batch(3).items() if k in inputs}))
    k = config.model.detections.max_detections
    assert out["boxes"].shape == out["original_boxes"].shape == (BATCH, k, 4)
    assert out["scores"].shape == out["classes"].shape == out["valid"].shape == (BATCH, k)
    assert out["valid"].all()  # 5 levels x 100 candidates of ~0.5 leave more than k after NMS
    assert ((out["classes"] >= 1) & (out["classes"] <= CLASSES)).all()
    assert (np.diff(out["scores"], axis=1) <= 0).all() and (out["scores"] > 0.05).all()
    assert (out["boxes"] >= 0).all() and (out["boxes"] <= CANVAS).all()
    for b in range(BATCH):  # class-aware NMS: same-class survivors overlap at most 0.5
        iou = np.asarray(pairwise_iou(out["boxes"][b], out["boxes"][b]))
        same = out["classes"][b][:, None] == out["classes"][b][None, :]
        assert (iou[same & ~np.eye(k, dtype=bool)] <= 0.5 + 1e-6).all()
    detect(variables, {k: v for k, v in make_batch(4).items() if k in inputs})
    assert detect._cache_size() == 1
