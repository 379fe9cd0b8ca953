"""PreDet's two MoCo v2 views with aligned query boxes: geometry round trips, the same pixels under
each view's query box, validity and index alignment, determinism; the two-view pipelines on the
engine: exact resumption across epochs, parallel examples, the held-out set."""

import dataclasses
import logging

import ml_collections
import numpy as np
import pytest
from PIL import Image

from frozen_det.data.two_view import views as T

NO_PHOTO = T.TwoViewConfig(size=96, photometric=False, min_view_size=6.0)


def smooth_image(h=160, w=200):
    """Low-frequency colour pattern (no two regions alike), so bilinear resampling at different
    scales changes a pixel by only a few grey levels."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 60 * np.sin(x / 13.0) + 50 * np.cos(y / 17.0)
    g = 128 + 70 * np.sin((x + y) / 19.0)
    b = 128 + 40 * np.cos(x / 23.0) * np.sin(y / 11.0) + 0.3 * (x - w / 2)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def crop_at(view, box, flip=False, out=8):
    """The view's pixels under a yxyx box, resized to out x out (float), mirrored back if the view
    was flipped (so it reads in the source image's orientation)."""
    y1, x1, y2, x2 = (float(v) for v in box)
    patch = np.asarray(Image.fromarray(view).resize((out, out), Image.BILINEAR, box=(x1, y1, x2, y2)), np.float64)
    return patch[:, ::-1] if flip else patch


def test_geometry_round_trip_and_corners():
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 150, (20, 4))
    boxes[:, 2:] += boxes[:, :2]
    for flip in (False, True):
        crop = T.Crop(top=12.0, left=30.0, height=90.0, width=120.0, size=64, flip=flip)
        view = T.image_to_view(boxes, crop)
        np.testing.assert_allclose(T.view_to_image(view, crop), boxes, atol=1e-9)
        np.testing.assert_allclose(T.image_to_view(T.view_to_image(view, crop), crop), view, atol=1e-9)
        assert (view[:, 2] >= view[:, 0]).all() and (view[:, 3] >= view[:, 1]).all()  # still yxyx
        np.testing.assert_allclose(T.image_to_view(crop.box, crop), [0, 0, 64, 64])
    # A box in the crop's left part lands on the right after a flip.
    left_part = np.array([12.0, 30.0, 42.0, 60.0])
    np.testing.assert_allclose(T.image_to_view(left_part, dataclasses.replace(crop, flip=True)), [0, 48, 64 / 3, 64])
    for seed in range(20):  # sampled crops lie inside the image and respect the area / aspect ranges
        c = T.sample_crop(np.random.default_rng(seed), (160, 200), 64)
        assert c.top >= 0 and c.left >= 0 and c.top + c.height <= 160 and c.left + c.width <= 200
        assert 0.2 * 160 * 200 * 0.95 <= c.height * c.width <= 160 * 200


def test_same_pixels_under_each_views_query_box_including_flip():
    image = smooth_image()
    crops = (T.Crop(10.0, 20.0, 120.0, 150.0, 96, False), T.Crop(30.0, 40.0, 110.0, 130.0, 96, True))
    views = [T.render_view(image, c) for c in crops]
    query = np.array([50.0, 70.0, 95.0, 130.0])
    a, b = (crop_at(v, T.image_to_view(query, c), c.flip) for v, c in zip(views, crops))
    source = crop_at(image, query)
    assert np.abs(a - source).mean() < 3 and np.abs(b - source).mean() < 3
    assert np.abs(a - b).max() < 16
    # The check has power: in the flipped view, the box mapped without the flip is another region,
    # and the right region left mirrored is not the same patch either.
    unflipped = T.image_to_view(query, dataclasses.replace(crops[1], flip=False))
    assert np.abs(crop_at(views[1], unflipped, True) - source).mean() > 10
    assert np.abs(crop_at(views[1], T.image_to_view(query, crops[1])) - source).mean() > 10

    # Through make_two_views, over several seeds (both flip combinations occur).
    flips = set()
    for seed in range(6):
        out = T.make_two_views(image, np.random.default_rng(seed), NO_PHOTO)
        flips.add((out["crop1"].flip, out["crop2"].flip))
        for i in np.flatnonzero(out["query_valid"]):
            a = crop_at(out["view1"], out["boxes1"][i], out["crop1"].flip)
            b = crop_at(out["view2"], out["boxes2"][i], out["crop2"].flip)
            assert np.abs(a - b).mean() < 2, (seed, i)
    assert len({f1 != f2 for f1, f2 in flips}) == 2, flips


