"""RoIAlign and crop_and_resize against torchvision, TensorFlow and a loop re-implementation
of the reference's multilevel_crop_and_resize (docs/reference.md §2.9)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ops_test_utils import SEEDS, over_seeds, random_boxes, yxyx_to_xyxy

from frozen_det.ops.roi_align import assign_fpn_levels, crop_and_resize, multilevel_roi_align, roi_align

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
tf = pytest.importorskip("tensorflow")
tf.config.set_visible_devices([], "GPU")

CANVAS = 256
LEVELS = (2, 3, 4, 5)


def _roi_boxes(rng, n, lead=()):
    """Boxes of widely varying size (so every level is used), some degenerate, some sticking
    out of the canvas on either side."""
    boxes = random_boxes(rng, n, canvas=1.0, max_size=1.0, degenerate_fraction=0.1, lead=lead)
    scale = np.exp(rng.uniform(math.log(4), math.log(600), tuple(lead) + (n, 1)))
    shift = rng.uniform(-30, CANVAS - 20, tuple(lead) + (n, 2))
    return (boxes * scale + np.concatenate([shift, shift], -1)).astype(np.float32)


def _torchvision_rois(boxes):
    """[B, N, 4] yxyx -> [B*N, 5] (batch index, x1, y1, x2, y2)."""
    b, n = boxes.shape[:2]
    index = np.repeat(np.arange(b, dtype=np.float32), n)[:, None]
    return torch.tensor(np.concatenate([index, yxyx_to_xyxy(boxes).reshape(-1, 4)], 1))


# Features in [0, 1]: a sample position one float32 ulp off (the references order or fuse their
# multiply-adds differently) then moves the output by at most ulp(position) * 1 < 1e-5.
@pytest.fixture(scope="module")
def pyramid():
    rng = np.random.default_rng(SEEDS[-1])
    return {l: rng.uniform(size=(2, CANVAS >> l, CANVAS >> l, 3)).astype(np.float32) for l in LEVELS}


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_single_level_matches_torchvision(aligned, sampling_ratio):
    rng = np.random.default_rng(SEEDS[-1])
    feature = rng.uniform(size=(2, 13, 17, 4)).astype(np.float32)
    boxes = random_boxes(rng, 25, canvas=80.0, max_size=40.0, degenerate_fraction=0.2, lead=(2,))
    boxes[:, :3] -= 15.0  # partly outside the map
    got = jax.jit(roi_align, static_argnums=(2, 3, 4, 5, 6))(
        feature, boxes, 5, 0.25, sampling_ratio, aligned, "torchvision"
    )
    ref = torchvision.ops.roi_align(
        torch.tensor(feature).permute(0, 3, 1, 2), _torchvision_rois(boxes), 5, 0.25, sampling_ratio, aligned
    )
    ref = ref.permute(0, 2, 3, 1).numpy().reshape(2, 25, 5, 5, 4)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=f"seed {SEEDS[-1]}")


def test_gradient_matches_torchvision():
    rng = np.random.default_rng(SEEDS[-1])
    feature = rng.normal(size=(1, 12, 12, 3)).astype(np.float32)
    boxes = random_boxes(rng, 6, canvas=48.0, max_size=30.0, degenerate_fraction=0.0, lead=(1,))
    cotangent = rng.normal(size=(1, 6, 4, 4, 3)).astype(np.float32)
    loss = lambda f: jnp.sum(roi_align(f, boxes, 4, 0.25, 2, True, "torchvision") * cotangent)
    got = jax.jit(jax.grad(loss))(feature)
    f_t = torch.tensor(feature).permute(0, 3, 1, 2).requires_grad_()
    out = torchvision.ops.roi_align(f_t, _torchvision_rois(boxes), 4, 0.25, 2, True)
    (out * torch.tensor(cotangent).reshape(6, 4, 4, 3).permute(0, 3, 1, 2)).sum().backward()
    np.testing.assert_allclose(got, f_t.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)


def test_level_assignment_rule():
    sides = np.array([1, 100, 223, 224, 447, 448, 895, 896, 2000, 0], np.float32)
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], -1)
    np.testing.assert_array_equal(assign_fpn_levels(boxes, 2, 6), [2, 2, 3, 4, 4, 5, 5, 6, 6, 2])
    np.testing.assert_array_equal(assign_fpn_levels(boxes, 3, 7), [3, 3, 3, 4, 4, 5, 5, 6, 7, 3])


def _reference_multilevel_crop(features, boxes, output_size):
    """Per-box loops over docs/reference.md §2.9: one sample per bin at offset 0.5, indices clamped to
    [0, size-1], weights from the unclamped position."""
    out = np.zeros((len(boxes), output_size, output_size, features[LEVELS[0]].shape[-1]), np.float32)
    for n, (y1, x1, y2, x2) in enumerate(boxes.astype(np.float64)):
        h, w = y2 - y1, x2 - x1
        level = LEVELS[0] if h * w <= 0 else math.floor(math.log(math.sqrt(h * w) / 224) / math.log(2)) + 4
        level = min(max(level, LEVELS[0]), LEVELS[-1])
        f = features[level]
        size_y, size_x = f.shape[:2]
        s = 2.0**level
        for i in range(output_size):
            y = y1 / s + (i + 0.5) * (h / s) / output_size
            y0 = min(max(math.floor(y), 0), size_y - 1)
            y1i = min(y0 + 1, size_y - 1)
            for j in range(output_size):
                x = x1 / s + (j + 0.5) * (w / s) / output_size
                x0 = min(max(math.floor(x), 0), size_x - 1)
                x1i = min(x0 + 1, size_x - 1)
                ly, lx = y - y0, x - x0
                out[n, i, j] = (
                    (1 - ly) * (1 - lx) * f[y0, x0]
                    + (1 - ly) * lx * f[y0, x1i]
                    + ly * (1 - lx) * f[y1i, x0]
                    + ly * lx * f[y1i, x1i]
                )
    return out


@over_seeds
def test_multilevel_matches_reference_loops(pyramid, seed):
    rng = np.random.default_rng(seed)
    boxes = _roi_boxes(rng, 24, lead=(2,))
    got = np.asarray(_multilevel_tfmg(pyramid, boxes))
    assert got.shape == (2, 24, 7, 7, 3)
    for b in range(2):
        ref = _reference_multilevel_crop({l: f[b] for l, f in pyramid.items()}, boxes[b], 7)
        np.testing.assert_allclose(got[b], ref, rtol=1e-4, atol=1e-4, err_msg=f"seed {seed}")
    levels = np.asarray(assign_fpn_levels(boxes, 2, 5))
    assert len(np.unique(levels)) >= 3  # the test exercises several levels


_multilevel_tfmg = jax.jit(lambda f, b: multilevel_roi_align(f, b, 7))


def test_multilevel_torchvision_convention_per_level(pyramid):
    """aligned=True, sampling_ratio=2: each box equals torchvision's roi_align on its level."""
    rng = np.random.default_rng(SEEDS[-1])
    boxes = _roi_boxes(rng, 30, lead=(2,))
    features = [pyramid[l] for l in LEVELS]  # list form
    got = np.asarray(
        jax.jit(
            lambda f, b: multilevel_roi_align(
                f, b, 7, min_level=2, sampling_ratio=2, aligned=True, convention="torchvision"
            )
        )(features, boxes)
    )
    levels = np.asarray(assign_fpn_levels(boxes, 2, 5))
    rois = _torchvision_rois(boxes)
    for l in LEVELS:
        ref = (
            torchvision.ops.roi_align(torch.tensor(pyramid[l]).permute(0, 3, 1, 2), rois, 7, 2.0**-l, 2, True)
            .permute(0, 2, 3, 1)
            .numpy()
            .reshape(2, 30, 7, 7, 3)
        )
        mask = levels == l
        np.testing.assert_allclose(got[mask], ref[mask], rtol=1e-5, atol=1e-5)


