"""Classification data: Fashion-MNIST from its idx files (counts and balance), image folders,
objects cropped out of a detection folder, TFDS classification sets through mock_data, and the
pipeline's fixed-shape, seeded, resumable batches."""

import numpy as np
import pytest
from PIL import Image

from frozen_det.data import classification
from frozen_det.data.offline import fashion_mnist
from frozen_det.data.source import DataError

FASHION = fashion_mnist.available()


@pytest.mark.skipif(not FASHION, reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_counts_and_batches():
    cfg = dict(source="fashion_mnist", image_size=32, batch_size=8, eval_batch_size=16, crop_fraction=1.0)
    train = classification.build_train_pipeline(cfg, process_index=0, process_count=1)
    source = train.source
    assert source.num_records("train") == 60_000 and source.num_records("test") == 10_000
    np.testing.assert_array_equal(np.bincount(source.labels("train")), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(source.labels("test")), [1000] * 10)
    assert source.info.class_names[0] == "T-shirt/top" and source.info.class_names[9] == "Ankle boot"
    assert source.images("train").shape == (60_000, 28, 28)
    batch = next(train)
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and set(batch) == {"image", "label", "fine_label", "image_id"}
    # resumable: a pipeline restored from state() yields the same next batch
    state = train.state()
    expected = next(train)
    again = classification.build_train_pipeline(cfg, process_index=0, process_count=1)
    again.restore(state)
    got = next(again)
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["label"], expected["label"])
    # eval: centre crops in order, 10000 images in 625 batches of 16 per process of one
    ev = classification.build_eval_pipeline(cfg, process_index=0, process_count=1)
    first = next(iter(ev))
    assert ev.num_batches == 625 and first["example_valid"].all()
    np.testing.assert_array_equal(first["label"], source.labels("test")[:16])


def _write_image_folder(root, per_class=(5, 3, 4)):
    for split in ("train", "val"):
        for c, n in enumerate(per_class):
            folder = root / split / f"class_{'abc'[c]}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40 + i, 30), (80 * c, 20, 200 - 60 * c)).save(folder / f"{i}.png")
    (root / "train" / "class_a" / "notes.txt").write_text("not an image")


def test_image_folder(tmp_path):
    _write_image_folder(tmp_path)
    cfg = dict(
        source="image_folder",
        path=str(tmp_path),
        train_split="train",
        eval_split="val",
        image_size=24,
        batch_size=4,
        eval_batch_size=8,
    )
    train = classification.build_train_pipeline(cfg, process_index=0, process_count=1)
    assert train.source.info.class_names == ["class_a", "class_b", "class_c"]
    np.testing.assert_array_equal(np.bincount(train.source.labels("train")), [5, 3, 4])
    assert train.source.skipped_report() == {"not_image_files": 1}
    batches = list(classification.build_eval_pipeline(cfg, process_index=0, process_count=1))
    assert len(batches) == 2 and batches[1]["example_valid"].sum() == 4  # 12 images, the last batch padded
    # The colour of each class survives the centre crop and normalisation.
    valid = np.concatenate([b["example_valid"] for b in batches])
    red = np.concatenate([b["image"][..., 0].mean(axis=(1, 2)) for b in batches])[valid]
    labels = np.concatenate([b["label"] for b in batches])[valid]
    np.testing.assert_array_equal(np.bincount(labels), [5, 3, 4])
    assert red[labels == 2].min() > red[labels == 1].max() > red[labels == 1].min() > red[labels == 0].max()
    with pytest.raises(DataError, match="no split 'test'"):
        classification.build_eval_pipeline(dict(cfg, eval_split="test"), process_index=0, process_count=1)


def test_detection_crops_from_a_voc_folder(voc_folder):
    """Every non-crowd box of the generated VOC folder becomes a crop labelled with its class;
    the crop shows the class's colour (the folder paints each class in one colour; an object
    painted over by a later one does not, so most crops, not all)."""
    cfg = dict(
        source="detection_crops",
        detection=dict(source="voc_folder", path=voc_folder, class_names=("bird", "cat", "dog")),
        crop_context=0.0,
        image_size=16,
        crop_fraction=1.0,
        train_split="trainval",
        eval_split="test",
        batch_size=4,
        eval_batch_size=32,
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
    )
    ev = classification.build_eval_pipeline(cfg, process_index=0, process_count=1)
    source = ev.source
    detection = source.detection
    expected = sum(int((~r.is_crowd).sum()) for r in detection.split_records("test"))
    assert source.num_records("test") == expected > 0
    assert source.info.class_names == ["bird", "cat", "dog"]
    colours = {0: (220, 40, 40), 1: (40, 200, 40), 2: (40, 60, 220)}
    matches = [
        np.abs(image[8, 8] - np.array(colours[int(label)])).max() < 40
        for batch in ev
        for image, label, valid in zip(batch["image"], batch["label"], batch["example_valid"])
        if valid
    ]
    assert len(matches) == expected and np.mean(matches) > 0.75, np.mean(matches)


# The classification sets of the studies' paper settings (issue: paper scale): ImageNet-1k (a manual
# download in TFDS), SUN-397's first standard split, Flowers-102, Caltech-101, and CIFAR-10.
TFDS_CLASSIFICATION = [
    ("cifar10", "test", 10),
    ("imagenet2012", "validation", 1000),
    ("sun397/standard-part1-120k", "test", 397),
    ("oxford_flowers102", "test", 102),
    ("caltech101", "test", 102),
]


@pytest.mark.parametrize("name,eval_split,num_classes", TFDS_CLASSIFICATION)
def test_tfds_classification_through_mock_data(name, eval_split, num_classes):
    import tensorflow_datasets as tfds

    cfg = dict(
        source="tfds",
        name=name,
        train_split="train",
        eval_split=eval_split,
        image_size=24,
        batch_size=4,
        eval_batch_size=8,
    )
    with tfds.testing.mock_data(num_examples=12):
        train = classification.build_train_pipeline(cfg, process_index=0, process_count=1)
        assert train.source.info.num_classes == num_classes
        batch = next(train)
        assert batch["image"].shape == (4, 24, 24, 3)
        assert batch["label"].min() >= 0 and batch["label"].max() < num_classes
        state = train.state()
        expected = next(train)
        again = classification.build_train_pipeline(cfg, process_index=0, process_count=1)
        again.restore(state)
        np.testing.assert_array_equal(next(again)["label"], expected["label"])
        batches = list(classification.build_eval_pipeline(cfg, process_index=0, process_count=1))
        assert sum(int(b["example_valid"].sum()) for b in batches) == 12