def test_proposal_queries_are_inside_both_views_and_index_aligned():
    image = smooth_image()
    rng = np.random.default_rng(2)
    candidates = rng.uniform(0, 120, (300, 2))
    candidates = np.concatenate([candidates, candidates + rng.uniform(4, 60, (300, 2))], 1)
    for seed in range(5):
        out = T.make_two_views(image, np.random.default_rng(seed), NO_PHOTO, candidates)
        valid, index = out["query_valid"], out["candidate_index"]
        q = NO_PHOTO.num_queries
        assert out["boxes1"].shape == out["boxes2"].shape == out["query_boxes"].shape == (q, 4)
        eligible = np.flatnonzero(T.eligible_candidates(candidates, out["crop1"], out["crop2"], 6.0))
        assert valid.sum() == min(q, len(eligible)) > 0
        assert valid[: valid.sum()].all()  # valid rows first, then padding
        assert len(set(index[valid])) == valid.sum() and np.isin(index[valid], eligible).all()
        np.testing.assert_allclose(out["query_boxes"][valid], candidates[index[valid]], atol=1e-4)
        for k in "12":
            back = T.view_to_image(out["boxes" + k], out["crop" + k])
            np.testing.assert_allclose(back[valid], candidates[index[valid]], atol=1e-3)
            boxes = out["boxes" + k][valid]
            assert (boxes >= -1e-4).all() and (boxes <= 96 + 1e-4).all()
            assert (boxes[:, 2:] - boxes[:, :2] >= 6.0 - 1e-4).all()
            assert not out["boxes" + k][~valid].any()
        assert (index[~valid] == -1).all() and not out["query_boxes"][~valid].any()


def test_few_candidates_pad_and_random_boxes_fill():
    image = smooth_image()
    whole = np.array([[0.0, 0.0, 160.0, 200.0]])  # never inside a crop's overlap unless both are the image
    middle = np.array([[70.0, 90.0, 90.0, 110.0], [60.0, 80.0, 100.0, 120.0]])
    cfg = dataclasses.replace(NO_PHOTO, scale=(0.9, 1.0))  # large crops: the middle is always shared
    out = T.make_two_views(image, np.random.default_rng(0), cfg, np.concatenate([whole, middle]))
    np.testing.assert_array_equal(out["query_valid"], np.arange(16) < 2)
    assert set(out["candidate_index"][:2]) == {1, 2}
    empty = T.make_two_views(image, np.random.default_rng(0), cfg, np.zeros((0, 4)))
    assert not empty["query_valid"].any() and not empty["boxes1"].any()

    out = T.make_two_views(image, np.random.default_rng(3), NO_PHOTO)  # random boxes in the overlap
    assert out["query_valid"].all() and (out["candidate_index"] == -1).all()
    region = T.intersection(out["crop1"], out["crop2"])
    boxes = out["query_boxes"]
    assert (boxes[:, :2] >= region[:2] - 1e-3).all() and (boxes[:, 2:] <= region[2:] + 1e-3).all()
    for k in "12":
        np.testing.assert_allclose(T.view_to_image(out["boxes" + k], out["crop" + k]), boxes, atol=1e-3)


def test_deterministic_and_photometric():
    image = smooth_image(64, 80)
    cfg = T.TwoViewConfig(size=48)
    a = T.make_two_views(image, np.random.default_rng(7), cfg)
    b = T.make_two_views(image, np.random.default_rng(7), cfg)
    for key in ("view1", "view2", "boxes1", "boxes2", "query_valid"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["view1"].dtype == np.uint8 and a["view1"].shape == (48, 48, 3)
    grey = dataclasses.replace(cfg, jitter_prob=0.0, grayscale_prob=1.0, blur_prob=0.0)
    g = T.make_two_views(image, np.random.default_rng(7), grey)["view1"].astype(int)
    assert np.abs(g[..., 0] - g[..., 1]).max() <= 1 and np.abs(g[..., 1] - g[..., 2]).max() <= 1
    # Jitter with zero strength is the identity (up to the HSV round trip).
    x = image.astype(np.float32) / 255
    np.testing.assert_allclose(T.color_jitter(x, np.random.default_rng(0), 0, 0, 0, 0), x, atol=1e-5)
    # Full photometric chain changes the pixels but not the geometry.
    plain = T.make_two_views(image, np.random.default_rng(7), dataclasses.replace(cfg, photometric=False))
    np.testing.assert_array_equal(plain["boxes1"], a["boxes1"])


def test_cached_region_proposals_as_candidates(tmp_path):
    R = pytest.importorskip("frozen_det.data.two_view.proposals")
    pytest.importorskip("skimage")
    image = smooth_image()
    path = str(tmp_path / "proposals.npz")
    R.cache_proposals(path, [("img0", image)], max_boxes=200)  # offline, once
    candidates = R.load_proposals(path)["img0"]
    candidates = np.concatenate([candidates, np.zeros((8, 4), np.float32)])  # fixed-size padding rows
    cfg = dataclasses.replace(NO_PHOTO, scale=(0.6, 1.0))
    out = T.make_two_views(image, np.random.default_rng(0), cfg, candidates)
    valid, index = out["query_valid"], out["candidate_index"]
    assert valid.sum() > 0 and (index[valid] < len(candidates) - 8).all()
    for k in "12":
        back = T.view_to_image(out["boxes" + k], out["crop" + k])
        np.testing.assert_allclose(back[valid], candidates[index[valid]], atol=1e-3)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32)])
