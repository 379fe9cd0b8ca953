"""Detection losses with the reference's normalisations (docs/reference.md §2.12), and
RetinaNet's focal and box losses (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

Huber here is Keras' form, 0.5 x^2 for |x| <= delta else delta (|x| - 0.5 delta), which is
`optax.huber_loss` (not PyTorch's smooth-L1 with beta, which divides by beta).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax


def rpn_score_loss(logits: Mapping[int, jax.Array], labels: Mapping[int, jax.Array], normalizer: float) -> jax.Array:
    """Sigmoid BCE summed over sampled anchors (labels 1 / 0; -1 = not sampled), each level
    divided by `normalizer`, summed over levels. The reference's task passes B * 512 (the
    number of sampled ROIs, not anchors) as the normaliser: a quirk kept for parity."""
    total = 0.0
    for level in logits:
        target = labels[level]
        weight = (target >= 0).astype(jnp.float32)
        bce = optax.sigmoid_binary_cross_entropy(logits[level], jnp.maximum(target, 0).astype(jnp.float32))
        total = total + jnp.sum(bce * weight) / normalizer
    return total


def rpn_box_loss(
    deltas: Mapping[int, jax.Array], targets: Mapping[int, jax.Array], delta: float = 1.0 / 9
) -> jax.Array:
    """Huber(1/9) over coordinates with non-zero targets (all matched anchors, not only the
    sampled ones), each level normalised by its number of such coordinates + 0.01, summed."""
    total = 0.0
    for level in deltas:
        mask = (targets[level] != 0).astype(jnp.float32)
        loss = optax.huber_loss(deltas[level], targets[level], delta=delta) * mask
        total = total + jnp.sum(loss) / (jnp.sum(mask) + 0.01)
    return total


def frcnn_class_loss(logits: jax.Array, classes: jax.Array, class_weights: jax.Array | None = None) -> jax.Array:
    """Softmax cross-entropy averaged over all sampled ROIs of the batch. `class_weights` [C + 1]:
    each ROI's term is scaled by the weight of its target class (class-balanced loss)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, classes)
    if class_weights is not None:
        ce = ce * class_weights[classes]
    return jnp.mean(ce)


def sigmoid_class_loss(
    logits: jax.Array, classes: jax.Array, class_weights: jax.Array | None = None, class_mask: jax.Array | None = None
) -> jax.Array:
    """Per-class sigmoid BCE on the foreground logits (the background logit, index 0, is unused;
    a background ROI is negative for every class), summed over classes, averaged over ROIs.
    `class_mask` [C + 1] bool: only these classes' terms count (the federated loss)."""
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(classes, num_classes)[..., 1:]
    bce = optax.sigmoid_binary_cross_entropy(logits[..., 1:].astype(jnp.float32), targets)
    if class_mask is not None:
        bce = bce * class_mask[1:].astype(bce.dtype)
    per_roi = jnp.sum(bce, axis=-1)
    if class_weights is not None:
        per_roi = per_roi * class_weights[classes]
    return jnp.mean(per_roi)


def federated_class_mask(
    key: jax.Array, classes: jax.Array, sampling_weights: jax.Array, num_sampled: int
) -> jax.Array:
    """The class subset S of the federated loss (Zhou et al. 2021, "Probabilistic two-stage
    detection", sec. 4): every class that is a target of some ROI in the batch, plus classes
    drawn without replacement with probability proportional to `sampling_weights` [C + 1]
    (frequency^0.5 there) until |S| = `num_sampled` (when fewer classes are present). Static
    shapes: a Gumbel top-k in which present classes rank first. Returns bool [C + 1]
    (background never in S)."""
    num_classes = sampling_weights.shape[0]
    present = jnp.zeros(num_classes, bool).at[classes.reshape(-1)].set(True).at[0].set(False)
    gumbel = jax.random.gumbel(key, (num_classes,))
    score = jnp.where(sampling_weights > 0, jnp.log(jnp.maximum(sampling_weights, 1e-30)) + gumbel, -jnp.inf)
    score = jnp.where(present, jnp.inf, score).at[0].set(-jnp.inf)
    k = min(num_sampled, num_classes - 1)
    threshold = jax.lax.top_k(score, k)[0][-1]
    return present | ((score >= threshold) & jnp.isfinite(score))


