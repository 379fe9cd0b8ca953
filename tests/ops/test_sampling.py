"""Balanced sampler: counts, shortfalls, ordering and key determinism (docs/reference.md §2.5, §2.8)."""

import jax
import numpy as np
import pytest

from frozen_det.ops.sampling import batched_sample_balanced, sample_balanced

ROI = dict(num_samples=512, positive_fraction=0.25)
RPN = dict(num_samples=256, positive_fraction=0.5, fill_with_non_candidates=False)

_roi_sampler = jax.jit(lambda k, p, n: sample_balanced(k, p, n, **ROI))
_rpn_sampler = jax.jit(lambda k, p, n: sample_balanced(k, p, n, **RPN))


def _labels(num, num_pos, num_neg, rng):
    order = rng.permutation(num)
    pos = np.zeros(num, bool)
    neg = np.zeros(num, bool)
    pos[order[:num_pos]] = True
    neg[order[num_pos : num_pos + num_neg]] = True
    return pos, neg


def _check_consistent(s, pos):
    indicator = np.asarray(s.indicator)
    indices, valid = np.asarray(s.indices), np.asarray(s.valid)
    n_sampled = indicator.sum()
    np.testing.assert_array_equal(valid, indicator[indices])
    np.testing.assert_array_equal(indices[:n_sampled], np.flatnonzero(indicator))  # ascending
    assert valid[:n_sampled].all() and not valid[n_sampled:].any()
    np.testing.assert_array_equal(s.positive, valid & pos[indices])
    return indicator


@pytest.mark.parametrize("num_pos, exp_pos", [(400, 128), (30, 30), (0, 0)])
def test_roi_sampler_exact_counts(num_pos, exp_pos):
    rng = np.random.default_rng(0)
    pos, neg = _labels(1100, num_pos, 600, rng)
    s = _roi_sampler(jax.random.key(1), pos, neg)
    indicator = _check_consistent(s, pos)
    assert indicator.sum() == 512
    assert (indicator & pos).sum() == exp_pos
    assert (indicator & neg).sum() == 512 - exp_pos
    assert not (indicator & ~pos & ~neg).any()


def test_roi_sampler_tops_up_with_first_non_candidates():
    rng = np.random.default_rng(0)
    pos, neg = _labels(1100, 50, 100, rng)  # only 150 candidates for 512 samples
    s = _roi_sampler(jax.random.key(2), pos, neg)
    indicator = _check_consistent(s, pos)
    assert indicator.sum() == 512 and (indicator & pos).sum() == 50
    assert (indicator & (pos | neg)).sum() == 150  # every candidate taken
    added = np.flatnonzero(indicator & ~pos & ~neg)
    np.testing.assert_array_equal(added, np.flatnonzero(~pos & ~neg)[:362])


def test_rpn_sampler_does_not_top_up():
    rng = np.random.default_rng(0)
    pos, neg = _labels(5000, 20, 100, rng)
    s = _rpn_sampler(jax.random.key(3), pos, neg)
    indicator = _check_consistent(s, pos)
    assert indicator.sum() == 120 and (indicator & pos).sum() == 20
    pos, neg = _labels(5000, 1000, 3000, rng)
    indicator = np.asarray(_rpn_sampler(jax.random.key(3), pos, neg).indicator)
    assert (indicator & pos).sum() == 128 and (indicator & neg).sum() == 128


def test_deterministic_per_key_and_uniform():
    rng = np.random.default_rng(0)
    pos, neg = _labels(1100, 300, 700, rng)
    a = _roi_sampler(jax.random.key(7), pos, neg)
    b = _roi_sampler(jax.random.key(7), pos, neg)
    c = _roi_sampler(jax.random.key(8), pos, neg)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indicator, c.indicator)
    # Every positive has the same chance 128 / 300 of being drawn.
    keys = jax.random.split(jax.random.key(9), 200)
    freq = np.asarray(jax.vmap(lambda k: _roi_sampler(k, pos, neg).indicator)(keys)).mean(0)
    assert abs(freq[pos].mean() - 128 / 300) < 1e-6
    assert freq[pos].min() > 0.2 and freq[pos].max() < 0.7


def test_batched_sampler_matches_per_image():
    rng = np.random.default_rng(0)
    labels = [_labels(1100, n, 500, rng) for n in (10, 300)]
    pos, neg = np.stack([l[0] for l in labels]), np.stack([l[1] for l in labels])
    key = jax.random.key(4)
    batched = jax.jit(batched_sample_balanced, static_argnums=(3, 4))(key, pos, neg, 512, 0.25)
    keys = jax.random.split(key, 2)
    for i in range(2):
        single = _roi_sampler(keys[i], pos[i], neg[i])
        np.testing.assert_array_equal(batched.indices[i], single.indices)


def test_too_short_input_is_a_clear_error():
    with pytest.raises(ValueError, match="num_samples=512"):
        sample_balanced(jax.random.key(0), np.zeros(100, bool), np.ones(100, bool), 512, 0.25)