def test_rejects_bad_images(bad):
    with pytest.raises(ValueError, match="uint8"):
        T.make_two_views(bad, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------- pipelines


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """train: 5 images and one unreadable file (sorted last); validation: 3 images."""
    root = tmp_path_factory.mktemp("two_view_images")
    for split, n in (("train", 5), ("validation", 3)):
        (root / split).mkdir()
        for i in range(n):
            Image.fromarray(smooth_image(40 + 4 * i, 48)).save(root / split / f"{i}.png")
    (root / "train" / "x_broken.jpg").write_bytes(b"not an image")
    return str(root)


def _pipeline_config(path, **over):
    data = dict(source="image_folder", path=path, image_size=32, batch_size=2, eval_batch_size=2, num_workers=0)
    return ml_collections.ConfigDict(dict(data, augment=dict(min_view_size=4.0), **over))


def _assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert sorted(a) == sorted(b)
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_two_view_train_resumes_exactly_across_an_epoch_boundary(image_folder, caplog):
    from frozen_det.data.two_view.pipelines import build_train_pipeline

    kw = dict(num_queries=3, process_index=0, process_count=1)
    train = build_train_pipeline(_pipeline_config(image_folder), **kw)
    states, batches = [], []
    with caplog.at_level(logging.WARNING, logger="frozen_det.data"):
        for _ in range(7):  # 5 readable images an epoch: batch 2 holds examples of epochs 0 and 1
            states.append(train.state())
            batches.append(next(train))
    assert states[2]["epoch"] == 0 and states[3]["epoch"] == 1
    assert train.stats["examples_skipped"] >= 2 and train.report()["examples"] == 14  # x_broken.jpg, each epoch
    assert "x_broken.jpg of split 'train'" in caplog.text
    assert batches[0]["view1"].shape == (2, 32, 32, 3) and batches[0]["query_valid"].shape == (2, 3)
    for k in (2, 3):  # the next batch crosses the boundary; the boundary was just crossed
        again = build_train_pipeline(_pipeline_config(image_folder), **kw)
        again.restore(states[k])
        _assert_same_batches([next(again) for _ in range(7 - k)], batches[k:])
        assert again.stats == train.stats
    # Each epoch reads every readable image once, in a new order.
    ids = [i for b in batches for i in b["image_id"].tolist()]
    assert sorted(ids[:5]) == sorted(ids[5:10]) == [0, 1, 2, 3, 4] and ids[:5] != ids[5:10]


def test_two_view_num_workers_make_the_same_batches(image_folder):
    from frozen_det.data.two_view.pipelines import build_eval_pipeline, build_train_pipeline

    kw = dict(num_queries=3, process_index=0, process_count=1)
    inline, parallel = (_pipeline_config(image_folder, num_workers=n) for n in (0, 3))
    train = [build_train_pipeline(cfg, **kw) for cfg in (inline, parallel)]
    _assert_same_batches([next(train[1]) for _ in range(4)], [next(train[0]) for _ in range(4)])
    assert train[0].stats == train[1].stats
    held_out = [list(build_eval_pipeline(cfg, **kw)) for cfg in (inline, parallel)]
    _assert_same_batches(held_out[1], held_out[0])


def test_two_view_held_out_set_is_fixed_per_image(image_folder):
    """The first num_eval_examples images, padded to whole batches, every process the same number
    of batches, and each image's views the same whatever the process layout."""
    from frozen_det.data.two_view.pipelines import build_eval_pipeline

    cfg = _pipeline_config(image_folder, num_eval_examples=2)
    one = build_eval_pipeline(cfg, num_queries=3, process_index=0, process_count=1)
    (batch,) = list(one)
    assert one.num_batches == 1 and batch["example_valid"].all() and batch["image_id"].tolist() == [0, 1]
    two = [build_eval_pipeline(cfg, num_queries=3, process_index=p, process_count=2, batch_size=4) for p in (0, 1)]
    for p, held_out in enumerate(two):
        (b,) = list(held_out)
        assert held_out.num_batches == 1 and b["image_id"].tolist() == [p, -1]
        assert b["example_valid"].tolist() == [True, False] and not b["view1"][1].any()
        np.testing.assert_array_equal(b["view1"][0], batch["view1"][p])
        np.testing.assert_array_equal(b["query_boxes2"][0], batch["query_boxes2"][p])
