"""Class statistics and repeat-factor sampling (LVIS sec. 4.1): the factors follow the formula,
each image's frequency over many epochs matches its factor within sampling error, shards stay
disjoint, and streaming (TFDS) and random-access (folder) sources read what the epoch asks."""

import collections

import ml_collections
import numpy as np
import pytest
from helpers import synthetic_config

from frozen_det.data import detection
from frozen_det.data.class_stats import class_statistics, epoch_repeats, frequency_group, repeat_factors


def test_statistics_and_factors_follow_the_formula():
    # 10 images: class 1 in all, class 2 in 2, class 3 in 1 (with 3 instances), one empty image.
    records = [{1: 2}] * 7 + [{1: 1, 2: 1}, {1: 1, 2: 1, 3: 3}, {}]
    stats = class_statistics(records, 4)
    np.testing.assert_array_equal(stats.image_counts, [0, 9, 2, 1, 0])
    np.testing.assert_array_equal(stats.instance_counts, [0, 16, 2, 3, 0])
    assert stats.frequency_groups() == ["", "r", "r", "r", "r"]
    assert [frequency_group(n) for n in (1, 10, 11, 100, 101)] == ["r", "r", "c", "c", "f"]
    t = 0.5
    f = np.array([0, 0.9, 0.2, 0.1])
    r_class = np.maximum(1, np.sqrt(t / np.maximum(f, 1e-9)))
    expected = [r_class[1]] * 7 + [r_class[2], max(r_class[1:4]), 1.0]
    np.testing.assert_allclose(repeat_factors(records, stats, t), expected)
    np.testing.assert_allclose(repeat_factors(records, stats, t, power=1.0)[-2], t / 0.1)
    with pytest.raises(ValueError, match="repeat_threshold"):
        repeat_factors(records, stats, 0.0)


def test_each_image_is_drawn_as_often_as_its_repeat_factor():
    factors = np.array([1.0, 1.3, 2.5, 4.0, 1.05])
    rng = np.random.default_rng(0)
    draws = np.stack([epoch_repeats(factors, rng) for _ in range(4000)])
    # floor or ceil only, and the mean matches within 5 standard errors.
    assert np.all((draws == np.floor(factors)) | (draws == np.ceil(factors)))
    stderr = np.sqrt((factors - np.floor(factors)) * (np.ceil(factors) - factors) / len(draws)) + 1e-9
    assert np.all(np.abs(draws.mean(0) - factors) <= 5 * stderr + 1e-12)


def test_random_access_source_over_many_epochs_and_shards(voc_folder):
    cfg = ml_collections.ConfigDict(
        dict(
            source="voc_folder",
            path=voc_folder,
            train_split="trainval",
            eval_split="test",
            canvas=64,
            batch_size=2,
            max_instances=60,
            num_parallel_calls=1,
            sampling="repeat_factor",
            repeat_threshold=1.5,
            repeat_power=1.0,
        )
    )
    shards = [detection.build_train_pipeline(cfg, process_index=p, process_count=2) for p in range(2)]
    factors = shards[0]._repeat_factors
    n = shards[0].source.num_records("trainval")
    assert len(factors) == n and len(np.unique(factors)) > 1 and (factors % 1 > 0).any()
    epochs = 100
    seen = np.zeros(n)
    for epoch in range(epochs):
        orders = []
        for pipe in shards:
            pipe._records(epoch, 0)  # builds the epoch's shuffled order without decoding
            orders.append(pipe._order)
        both = collections.Counter(np.concatenate(orders).tolist())
        repeats = shards[0]._epoch_repeats(epoch)
        assert both == {i: int(k) for i, k in enumerate(repeats) if k}  # shards partition the epoch
        seen += repeats
    stderr = np.sqrt((factors - np.floor(factors)) * (np.ceil(factors) - factors) / epochs)
    assert np.all(np.abs(seen / epochs - factors) <= 5 * stderr + 1e-9)


def test_streaming_source_reads_each_record_its_epoch_repeats(synthetic_dir):
    cfg = synthetic_config(
        synthetic_dir, batch_size=1, with_masks=False, sampling="repeat_factor", repeat_threshold=0.9, repeat_power=1.0
    )
    pipe = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
    repeats = pipe._epoch_repeats(0)
    assert repeats.sum() > len(repeats)  # some images repeat
    ids = [int(next(pipe)["image_id"][0]) for _ in range(int(repeats.sum()))]
    src = pipe.source  # record index -> image id, in the stored order the stream reads
    record_ids = [int(r["image_id"]) for r in src._as_dataset("train").map(src._record).as_numpy_iterator()]
    assert collections.Counter(ids) == {record_ids[i]: int(k) for i, k in enumerate(repeats) if k}
    # resuming mid-epoch continues the same sequence
    again = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
    first = [int(next(again)["image_id"][0]) for _ in range(5)]
    state = again.state()
    resumed = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
    resumed.restore(state)
    assert first == ids[:5] and [int(next(resumed)["image_id"][0]) for _ in range(5)] == ids[5:10]