def class_balance_weights(instance_counts, method: str, beta: float = 0.999):
    """Per-class loss weights [C + 1] (numpy) from training instance counts [C + 1]:
    "effective_number" (Cui et al. 2019): (1 - beta) / (1 - beta^n_c); "inverse_frequency": 1 / n_c;
    "inverse_sqrt_frequency": 1 / sqrt(n_c). Normalised to mean 1 over the foreground classes
    with instances; classes without instances get the largest weight; background weight 1."""
    n = np.asarray(instance_counts, np.float64)[1:]
    seen = n > 0
    if not seen.any():
        raise ValueError("class-balanced weights need training instance counts; all are zero")
    if method == "effective_number":
        if not 0 < beta < 1:
            raise ValueError(f"class_balance_beta={beta}: must be in (0, 1)")
        raw = np.where(seen, (1 - beta) / (1 - np.power(beta, np.maximum(n, 1))), 0.0)
    elif method == "inverse_frequency":
        raw = np.where(seen, 1.0 / np.maximum(n, 1), 0.0)
    elif method == "inverse_sqrt_frequency":
        raw = np.where(seen, 1.0 / np.sqrt(np.maximum(n, 1)), 0.0)
    else:
        raise ValueError(
            f"class weighting {method!r}: 'effective_number', 'inverse_frequency' or 'inverse_sqrt_frequency'"
        )
    raw = raw / raw[seen].mean()
    raw = np.where(seen, raw, raw[seen].max())
    return np.concatenate([[1.0], raw]).astype(np.float32)


def frcnn_box_loss(deltas: jax.Array, targets: jax.Array, foreground: jax.Array, delta: float = 1.0) -> jax.Array:
    """Huber(1.0) on the foreground ROIs' class deltas, summed / (4 * #foreground + 0.01)."""
    mask = jnp.broadcast_to(foreground[..., None], targets.shape).astype(jnp.float32)
    loss = optax.huber_loss(deltas, targets, delta=delta) * mask
    return jnp.sum(loss) / (jnp.sum(mask) + 0.01)


def mask_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """Sigmoid BCE with (soft) targets over the pixels of the valid mask samples, normalised
    by their pixel count + 0.01. logits/targets [B, N, S, S], weights [B, N]."""
    pixel_weights = jnp.broadcast_to(weights[..., None, None], logits.shape).astype(jnp.float32)
    bce = optax.sigmoid_binary_cross_entropy(logits, targets.astype(jnp.float32))
    return jnp.sum(bce * pixel_weights) / (jnp.sum(pixel_weights) + 0.01)


def sigmoid_focal_loss(logits: jax.Array, targets: jax.Array, alpha: float = 0.25, gamma: float = 2.0) -> jax.Array:
    """Elementwise focal loss (Lin et al. 2017, eq. 5 with alpha-balancing): BCE scaled by
    (1 - p_t)^gamma and by alpha for positives, 1 - alpha for negatives (alpha < 0: no
    balancing). The same function as torchvision.ops.sigmoid_focal_loss with reduction "none"."""
    logits = logits.astype(jnp.float32)
    targets = targets.astype(jnp.float32)
    p = jax.nn.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = optax.sigmoid_binary_cross_entropy(logits, targets) * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def focal_class_loss(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    normalizer: jax.Array,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> jax.Array:
    """RetinaNet's classification loss: the focal loss of every class of every anchor with weight
    1 (positive and negative anchors; 0: ignored), summed and divided by `normalizer` (the number
    of positive anchors, at least 1; Lin et al. 2017 sec. 3.3). logits / targets [..., A, K],
    weights [..., A]."""
    loss = sigmoid_focal_loss(logits, targets, alpha, gamma) * weights[..., None].astype(jnp.float32)
    return jnp.sum(loss) / normalizer


def dense_box_loss(
    deltas: jax.Array, targets: jax.Array, positive: jax.Array, normalizer: jax.Array, delta: float = 0.1
) -> jax.Array:
    """RetinaNet's box loss as TF Model Garden's (tensorflow/models official/vision/tasks/retinanet.py,
    `build_losses`): Keras Huber(delta) averaged over the 4 coordinates, summed over the positive
    anchors, divided by `normalizer`. deltas / targets [..., A, 4], positive [..., A]."""
    loss = jnp.mean(optax.huber_loss(deltas.astype(jnp.float32), targets, delta=delta), axis=-1)
    return jnp.sum(loss * positive.astype(jnp.float32)) / normalizer