def test_many_boxes_are_cropped_in_chunks_with_the_same_values_and_gradients(pyramid):
    """More boxes than BOXES_PER_CHUNK (and not a multiple of it) go through the chunked loop:
    outputs and feature gradients still equal torchvision's roi_align on each box's level."""
    from frozen_det.ops import roi_align as roi_align_module

    n = roi_align_module.BOXES_PER_CHUNK * 2 + 37
    rng = np.random.default_rng(SEEDS[0])
    boxes = _roi_boxes(rng, n, lead=(2,))
    cotangent = rng.normal(size=(2, n, 7, 7, 3)).astype(np.float32)
    features = [pyramid[l] for l in LEVELS]

    def crops(f):
        return multilevel_roi_align(f, boxes, 7, min_level=2, sampling_ratio=2, convention="torchvision")

    assert "scan" in str(jax.make_jaxpr(crops)(features))  # the chunked path
    got, vjp = jax.vjp(jax.jit(crops), features)
    got_grads = vjp(jnp.asarray(cotangent))[0]
    levels = np.asarray(assign_fpn_levels(boxes, 2, 5))
    rois = _torchvision_rois(boxes)
    for i, l in enumerate(LEVELS):
        mask = torch.tensor((levels == l).reshape(-1, 1, 1, 1), dtype=torch.float32)
        f_t = torch.tensor(pyramid[l]).permute(0, 3, 1, 2).requires_grad_()
        ref = torchvision.ops.roi_align(f_t, rois, 7, 2.0**-l, 2, False)
        (ref * mask * torch.tensor(cotangent).reshape(-1, 7, 7, 3).permute(0, 3, 1, 2)).sum().backward()
        ref = ref.detach().permute(0, 2, 3, 1).numpy().reshape(2, n, 7, 7, 3)
        np.testing.assert_allclose(np.asarray(got)[levels == l], ref[levels == l], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_grads[i], f_t.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-4)


def test_unbatched_input_and_bfloat16(pyramid):
    rng = np.random.default_rng(SEEDS[-1])
    boxes = _roi_boxes(rng, 5)
    single = {l: f[0] for l, f in pyramid.items()}
    got = _multilevel_tfmg(single, boxes)
    np.testing.assert_allclose(got, _reference_multilevel_crop(single, boxes, 7), rtol=1e-4, atol=1e-4)
    half = _multilevel_tfmg({l: f.astype(jnp.bfloat16) for l, f in single.items()}, boxes)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(half.astype(np.float32), got, atol=0.1)


@pytest.mark.parametrize("crop_size", [(6, 4), (1, 1)])
def test_crop_and_resize_matches_tf(crop_size):
    rng = np.random.default_rng(SEEDS[-1])
    image = rng.normal(size=(3, 11, 9, 2)).astype(np.float32)
    boxes = rng.uniform(-0.3, 1.3, (20, 4)).astype(np.float32)  # includes flipped boxes
    index = rng.integers(0, 3, 20).astype(np.int32)
    got = jax.jit(crop_and_resize, static_argnums=(3, 4))(image, boxes, index, crop_size, 0.5)
    ref = tf.image.crop_and_resize(image, boxes, index, crop_size, extrapolation_value=0.5).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=f"seed {SEEDS[-1]}")
