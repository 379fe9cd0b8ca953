"""PreDet as a task: the two-view pipeline is seeded and resumable and reads cached proposals as
queries; the shared loop trains the pretext model on a generated image folder (finite losses,
the pretext diagnostics evaluated); the run's checkpoint initialises a two-stage detector with
`train.init_from`, restoring exactly the shared layers bit-identically and leaving the detector's
class-specific layers fresh; every Table 1 ablation traces with its own set of losses."""

import glob
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from frozen_det import config as config_lib
from frozen_det import config_defaults as d

Q, SIZE = 4, 64


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Unlabelled images of coloured rectangles: train 6, validation 4 (one unreadable file in
    train, which the pipeline must count and skip)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("validation", 4)):
        os.makedirs(root / split / "sub")
        for i in range(n):
            image = np.full((72, 96, 3), rng.integers(0, 255, 3), np.uint8)
            for _ in range(4):
                y, x = rng.integers(0, 50), rng.integers(0, 70)
                image[y : y + rng.integers(8, 30), x : x + rng.integers(8, 30)] = rng.integers(0, 255, 3)
            Image.fromarray(image).save(root / split / ("sub" if i % 2 else "") / f"{i}.png")
    (root / "train" / "broken.jpg").write_bytes(b"not an image")
    return str(root)


def _detector():
    m = d.tiny_two_stage_model(num_classes=4)
    m.backbone.width = 0.125
    m.neck.num_filters = 16
    m.rpn.update(
        num_filters=16,
        pre_nms_top_k_train=64,
        post_nms_top_k_train=32,
        num_proposals_train=32,
        pre_nms_top_k_test=64,
        post_nms_top_k_test=32,
        num_proposals_test=32,
    )
    m.box_head.update(num_filters=16, fc_dims=32)
    return m


def _predet_config(path, **predet):
    model = d.predet_model(
        _detector(),
        num_queries=Q,
        num_negatives=16,
        crpn_dims=8,
        embedding_dims=16,
        regression_dims=8,
        crpn_batch_size_per_image=32,
        num_random_proposals=16,
        **predet,
    )
    config = d.ConfigDict(
        dict(
            model=model,
            data=dict(source="image_folder", path=path, image_size=SIZE, eval_batch_size=2, num_eval_examples=4),
            train=d.train(batch_size=2, total_steps=3, boundaries=(), base_lr=0.01, warmup_steps=0),
        )
    )
    config.train.update(log_every=1, checkpoint_every=3)
    return config_lib.complete(config)


# ---------------------------------------------------------------------------------------------- data


def test_two_view_batches_are_fixed_shape_seeded_and_resumable(image_folder):
    from frozen_det.data.two_view.pipelines import build_eval_pipeline, build_train_pipeline

    config = _predet_config(image_folder)
    kw = dict(num_queries=Q, process_index=0, process_count=1)
    train = build_train_pipeline(config, **kw)
    first = [next(train) for _ in range(2)]
    state = train.state()
    later = [next(train) for _ in range(3)]  # crosses the epoch boundary (7 files, 1 broken)
    assert first[0]["view1"].shape == (2, SIZE, SIZE, 3) and first[0]["view1"].dtype == np.float32
    assert first[0]["query_boxes1"].shape == (2, Q, 4) and first[0]["query_valid"].dtype == bool
    assert train.stats["examples_skipped"] >= 1  # broken.jpg counted, not fatal
    again = build_train_pipeline(config, **kw)
    np.testing.assert_array_equal(next(again)["view2"], first[0]["view2"])  # seeded
    again.restore(state)
    for expected in later:
        got = next(again)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
    # Queries lie inside both views.
    b = later[0]
    assert b["query_valid"].all()
    for key in ("query_boxes1", "query_boxes2"):
        boxes = b[key]
        assert (boxes[..., :2] >= -1e-3).all() and (boxes[..., 2:] <= SIZE + 1e-3).all()
        assert (boxes[..., 2:] > boxes[..., :2]).all()
    # Parallel examples (data.num_workers > 0) make the same batches as one at a time.
    inline_config = config.copy_and_resolve_references()
    inline_config.data.num_workers = 0
    inline = build_train_pipeline(inline_config, **kw)
    for expected in first:
        got = next(inline)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
    # Two processes read disjoint shards.
    shards = [
        build_train_pipeline(config, num_queries=Q, process_index=p, process_count=2, batch_size=2) for p in (0, 1)
    ]
    ids = [set(np.concatenate([next(s)["image_id"] for _ in range(2)]).tolist()) for s in shards]
    assert not ids[0] & ids[1]
    with pytest.raises(ValueError, match="saved with process_count=1"):  # another layout reads other examples
        shards[0].restore(state)
    # The held-out set: identical on every pass, padded to whole batches.
    held_out = build_eval_pipeline(config, **kw)
    passes = [list(held_out), list(held_out)]
    assert len(passes[0]) == 2 and all(b["example_valid"].all() for b in passes[0])
    np.testing.assert_array_equal(passes[0][1]["view1"], passes[1][1]["view1"])


