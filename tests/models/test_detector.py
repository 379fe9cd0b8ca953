"""The assembled two-stage detectors on tiny configs: a full train step (forward, target
assignment, losses, gradients) compiles and runs; inference returns fixed-size detections; the
freeze switch applies unchanged."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from frozen_det.config import complete
from frozen_det.config_defaults import tiny_two_stage_model
from frozen_det.models.backbones import backbone_frozen_patterns
from frozen_det.models.detector import TwoStageDetector
from frozen_det.ops.boxes import to_original_boxes
from frozen_det.tasks.two_stage import TwoStageTask
from frozen_det.training import partition
from frozen_det.training.state import create_train_state
from frozen_det.training.step import make_train_step

CANVAS, BATCH, MAX_GT, MASK = 64, 2, 6, 16


def make_batch(seed=0, with_masks=False):
    rng = np.random.default_rng(seed)
    boxes = np.zeros((BATCH, MAX_GT, 4), np.float32)
    valid = np.zeros((BATCH, MAX_GT), bool)
    classes = np.zeros((BATCH, MAX_GT), np.int32)
    image = rng.normal(size=(BATCH, CANVAS, CANVAS, 3)).astype(np.float32) * 0.1
    for b, n in enumerate((3, 1)):
        for i in range(n):
            y, x = rng.uniform(0, CANVAS * 0.5, 2)
            h, w = rng.uniform(CANVAS / 5, CANVAS / 2, 2)
            boxes[b, i] = (y, x, y + h, x + w)
            valid[b, i] = True
            classes[b, i] = rng.integers(1, 4)
            image[b, int(y) : int(y + h), int(x) : int(x + w), classes[b, i] - 1] += 1.0
    batch = {
        "image": image,
        "boxes": boxes,
        "classes": classes,
        "valid": valid,
        "image_info": np.tile(
            np.array([[CANVAS, CANVAS], [CANVAS, CANVAS], [1, 1], [0, 0]], np.float32), (BATCH, 1, 1)
        ),
    }
    if with_masks:
        masks = np.zeros((BATCH, MAX_GT, MASK, MASK), np.float32)
        masks[:, :, 4:12, 4:12] = 1.0
        batch["masks"] = masks
    return batch


@functools.lru_cache(maxsize=None)
def _build(kwargs_items):
    config = tiny_two_stage_model(**dict(kwargs_items))
    model = TwoStageDetector(ml_collections.FrozenConfigDict(config))
    batch = make_batch(with_masks=config.mask.enabled)
    init = jax.jit(lambda b: model.init({"params": jax.random.key(0), "sampling": jax.random.key(1)}, b, train=True))
    return config, model, dict(init(batch)), batch


def build(**kwargs):
    """Shared across tests: building and initialising compiles, which dominates on CPU."""
    return _build(tuple(sorted(kwargs.items())))


def loss_fn(model):
    """The detection task's training objective for `model`."""
    return TwoStageTask(complete(ml_collections.ConfigDict({"model": model.config.as_configdict()}))).loss_fn(model)


def train_steps(config, model, variables, batch, steps=2, lr=0.01):
    mask = partition.trainable_mask(
        variables["params"], frozen=backbone_frozen_patterns(config.backbone, prefix="backbone/")
    )
    optimizer = optax.sgd(lr, momentum=0.9)
    state = create_train_state(variables, mask, optimizer)
    step = jax.jit(make_train_step(loss_fn(model), optimizer))
    history = []
    for _ in range(steps):
        state, metrics = step(state, batch, jax.random.key(2))
        history.append(jax.tree.map(float, metrics))
    return state, history, step


@pytest.mark.slow
def test_cascade_mask_rcnn_frozen_train_step_compiles_once_and_learns():
    config, model, variables, batch = build(cascade=True, mask=True, freeze="all")
    state, history, step = train_steps(config, model, variables, batch, steps=3)
    expected_terms = {"rpn_score", "rpn_box", "frcnn_class", "frcnn_box", "total"}
    if config.mask.enabled:
        expected_terms.add("mask")
    assert expected_terms <= set(history[0])
    for h in history:
        assert all(np.isfinite(h[k]) for k in expected_terms)
        assert np.isclose(h["total"], sum(h[k] for k in expected_terms - {"total"}), rtol=1e-5)
    assert history[-1]["total"] < history[0]["total"]
    assert step._cache_size() == 1
    if config.backbone.freeze == "all":
        before = variables["params"]["backbone"]
        after = state.all_params()["backbone"]
        assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), before, after))


