"""Helpers shared by the tests of frozen_det.ops (random boxes, fresh seeds, trace counting)."""

import os
import secrets

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# A fresh seed per test session (override with FROZEN_DET_TEST_SEED=<int> to reproduce a
# failure); tests put it in their assertion messages. Fixed seeds run alongside it.
FRESH_SEED = int(os.environ.get("FROZEN_DET_TEST_SEED", secrets.randbits(31)))
SEEDS = (0, 1, FRESH_SEED)
# Test ids must not contain the fresh seed: pytest-xdist workers each draw their own and
# would disagree about the collected tests.
over_seeds = pytest.mark.parametrize("seed", SEEDS, ids=("seed0", "seed1", "fresh_seed"))


def is_padding(boxes):
    """The reference's padding test (docs/reference.md §7.1: ground truth padded with -1): True
    where a box's largest coordinate is negative."""
    return jnp.max(jnp.asarray(boxes), axis=-1) < 0.0


def random_boxes(rng, n, canvas=100.0, max_size=30.0, degenerate_fraction=0.1, lead=()):
    """float32 yxyx boxes ``lead + [n, 4]`` inside ``[0, canvas]``; a fraction have zero height
    or width (or both)."""
    shape = tuple(lead) + (n,)
    yx = rng.uniform(0.0, canvas - max_size, shape + (2,))
    hw = rng.uniform(1.0, max_size, shape + (2,))
    degenerate = rng.uniform(size=shape) < degenerate_fraction
    which = rng.integers(0, 3, shape)  # zero height, zero width, or a point
    hw[..., 0] = np.where(degenerate & (which != 1), 0.0, hw[..., 0])
    hw[..., 1] = np.where(degenerate & (which != 0), 0.0, hw[..., 1])
    return np.concatenate([yx, yx + hw], axis=-1).astype(np.float32)


def distinct_scores(rng, shape):
    """Scores in (0, 1) without ties, so every NMS implementation sorts them the same way."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) + 1.0) / (n + 1.0)).reshape(shape).astype(np.float32)


def yxyx_to_xyxy(boxes):
    return np.asarray(boxes)[..., [1, 0, 3, 2]]


class TraceCounter:
    """``jax.jit`` of ``fn`` that counts how often it is traced (i.e. compiled)."""

    def __init__(self, fn, **jit_kwargs):
        self.traces = 0

        def counted(*args, **kwargs):
            self.traces += 1
            return fn(*args, **kwargs)

        self.jitted = jax.jit(counted, **jit_kwargs)

    def __call__(self, *args, **kwargs):
        return self.jitted(*args, **kwargs)
