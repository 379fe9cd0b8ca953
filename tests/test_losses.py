"""Loss normalisations against hand-written numpy versions of docs/reference.md §2.12."""

import jax.numpy as jnp
import numpy as np
import pytest

from frozen_det import losses


def _huber(x, delta):
    a = np.abs(x)
    return np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))


def _bce(logit, target):
    p = 1 / (1 + np.exp(-logit))
    return -(target * np.log(p) + (1 - target) * np.log(1 - p))


def test_huber_is_the_keras_form_not_smooth_l1():
    x = np.array([[[0.05, 0.5, 2.0, -0.03]]], np.float32)
    got = losses.frcnn_box_loss(jnp.asarray(x), jnp.zeros((1, 1, 4)), jnp.ones((1, 1), bool), delta=1 / 9)
    expected = _huber(x, 1 / 9).sum() / (4 + 0.01)  # smooth-L1 (beta=1/9) would be 9x larger
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_rpn_score_loss_uses_sampled_anchors_and_the_roi_normaliser():
    rng = np.random.default_rng(0)
    logits = {2: rng.normal(size=(2, 4, 4, 3)).astype(np.float32), 3: rng.normal(size=(2, 2, 2, 3)).astype(np.float32)}
    labels = {l: rng.integers(-1, 2, size=v.shape) for l, v in logits.items()}
    normalizer = 2 * 512
    expected = sum(np.sum(_bce(logits[l], labels[l].clip(0)) * (labels[l] >= 0)) / normalizer for l in logits)
    got = losses.rpn_score_loss(
        {l: jnp.asarray(v) for l, v in logits.items()}, {l: jnp.asarray(v) for l, v in labels.items()}, normalizer
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_rpn_box_loss_normalises_each_level_by_its_nonzero_coordinates():
    rng = np.random.default_rng(1)
    deltas, targets = {}, {}
    for level, hw in ((2, 4), (3, 2)):
        deltas[level] = rng.normal(size=(2, hw, hw, 12)).astype(np.float32)
        t = rng.normal(size=(2, hw, hw, 12)).astype(np.float32)
        t[rng.random(t.shape) < 0.7] = 0.0
        targets[level] = t
    expected = sum(
        np.sum(_huber(deltas[l] - targets[l], 1 / 9) * (targets[l] != 0)) / (np.sum(targets[l] != 0) + 0.01)
        for l in deltas
    )
    got = losses.rpn_box_loss(
        {l: jnp.asarray(v) for l, v in deltas.items()}, {l: jnp.asarray(v) for l, v in targets.items()}
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_frcnn_losses():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 8, 5)).astype(np.float32)
    classes = rng.integers(0, 5, size=(2, 8))
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected_ce = -np.take_along_axis(log_softmax, classes[..., None], -1).mean()
    np.testing.assert_allclose(
        losses.frcnn_class_loss(jnp.asarray(logits), jnp.asarray(classes)), expected_ce, rtol=1e-5
    )
    deltas = rng.normal(size=(2, 8, 4)).astype(np.float32)
    targets = rng.normal(size=(2, 8, 4)).astype(np.float32)
    fg = classes > 0
    expected_box = np.sum(_huber(deltas - targets, 1.0) * fg[..., None]) / (4 * fg.sum() + 0.01)
    np.testing.assert_allclose(
        losses.frcnn_box_loss(jnp.asarray(deltas), jnp.asarray(targets), jnp.asarray(fg)), expected_box, rtol=1e-5
    )


def test_mask_loss_averages_over_valid_mask_pixels_with_soft_targets():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    targets = rng.random((2, 3, 4, 4)).astype(np.float32)
    weights = np.array([[1, 0, 1], [0, 0, 1]], bool)
    expected = np.sum(_bce(logits, targets) * weights[..., None, None]) / (3 * 16 + 0.01)
    np.testing.assert_allclose(
        losses.mask_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights)), expected, rtol=1e-5
    )


# ---------------------------------------------------------------- long-tail classification losses


def _softmax_ce(logits, classes):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, classes[..., None], -1)[..., 0]