def test_rpn_targets_force_match_every_ground_truth():
    config, model, variables, batch = build()
    anchors = model.anchors((CANVAS, CANVAS))

    @jax.jit
    def targets(v):
        return model.apply(
            v,
            jax.random.key(3),
            anchors,
            jnp.asarray(batch["boxes"]),
            jnp.asarray(batch["valid"]),
            method=TwoStageDetector.rpn_targets,
        )

    labels, box_targets, num_pos = targets(variables)
    flat = jnp.concatenate([v.reshape(BATCH, -1) for _, v in sorted(labels.items())], axis=1)
    assert int(jnp.max(jnp.sum(flat >= 0, axis=1))) <= config.rpn.batch_size_per_image
    assert int(jnp.max(jnp.sum(flat == 1, axis=1))) <= config.rpn.batch_size_per_image // 2
    assert int(num_pos) >= int(batch["valid"].sum())  # every GT has at least its best anchor


@pytest.mark.parametrize(
    "kwargs",
    [dict(), pytest.param(dict(cascade=True, mask=True), marks=pytest.mark.slow)],
    ids=["faster", "cascade_mask"],
)
def test_inference_returns_fixed_size_detections(kwargs):
    config, model, variables, batch = build(**kwargs)
    detect = jax.jit(lambda v, b: model.apply(v, b, train=False))
    out = detect(variables, batch)
    k = config.detections.max_detections
    assert out["boxes"].shape == (BATCH, k, 4) and out["scores"].shape == (BATCH, k)
    assert out["classes"].shape == (BATCH, k) and out["valid"].shape == (BATCH, k)
    classes = np.asarray(out["classes"])[np.asarray(out["valid"])]
    assert ((classes >= 1) & (classes < config.num_classes)).all()
    boxes = np.asarray(out["boxes"])
    assert (boxes >= 0).all() and (boxes <= CANVAS).all()
    if config.mask.enabled:
        assert out["masks"].shape == (BATCH, k, 2 * config.mask.crop_size, 2 * config.mask.crop_size)
    # Same values again: no recompilation.
    detect(variables, make_batch(seed=5, with_masks=config.mask.enabled))
    assert detect._cache_size() == 1


def test_original_coordinates_invert_the_letterbox():
    info = jnp.array([[[480, 640], [128, 128], [0.2, 0.2], [0, 0]]], jnp.float32)
    canvas = jnp.array([[[10.0, 20.0, 50.0, 100.0]]])
    np.testing.assert_allclose(to_original_boxes(canvas, info), [[[50, 100, 250, 500]]])


def _ground_truth_dict(batch):
    gt = {
        "images": [{"id": b, "height": CANVAS, "width": CANVAS} for b in range(BATCH)],
        "annotations": [],
        "categories": [{"id": c, "name": str(c)} for c in range(1, 4)],
    }
    for b in range(BATCH):
        for n in np.nonzero(batch["valid"][b])[0]:
            y0, x0, y1, x1 = (float(v) for v in batch["boxes"][b, n])
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": b,
                    "iscrowd": 0,
                    "category_id": int(batch["classes"][b, n]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                }
            )
    return gt


@pytest.mark.slow
def test_faster_rcnn_overfits_a_fixed_batch_and_detects_its_objects():
    """200 steps on one batch of generated shapes: the total loss falls below 30% of its start
    and the detector then finds those objects (AP50 > 0.9, pycocotools)."""
    from frozen_det.evaluation.coco import CocoEvaluator

    config, model, variables, batch = build()
    mask = partition.trainable_mask(variables["params"], frozen=[])
    optimizer = optax.chain(
        optax.clip_by_global_norm(10.0), optax.sgd(optax.warmup_cosine_decay_schedule(0.0, 0.02, 20, 200), momentum=0.9)
    )
    state = create_train_state(variables, mask, optimizer)
    step = jax.jit(make_train_step(loss_fn(model), optimizer))
    totals = []
    for i in range(200):
        state, metrics = step(state, batch, jax.random.key(i))
        totals.append(float(metrics["total"]))
        for k in ("rpn_score", "rpn_box", "frcnn_class", "frcnn_box"):
            assert np.isfinite(float(metrics[k]))
    assert step._cache_size() == 1
    assert np.mean(totals[-10:]) < 0.3 * totals[0]

    out = jax.jit(lambda v, b: model.apply(v, b, train=False))(
        {"params": state.all_params(), "batch_stats": state.batch_stats}, batch
    )
    evaluator = CocoEvaluator(_ground_truth_dict(batch), [0, 1, 2, 3])
    evaluator.add(np.arange(BATCH), out["original_boxes"], out["scores"], out["classes"], out["valid"])
    assert evaluator.evaluate()["AP50"] > 0.9


