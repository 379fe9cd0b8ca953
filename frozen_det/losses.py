"""Detection losses with the reference's normalisations (reference/tfmg.md 2.12).

Huber here is Keras' form, 0.5 x^2 for |x| <= delta else delta (|x| - 0.5 delta), which is
`optax.huber_loss` (not PyTorch's smooth-L1 with beta, which divides by beta).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import optax


def rpn_score_loss(logits: Mapping[int, jax.Array], labels: Mapping[int, jax.Array],
                   normalizer: float) -> jax.Array:
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


def rpn_box_loss(deltas: Mapping[int, jax.Array], targets: Mapping[int, jax.Array],
                 delta: float = 1.0 / 9) -> jax.Array:
    """Huber(1/9) over coordinates with non-zero targets (all matched anchors, not only the
    sampled ones), each level normalised by its number of such coordinates + 0.01, summed."""
    total = 0.0
    for level in deltas:
        mask = (targets[level] != 0).astype(jnp.float32)
        loss = optax.huber_loss(deltas[level], targets[level], delta=delta) * mask
        total = total + jnp.sum(loss) / (jnp.sum(mask) + 0.01)
    return total


def frcnn_class_loss(logits: jax.Array, classes: jax.Array) -> jax.Array:
    """Softmax cross-entropy averaged over all sampled ROIs of the batch."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, classes))


def frcnn_box_loss(deltas: jax.Array, targets: jax.Array, foreground: jax.Array,
                   delta: float = 1.0) -> jax.Array:
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
