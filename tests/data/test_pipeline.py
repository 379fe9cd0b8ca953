"""Pipeline behaviour on the synthetic source: contract, determinism, resumption, sharding,
eval padding, k-shot, config errors, and the synthetic builder's determinism."""

import json

import numpy as np
import pytest
from helpers import synthetic_config

from frozen_det.data import detection
from frozen_det.data.detection import config as detection_config
from frozen_det.data.offline import synthetic
from frozen_det.ops.boxes import to_original_boxes

CONTRACT = {
    "image": (np.float32, lambda b, c: (b, c.canvas, c.canvas, 3)),
    "boxes": (np.float32, lambda b, c: (b, c.max_instances, 4)),
    "classes": (np.int32, lambda b, c: (b, c.max_instances)),
    "valid": (np.bool_, lambda b, c: (b, c.max_instances)),
    "is_crowd": (np.bool_, lambda b, c: (b, c.max_instances)),
    "masks": (np.float32, lambda b, c: (b, c.max_instances, c.mask_size, c.mask_size)),
    "image_info": (np.float32, lambda b, c: (b, 4, 2)),
    "image_id": (np.int64, lambda b, c: (b,)),
    "image_labels": (np.float32, lambda b, c: (b, 4)),
    "num_dropped_instances": (np.int32, lambda b, c: (b,)),
}


def _train(cfg, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    return detection.build_train_pipeline(cfg, **kw)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batch_contract(synthetic_dir):
    cfg = synthetic_config(synthetic_dir)
    pipe = _train(cfg)
    batch = next(pipe)
    for key, (dtype, shape) in CONTRACT.items():
        assert batch[key].dtype == dtype, key
        assert batch[key].shape == shape(4, pipe.config), key
    v = batch["valid"]
    assert np.all(batch["classes"][v] >= 1) and np.all(batch["classes"][~v] == 0)
    assert np.all(batch["boxes"][~v] == 0) and not batch["is_crowd"].any()
    for i in range(4):  # image labels = classes present
        present = np.zeros(4)
        present[batch["classes"][i][v[i]]] = 1
        np.testing.assert_array_equal(batch["image_labels"][i], present)
    assert pipe.source.info.class_names == ["background", "circle", "square", "triangle"]
    assert pipe.source.info.num_classes == 3
    assert batch["masks"][v].max() > 0.9 and batch["masks"].min() >= 0


def test_synthetic_builder_deterministic(tmp_path):
    from frozen_det.data.detection.config import resolve

    c = resolve(synthetic_config(tmp_path)).synthetic
    c.num_train, c.num_validation = 6, 2

    def read(d):
        import tensorflow_datasets as tfds

        b = synthetic.build(c, str(d))
        ds = b.as_dataset(
            "train", decoders={"image": tfds.decode.SkipDecoding(), "instance_map": tfds.decode.SkipDecoding()}
        )
        return [(e["image"], e["instance_map"], e["objects"]["bbox"].tobytes()) for e in ds.as_numpy_iterator()]

    a, b = read(tmp_path / "a"), read(tmp_path / "b")
    assert len(a) == 6 and a == b
    ex = synthetic.generate_example(3, "train", 96, 3, 5)
    for j, box in enumerate(ex["boxes"]):  # boxes are the tight boxes of the visible masks
        ys, xs = np.nonzero(ex["instance_map"][..., 0] == j + 1)
        np.testing.assert_array_equal(box, [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])


def test_fixed_seed_identical_and_seed_matters(synthetic_dir):
    cfg = synthetic_config(synthetic_dir, augment=dict(copy_paste=True))
    a, b = _train(cfg), _train(cfg)
    for _ in range(2):
        _same(next(a), next(b))
    cfg.seed = 1
    c = next(_train(cfg))
    assert not np.array_equal(
        c["image"], next(_train(synthetic_config(synthetic_dir, augment=dict(copy_paste=True))))["image"]
    )


@pytest.mark.parametrize("copy_paste", [False, True])
def test_resume_sees_the_same_batches(synthetic_dir, copy_paste):
    """24 train images, batch 4, 7 batches cross an epoch boundary; restore after 5."""
    cfg = synthetic_config(synthetic_dir, augment=dict(copy_paste=copy_paste))
    ref = _train(cfg)
    batches = [next(ref) for _ in range(8)]
    fresh = _train(cfg)
    for _ in range(5):
        next(fresh)
    state = json.loads(json.dumps(fresh.state()))  # JSON round trip, as in a checkpoint
    assert state["epoch"] == 0 and state["offset"] == 20
    resumed = _train(cfg)
    resumed.restore(state)
    for k in range(5, 8):
        _same(next(resumed), batches[k])
    assert resumed.state()["epoch"] == 1
    # The first epoch saw every image exactly once, in a shuffled order.
    ids = np.concatenate([b["image_id"] for b in batches[:6]])
    assert sorted(ids.tolist()) == list(range(1, 25)) and ids.tolist() != sorted(ids.tolist())


def test_a_dropped_pipeline_closes_its_epoch_without_a_garbage_collection(synthetic_dir):
    """No reference cycle through the epoch being read: were the pipeline left to the cyclic
    garbage collector, its tf.data iterator would be destroyed inside a collection that holds
    the GIL while the destructor waits for in-flight work (pipeline._read_epoch)."""
    import gc
    import weakref

    from frozen_det.data import pipeline

    train = _train(synthetic_config(synthetic_dir, batch_size=2))
    next(train)
    gone, reading = weakref.ref(train), len(pipeline._OPEN_EPOCHS)
    gc.disable()
    try:
        del train
        assert gone() is None and len(pipeline._OPEN_EPOCHS) == reading - 1  # its epoch closed
    finally:
        gc.enable()


def test_restore_rejects_other_layout(synthetic_dir):
    cfg = synthetic_config(synthetic_dir)
    state = _train(cfg).state()
    with pytest.raises(ValueError, match="process_count"):
        _train(cfg, process_index=0, process_count=2).restore(state)


def test_two_processes_disjoint_and_covering(synthetic_dir):
    cfg = synthetic_config(synthetic_dir, batch_size=4)
    seen = []
    for p in range(2):
        pipe = _train(cfg, process_index=p, process_count=2)
        assert pipe.batch_size == 2
        ids = np.concatenate([next(pipe)["image_id"] for _ in range(6)])  # one epoch: 12 each
        assert len(set(ids.tolist())) == 12
        seen.append(set(ids.tolist()))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(1, 25))
    # Eval: same number of batches on both, union of real examples = the split.
    got = []
    for p in range(2):
        ev = detection.build_eval_pipeline(cfg, process_index=p, process_count=2)
        batches = list(ev)
        assert len(batches) == ev.num_batches == 3  # ceil(5 / 2)
        for b in batches:
            got += b["image_id"][b["example_valid"]].tolist()
            assert np.all(b["image_id"][~b["example_valid"]] == -1)
    assert sorted(got) == list(range(1_000_001, 1_000_011))