@pytest.mark.slow
def test_frozen_detector_train_step_has_no_backbone_backward_pass():
    """XLA FLOPs: frozen train step = backbone forward + the heads' own train step (within 5%);
    fine-tuning costs clearly more."""
    from frozen_det import config_defaults
    from frozen_det.resources import freeze_savings

    def config(strategy):
        c = config_defaults.ConfigDict()
        c.model = tiny_two_stage_model(num_classes=4)
        config_defaults.apply_strategy(c.model, strategy, "")
        c.data = config_defaults.ConfigDict(dict(canvas=CANVAS, max_instances=MAX_GT))
        c.train = config_defaults.ConfigDict(dict(batch_size=BATCH))
        return c

    frozen = freeze_savings(config("frozen"))
    expected = frozen["backbone_train_mode_forward_gflops"] + frozen["head_train_step_gflops"]
    assert abs(frozen["train_step_gflops"] - expected) <= 0.05 * expected, frozen
    finetune = freeze_savings(config("finetune"))
    assert finetune["train_step_gflops"] > frozen["train_step_gflops"] + frozen["backbone_train_mode_forward_gflops"]


@pytest.mark.slow
def test_fast_conv_impl_gives_the_same_losses_and_gradients():
    """model.conv_impl="fast" puts fast_conv.Conv in the neck and every head (RPN, box, mask):
    the same parameters and losses, and gradients equal up to float summation order."""
    config, model, variables, batch = build(mask=True)
    fast_config = config.copy_and_resolve_references()
    fast_config.conv_impl = "fast"
    fast_model = TwoStageDetector(ml_collections.FrozenConfigDict(fast_config))
    params, stats = variables["params"], variables["batch_stats"]
    args = (stats, batch, jax.random.key(4))

    def jaxpr(m):
        return str(jax.make_jaxpr(lambda p: loss_fn(m)(p, *args)[0])(params))

    backbone_convs = str(
        jax.make_jaxpr(
            lambda p: model.apply(
                {"params": p, "batch_stats": stats},
                batch["image"],
                train=False,
                method=lambda mdl, x, train: mdl.backbone(x, train=train),
            )
        )(params)
    ).count("conv_general_dilated")
    # every convolution but the backbone's (its own backbone.conv_impl, "xla" here) is fast_conv's
    assert (
        jaxpr(fast_model).count("custom_vjp_call") == jaxpr(model).count("conv_general_dilated") - backbone_convs - 1
    )  # the mask head's deconvolution stays flax's ConvTranspose
    grads = {}
    for name, m in (("xla", model), ("fast", fast_model)):
        (total, (terms, _)), grads[name] = jax.jit(jax.value_and_grad(loss_fn(m), has_aux=True))(params, *args)
        grads[name + "_terms"] = jax.tree.map(float, terms)
    for k in ("rpn_score", "rpn_box", "frcnn_class", "frcnn_box", "mask", "total"):
        np.testing.assert_allclose(grads["fast_terms"][k], grads["xla_terms"][k], rtol=1e-5, err_msg=k)
    for path, want in jax.tree_util.tree_leaves_with_path(grads["xla"]):
        got = dict(jax.tree_util.tree_leaves_with_path(grads["fast"]))[path]
        scale = float(jnp.max(jnp.abs(want))) + 1e-6
        np.testing.assert_allclose(
            np.asarray(got) / scale, np.asarray(want) / scale, atol=1e-4, err_msg=jax.tree_util.keystr(path)
        )
    bad_config = config.copy_and_resolve_references()
    bad_config.conv_impl = "cudnn"
    with pytest.raises(ValueError, match="model.conv_impl='cudnn'"):
        jax.eval_shape(
            lambda p: loss_fn(TwoStageDetector(ml_collections.FrozenConfigDict(bad_config)))(p, *args), params
        )
