"""Per-class statistics of a training split: instance and image counts, the LVIS frequency
groups, and the repeat factors of repeat-factor sampling.

Everything is computed from ``source.record_class_counts(split)`` (one pass over the
annotations, no image decoding), so the same numbers drive the sampler, the class-balanced
losses, the LVIS r/c/f groups of sources that do not ship them, and the stratified analysis.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# LVIS v1 (Gupta et al. 2019): a category is rare in 1-10 training images, common in 11-100,
# frequent in more.
LVIS_RARE_MAX_IMAGES = 10
LVIS_COMMON_MAX_IMAGES = 100


@dataclasses.dataclass(frozen=True)
class ClassStatistics:
    """Counts indexed by contiguous class id (index 0 = background, always 0)."""

    instance_counts: np.ndarray  # int64 [C + 1]: non-crowd instances per class
    image_counts: np.ndarray  # int64 [C + 1]: images containing the class
    num_images: int

    @property
    def num_classes(self) -> int:
        return len(self.image_counts) - 1

    def frequency_groups(self) -> list:
        """LVIS r/c/f per class id ("" for background), from the image counts."""
        return [""] + [frequency_group(n) for n in self.image_counts[1:]]


def uniform_statistics(num_classes: int) -> ClassStatistics:
    """Every class once in one image each: a stand-in where only shapes matter (FLOPs and
    memory of a loss that reads class counts)."""
    ones = np.ones(num_classes + 1, np.int64)
    ones[0] = 0
    return ClassStatistics(ones, ones.copy(), num_classes)


def frequency_group(num_images: int) -> str:
    if num_images <= LVIS_RARE_MAX_IMAGES:
        return "r"
    return "c" if num_images <= LVIS_COMMON_MAX_IMAGES else "f"


def class_statistics(record_class_counts: list, num_classes: int) -> ClassStatistics:
    """From per-record ``{class id: instances}`` dicts (``Source.record_class_counts``)."""
    instances = np.zeros(num_classes + 1, np.int64)
    images = np.zeros(num_classes + 1, np.int64)
    for counts in record_class_counts:
        for c, n in counts.items():
            if not 1 <= c <= num_classes:
                raise ValueError(f"class id {c} outside 1..{num_classes}")
            instances[c] += n
            images[c] += 1
    return ClassStatistics(instances, images, len(record_class_counts))


def source_statistics(source, split: str) -> ClassStatistics:
    return class_statistics(source.record_class_counts(split), source.info.num_classes)


def repeat_factors(
    record_class_counts: list, stats: ClassStatistics, threshold: float, power: float = 0.5
) -> np.ndarray:
    """Per-record repeat factor of repeat-factor sampling (Gupta et al. 2019, LVIS sec. 4.1):
    class c has r_c = max(1, (t / f_c) ** power) with f_c the fraction of training images that
    contain c; an image repeats max over its classes of r_c (1 for images without objects).
    ``power`` 0.5 is LVIS's rule; 1.0 approaches class-balanced image sampling."""
    if threshold <= 0:
        raise ValueError(f"config.data.repeat_threshold={threshold}: must be positive")
    freq = stats.image_counts / max(stats.num_images, 1)
    with np.errstate(divide="ignore"):
        per_class = np.maximum(1.0, np.where(freq > 0, (threshold / np.maximum(freq, 1e-12)) ** power, 1.0))
    out = np.ones(len(record_class_counts), np.float64)
    for i, counts in enumerate(record_class_counts):
        if counts:
            out[i] = max(per_class[c] for c in counts)
    return out


def epoch_repeats(factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stochastic rounding of the repeat factors for one epoch: record i appears
    floor(r_i) + Bernoulli(frac(r_i)) times, so its expected count is exactly r_i."""
    whole = np.floor(factors)
    return (whole + (rng.random(len(factors)) < factors - whole)).astype(np.int64)