def test_queries_from_cached_region_proposals(image_folder, tmp_path):
    from frozen_det.data.two_view.pipelines import build_train_pipeline
    from frozen_det.data.two_view.proposals import save_proposals

    # One candidate per image, a large box: every valid query is that box seen in each view.
    box = np.array([[10.0, 12.0, 60.0, 80.0]], np.float32)
    folder = os.path.join(image_folder, "validation")
    keys = [os.path.relpath(os.path.join(dp, f), image_folder) for dp, _, fs in os.walk(folder) for f in fs]
    save_proposals(str(tmp_path / "p.npz"), {k: box for k in keys})
    config = _predet_config(image_folder)
    config.data.update(queries="proposals", proposals_file=str(tmp_path / "p.npz"), train_split="validation")
    config.data.augment.update(scale=(0.9, 1.0), photometric=False)
    train = build_train_pipeline(config, num_queries=Q, process_index=0, process_count=1)
    batch = next(train)
    assert batch["query_valid"].sum(axis=1).max() <= 1  # one candidate, at most one query
    assert batch["query_valid"][:, 1:].sum() == 0 and batch["query_valid"].any()
    assert train.stats["missing_proposals"] == 0


def test_cached_proposals_of_a_run_are_its_queries(image_folder, tmp_path):
    from frozen_det.data.process_shards import ProcessSlot
    from frozen_det.data.two_view.cache_proposals import cache_run_proposals
    from frozen_det.data.two_view.pipelines import build_train_pipeline
    from frozen_det.data.two_view.proposals import load_proposals

    config = _predet_config(image_folder)
    config.data.update(queries="proposals", proposals_file=str(tmp_path / "cache.npz"))
    # Two processes, each saving every 2 images; the first is interrupted after its first part.
    first, second = ProcessSlot(0, 2), ProcessSlot(1, 2)
    assert cache_run_proposals(config, slot=second, save_every=2, max_boxes=30, max_side=96)["images"] is None
    cache_run_proposals(config, slot=first, save_every=2, max_boxes=30, max_side=96)
    parts = sorted(glob.glob(str(tmp_path / "cache.npz.shards" / "process-00000-of-00002-part*.npz")))
    assert len(parts) >= 2
    for path in parts[1:] + [first.shard_path(str(tmp_path / "cache.npz"), ".done")]:
        os.remove(path)
    os.remove(tmp_path / "cache.npz")
    report = cache_run_proposals(config, slot=first, save_every=2, max_boxes=30, max_side=96)
    assert len(glob.glob(str(tmp_path / "cache.npz.shards" / "process-00000-*part*.npz"))) == len(parts)
    assert report["images"] == 10 and [os.path.basename(p) for p in report["unreadable"]] == ["broken.jpg"]
    cache = load_proposals(str(tmp_path / "cache.npz"))
    assert "train/sub/1.png" in cache and "validation/sub/1.png" in cache
    assert all(0 < len(v) <= 30 for v in cache.values())
    train = build_train_pipeline(config, num_queries=Q, process_index=0, process_count=1)
    batches = [next(train) for _ in range(3)]
    assert train.stats["missing_proposals"] == 0
    # Queries must lie inside both random crops: most images still find some among 30 proposals.
    assert np.mean([b["query_valid"].any(axis=1).mean() for b in batches]) > 0.5


def test_labelled_detection_folders_give_image_labels(voc_folder, image_folder):
    from frozen_det.data.two_view.pipelines import build_train_pipeline
    from frozen_det.tasks import get_task

    config = _predet_config(voc_folder, multilabel=True, num_labels=2)
    config.data.update(source="voc_folder", labels=True, train_split="trainval", eval_split="test")
    train = build_train_pipeline(config, num_queries=Q, process_index=0, process_count=1)
    assert train.info.num_labels == 4  # bird, cat, dog, person (the folder's sorted names)
    with pytest.raises(ValueError, match=r"model.predet.num_labels=4"):
        get_task(config).validate(train.info)
    by_id = {r.image_id: r.classes[~r.is_crowd] for r in train.source.detection.split_records("trainval")}
    batch = next(train)
    assert batch["image_labels"].shape == (2, 4) and batch["image_labels"].sum() > 0
    for image_id, labels in zip(batch["image_id"], batch["image_labels"]):
        expected = np.zeros(4, np.float32)
        expected[[c - 1 for c in by_id[int(image_id)]]] = 1
        np.testing.assert_array_equal(labels, expected)
    # An image folder has no labels, and says so.
    with pytest.raises(ValueError, match="config.data.labels=True: an image_folder has no labels"):
        config_lib.complete(d.ConfigDict(dict(_predet_config(image_folder).to_dict(), data=dict(labels=True))))


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def predet_run(image_folder, tmp_path_factory):
    """A 3-step PreDet run of the shared loop; (config, workdir, final evaluation)."""
    from frozen_det.training.loop import train_and_evaluate

    config = _predet_config(image_folder)
    workdir = str(tmp_path_factory.mktemp("predet_run"))
    result = train_and_evaluate(config, workdir)
    return config, workdir, result