def test_weighted_softmax_ce_scales_each_roi_by_its_target_class():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 6, 5)).astype(np.float32)
    classes = rng.integers(0, 5, size=(2, 6))
    weights = np.array([1.0, 0.5, 2.0, 3.0, 0.25], np.float32)
    got = losses.frcnn_class_loss(jnp.asarray(logits), jnp.asarray(classes), jnp.asarray(weights))
    np.testing.assert_allclose(got, np.mean(_softmax_ce(logits, classes) * weights[classes]), rtol=1e-5)
    plain = losses.frcnn_class_loss(jnp.asarray(logits), jnp.asarray(classes))
    np.testing.assert_allclose(plain, np.mean(_softmax_ce(logits, classes)), rtol=1e-5)


def test_sigmoid_class_loss_ignores_the_background_logit_and_masks_classes():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 6, 5)).astype(np.float32)
    classes = rng.integers(0, 5, size=(2, 6))
    targets = np.eye(5)[classes][..., 1:]
    bce = _bce(logits[..., 1:], targets)
    got = losses.sigmoid_class_loss(jnp.asarray(logits), jnp.asarray(classes))
    np.testing.assert_allclose(got, bce.sum(-1).mean(), rtol=1e-5)
    mask = np.array([False, True, False, True, True])
    weights = np.array([1.0, 2.0, 1.0, 0.5, 1.0], np.float32)
    got = losses.sigmoid_class_loss(jnp.asarray(logits), jnp.asarray(classes), jnp.asarray(weights), jnp.asarray(mask))
    np.testing.assert_allclose(got, ((bce * mask[1:]).sum(-1) * weights[classes]).mean(), rtol=1e-5)
    # The background logit does not matter.
    shifted = logits.copy()
    shifted[..., 0] += 10
    np.testing.assert_allclose(
        losses.sigmoid_class_loss(jnp.asarray(shifted), jnp.asarray(classes)), bce.sum(-1).mean(), rtol=1e-5
    )


def test_federated_class_mask_keeps_present_classes_and_samples_by_weight():
    import jax

    classes = jnp.array([[0, 3, 3, 0], [7, 0, 0, 0]])
    weights = jnp.asarray(np.r_[0.0, np.arange(1, 10, dtype=np.float32)])  # classes 1..9
    keys = jax.random.split(jax.random.key(0), 4000)
    masks = np.asarray(jax.vmap(lambda k: losses.federated_class_mask(k, classes, weights, 3))(keys))
    assert masks[:, 3].all() and masks[:, 7].all() and not masks[:, 0].any()
    assert (masks.sum(1) == 3).all()  # |S| = 3: two present classes + one sampled
    # The one extra class is drawn with probability proportional to its weight (Gumbel top-1).
    others = [c for c in range(1, 10) if c not in (3, 7)]
    freq = masks[:, others].mean(0)
    expected = np.asarray(weights)[others] / np.asarray(weights)[others].sum()
    np.testing.assert_allclose(freq, expected, atol=0.03)
    # More present classes than the budget: exactly the present ones.
    many = losses.federated_class_mask(keys[0], jnp.array([[1, 2, 3, 4, 5]]), weights, 3)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(many)), [1, 2, 3, 4, 5])


def test_class_balance_weights():
    counts = np.array([0, 1000, 10, 1, 0])
    beta = 0.99
    w = losses.class_balance_weights(counts, "effective_number", beta)
    raw = (1 - beta) / (1 - beta ** counts[1:4].astype(float))
    raw = raw / raw.mean()
    np.testing.assert_allclose(w[1:4], raw, rtol=1e-6)
    assert w[0] == 1.0 and w[4] == pytest.approx(raw.max())  # unseen class: the largest weight
    inv = losses.class_balance_weights(counts, "inverse_frequency")
    np.testing.assert_allclose(inv[1:4], (1 / counts[1:4]) / (1 / counts[1:4]).mean(), rtol=1e-6)
    assert inv[3] > inv[2] > inv[1]
    with pytest.raises(ValueError, match="class weighting"):
        losses.class_balance_weights(counts, "focal")