def test_eval_keeps_everything_and_maps_back(synthetic_dir):
    cfg = synthetic_config(synthetic_dir, eval_batch_size=4)
    ev = detection.build_eval_pipeline(cfg, process_index=0, process_count=1)
    gt = ev.source.coco_ground_truth(ev.split)
    by_image = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    batches = list(ev)
    assert len(batches) == 3 and batches[-1]["example_valid"].tolist() == [True, True, False, False]
    for b in batches:
        orig = to_original_boxes(b["boxes"], b["image_info"])
        xywh = np.stack([orig[..., 1], orig[..., 0], orig[..., 3] - orig[..., 1], orig[..., 2] - orig[..., 0]], -1)
        for i in np.nonzero(b["example_valid"])[0]:
            np.testing.assert_allclose(b["image_info"][i, 2], [128 / 96] * 2, rtol=1e-6)
            want = np.array(by_image.get(int(b["image_id"][i]), [])).reshape(-1, 4)
            np.testing.assert_allclose(xywh[i][b["valid"][i]], want, atol=1e-3)
    assert len(gt["images"]) == 10 and gt["categories"][0] == {"id": 1, "name": "circle", "supercategory": ""}
    assert "segmentation" in gt["annotations"][0]


def test_pycocotools_reads_ground_truth(synthetic_dir):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cfg = synthetic_config(synthetic_dir)
    gt = detection.build_eval_pipeline(cfg, process_index=0, process_count=1).source.coco_ground_truth("validation")
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    dets = [
        dict(
            image_id=a["image_id"],
            category_id=a["category_id"],
            bbox=a["bbox"],
            score=1.0,
            segmentation=a["segmentation"],
        )
        for a in gt["annotations"]
    ]
    for kind in ("bbox", "segm"):
        ev = COCOeval(coco, coco.loadRes(dets), kind)
        ev.evaluate(), ev.accumulate(), ev.summarize()
        assert ev.stats[0] > 0.99


def test_kshot(synthetic_dir):
    from frozen_det.data.detection.kshot import kshot_select

    classes = [{1}, {1, 2}, {2}, {3}, {1}, {3}, set()]
    sel = kshot_select(classes, 1, seed=0)
    covered = set().union(*(classes[i] for i in sel))
    assert covered == {1, 2, 3} and len(sel) <= 3
    cfg = synthetic_config(synthetic_dir, kshot=2)
    pipe = _train(cfg)
    n = len(pipe._shard_indices())
    assert 3 <= n < 24
    recs = pipe.source.record_classes("train")
    counts = {c: sum(c in recs[i] for i in pipe._selected) for c in (1, 2, 3)}
    assert min(counts.values()) >= 2
    ids = set(np.concatenate([next(pipe)["image_id"] for _ in range(2)]).tolist())
    src = pipe.source
    all_ids = [int(r["image_id"]) for r in src._as_dataset("train").map(src._record).as_numpy_iterator()]
    assert ids <= {all_ids[i] for i in pipe._selected}  # only the selected images are read


def test_config_errors(synthetic_dir):
    with pytest.raises(ValueError, match="config.data.augment.copy_paste"):
        detection_config.resolve(synthetic_config(synthetic_dir, with_masks=False, augment=dict(copy_paste=True)))
    with pytest.raises(ValueError, match="config.data.canvas"):
        detection_config.resolve(synthetic_config(synthetic_dir, canvas=100))
    with pytest.raises(ValueError, match="config.data.bogus"):
        detection_config.resolve(synthetic_config(synthetic_dir, bogus=1))
    with pytest.raises(ValueError, match="not divisible"):
        _train(synthetic_config(synthetic_dir, batch_size=3), process_index=0, process_count=2)


def test_bfloat16_and_uint8_masks(synthetic_dir):
    cfg = synthetic_config(synthetic_dir, image_dtype="bfloat16", masks_dtype="uint8", max_instances=2)
    b = next(_train(cfg))
    assert str(b["image"].dtype) == "bfloat16" and b["masks"].dtype == np.uint8
    assert b["valid"].shape == (4, 2)
