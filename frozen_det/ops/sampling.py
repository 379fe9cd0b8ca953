"""Fixed-size balanced positive/negative sampling with a ``jax.random`` key.

Matches the reference's ``BalancedPositiveNegativeSampler`` (docs/reference.md §2.5, §2.8):

* ``num_positive = min(#positives, int(positive_fraction * num_samples))`` positives drawn
  uniformly at random, then negatives drawn uniformly to fill ``num_samples``;
* with ``fill_with_non_candidates=True`` (the static sampler used for ROIs), when there are
  fewer candidates than ``num_samples``, the first non-candidates in index order are added as
  negatives beforehand, so exactly ``num_samples`` are drawn whenever the input is long enough;
* the chosen set is returned as an indicator, and as the ``top_k`` of the indicator, which
  lists sampled indices in ascending order (not positives first) followed, if fewer than
  ``num_samples`` were sampled, by unsampled indices in ascending order (``valid`` False).

Shapes: one image ``[N]``; use ``jax.vmap`` with split keys for a batch
(:func:`batched_sample_balanced` does that).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Sample(NamedTuple):
    indicator: jnp.ndarray  # [N] bool, True for sampled entries
    indices: jnp.ndarray  # [num_samples] int32, sampled indices ascending, then unsampled
    valid: jnp.ndarray  # [num_samples] bool, indicator[indices]
    positive: jnp.ndarray  # [num_samples] bool, sampled and positive


def _take_first(mask: jnp.ndarray, k) -> jnp.ndarray:
    """Keep the first ``k`` True entries of a 1-D mask."""
    return mask & (jnp.cumsum(mask.astype(jnp.int32)) <= k)


def sample_balanced(
    key: jax.Array,
    positive: jnp.ndarray,
    negative: jnp.ndarray,
    num_samples: int,
    positive_fraction: float,
    fill_with_non_candidates: bool = True,
) -> Sample:
    """Sample ``num_samples`` of N entries with at most ``positive_fraction`` positives.

    Args:
      key: PRNG key; the same key gives the same sample.
      positive: ``[N]`` bool, candidates labelled positive.
      negative: ``[N]`` bool, candidates labelled negative (entries that are neither are
        ignored, e.g. RPN anchors in the 0.3-0.7 band).
      num_samples: static sample size (256 for the RPN, 512 for ROIs).
      positive_fraction: static upper bound on the positive share (0.5 RPN, 0.25 ROIs).
      fill_with_non_candidates: the static sampler's top-up (docs/reference.md §2.8); the RPN's
        sampler (docs/reference.md §2.5) does not top up, so ignored anchors stay unsampled.
    """
    if positive.shape[-1] < num_samples:
        raise ValueError(
            f"sample_balanced: cannot draw num_samples={num_samples} from only "
            f"{positive.shape[-1]} entries; pad the candidates or lower num_samples."
        )
    positive = positive.astype(bool)
    negative = negative.astype(bool) & ~positive
    if fill_with_non_candidates:
        candidates = positive | negative
        shortfall = num_samples - jnp.sum(candidates, dtype=jnp.int32)
        negative = negative | _take_first(~candidates, shortfall)

    max_positive = int(positive_fraction * num_samples)
    num_positive = jnp.minimum(jnp.sum(positive, dtype=jnp.int32), max_positive)
    num_negative = num_samples - num_positive

    # Draw by scanning a random permutation: the first k positives / negatives met are taken.
    perm = jax.random.permutation(key, positive.shape[0])
    picked = _take_first(positive[perm], num_positive) | _take_first(negative[perm], num_negative)
    indicator = jnp.zeros_like(picked).at[perm].set(picked)

    _, indices = jax.lax.top_k(indicator.astype(jnp.int32), num_samples)
    indices = indices.astype(jnp.int32)
    valid = indicator[indices]
    return Sample(indicator, indices, valid, valid & positive[indices])


def batched_sample_balanced(
    key, positive, negative, num_samples, positive_fraction, fill_with_non_candidates=True
) -> Sample:
    """:func:`sample_balanced` over a leading batch axis ``[B, N]``, one split key per image."""
    keys = jax.random.split(key, positive.shape[0])
    return jax.vmap(lambda k, p, n: sample_balanced(k, p, n, num_samples, positive_fraction, fill_with_non_candidates))(
        keys, positive, negative
    )