@pytest.mark.slow
def test_the_shared_loop_trains_predet(predet_run):
    _, workdir, result = predet_run
    with open(os.path.join(workdir, "train_metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        for key in ("total", "crpn_score", "crpn_box", "croi_info_nce", "croi_box", "retrieval_top1"):
            assert np.isfinite(row[key]), (key, row)
        terms = sum(row[k] for k in ("crpn_score", "crpn_box", "croi_info_nce", "croi_box"))
        assert row["total"] == pytest.approx(terms, rel=1e-5)
        assert 0 <= row["crpn_query_recall"] <= 1
    assert result["num_images"] == 4 and result["num_queries"] > 0
    assert 0 <= result["retrieval_top1"] <= 1 and 0 <= result["crpn_query_recall"] <= 1
    assert result["retrieval_chance"] == pytest.approx(1 / 17)  # 16 negatives: proposals are plentiful


@pytest.mark.slow
def test_a_predet_run_initialises_a_detector(predet_run, tmp_path):
    from frozen_det.models.predet import PRETEXT_MODULES
    from frozen_det.tasks import get_task
    from frozen_det.training import sharding
    from frozen_det.training.run import Run, init_from
    from frozen_det.training.state import build_state
    from frozen_det.tree_paths import flatten

    _, workdir, _ = predet_run
    detector = config_lib.complete(
        d.ConfigDict(
            dict(
                model=_detector(),
                data=dict(source="synthetic", canvas=SIZE, max_instances=4),
                train=d.train(batch_size=2),
            )
        )
    )
    detector.train.init_from = workdir
    task = get_task(detector)
    state, _, _, _ = build_state(detector, task, task.build_model(), sharding.make_mesh(jax.devices()[:1]))
    flat = lambda tree: {k: np.asarray(v) for k, v in flatten(jax.device_get(tree)).items()}
    fresh = flat(state.variables())
    state, report = init_from(state, workdir)
    got = flat(state.variables())
    with Run(workdir) as run:
        theirs = flat(run.variables())

    class_specific = ("/rpn_head/scores/", "/rpn_head/boxes/", "/box_heads_0/class_logits/", "/box_heads_0/box_deltas/")
    shared = sorted(p for p in got if not any(s in p for s in class_specific))
    assert sorted(report["restored"]) == shared
    assert {p.split("/")[1] for p in shared} == {"backbone", "neck", "rpn_head", "box_heads_0"}
    assert any("/rpn_head/conv0/" in p for p in shared) and any("/box_heads_0/fc0/" in p for p in shared)
    for path in shared:
        np.testing.assert_array_equal(got[path], theirs[path], err_msg=path)
    assert any(not np.array_equal(got[p], fresh[p]) for p in shared if p.startswith("params/"))
    assert sorted(report["not_in_source"]) == sorted(p for p in got if any(s in p for s in class_specific))
    for path in report["not_in_source"]:
        np.testing.assert_array_equal(got[path], fresh[path], err_msg=path)
    unused = {p.split("/")[1] for p in report["unused_from_source"]}
    assert unused == set(PRETEXT_MODULES) - {"multilabel_classifier"}  # the pretext heads stay behind


# ---------------------------------------------------------------------------------------------- ablation


@pytest.mark.parametrize(
    "switches,losses",
    [
        (dict(crpn=False, croi=True, croi_regression=False), {"croi_info_nce"}),
        (dict(crpn=True, croi=False, croi_regression=False), {"crpn_score", "crpn_box"}),
        (
            dict(crpn=False, croi=True, croi_regression=True, multilabel=True, num_labels=5),
            {"croi_info_nce", "croi_box", "multilabel"},
        ),
    ],
)
def test_table1_ablations_trace_with_their_losses(image_folder, switches, losses):
    from frozen_det.tasks import get_task

    config = _predet_config(image_folder, **switches)
    task = get_task(config)
    model = task.build_model()
    batch = task.model_batch(task.example_batch(2), train=True)
    rngs = {"params": jax.random.key(0), "sampling": jax.random.key(1)}
    variables = jax.eval_shape(lambda b: model.init(rngs, b, train=False), batch)
    (out, metrics), _ = jax.eval_shape(
        lambda v, b: model.apply(v, b, train=True, rngs=rngs, mutable=["batch_stats"]), variables, batch
    )
    assert set(out) == losses | {"total"}
    assert ("retrieval_top1" in metrics) == switches["croi"]
    assert ("crpn_query_recall" in metrics) == switches["crpn"]
    assert isinstance(model.config, ml_collections.FrozenConfigDict)
