"""Classification as a task, against independent references: top-k and per-class accuracy equal
to numpy; kNN equal to scikit-learn's KNeighborsClassifier; a linear probe trained by the
training loop within 1 point of scikit-learn's LogisticRegression on the same features (sklearn's
real 8x8 digits, as an image folder); transfer between a detector and a classifier restores
exactly the backbone and reports the rest; `python -m frozen_det.train / evaluate` on a
classification config from configs/; on BCCD, the Lite0 linear probe's mean per-class accuracy
reaches 0.9."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from frozen_det import config as config_lib
from frozen_det import config_defaults as d
from frozen_det.data.offline import fashion_mnist
from frozen_det.evaluation.classification import knn_accuracy, knn_predict, per_class_accuracy, top_k_accuracy

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = fashion_mnist.available()


def test_top_k_and_per_class_accuracy_equal_numpy():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(200, 12)), rng.integers(0, 12, 200)
    for k in (1, 5):
        expected = np.mean([labels[i] in np.argsort(-scores[i])[:k] for i in range(200)])
        assert top_k_accuracy(scores, labels, k) == pytest.approx(expected)
    predictions = scores.argmax(1)
    per_class = per_class_accuracy(predictions, labels, 13)
    for c in range(12):
        assert per_class[c] == pytest.approx(np.mean(predictions[labels == c] == c))
    assert np.isnan(per_class[12])  # no examples


def test_knn_equals_scikit_learn():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 16))
    train_labels, query_labels = rng.integers(0, 6, 300), rng.integers(0, 6, 120)
    train = centres[train_labels] + rng.normal(scale=1.5, size=(300, 16))
    queries = centres[query_labels] + rng.normal(scale=1.5, size=(120, 16))
    for k in (1, 5, 20):
        reference = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(train, train_labels)
        np.testing.assert_array_equal(knn_predict(train, train_labels, queries, k, 6), reference.predict(queries))
        ours = knn_accuracy(train, train_labels, queries, query_labels, k, 6)
        assert ours["top1"] == pytest.approx(reference.score(queries, query_labels))
        # top-5: the label among the 5 classes with the most neighbours (probabilities = votes / k)
        proba = reference.predict_proba(queries)
        assert ours["top5"] == pytest.approx(top_k_accuracy(proba, query_labels, 5))


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """scikit-learn's 1797 real 8x8 digits as an image folder: 16x16 PNGs, train 1200 / test 597."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        split = "train" if i < 1200 else "test"
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.kron(image * 255 / 16, np.ones((2, 2))).astype(np.uint8)
        Image.fromarray(pixels).convert("RGB").save(folder / f"{i}.png")
    return str(root)


def _probe_config(digits_folder):
    config = d.ConfigDict()
    config.model = d.ConfigDict(
        dict(
            type="classifier",
            num_classes=10,
            backbone=dict(type="resnet", depth=18, width=0.25, freeze="all", bn_mode="frozen_stats"),
        )
    )
    config.data = d.ConfigDict(
        dict(
            source="image_folder",
            path=digits_folder,
            train_split="train",
            eval_split="test",
            image_size=16,
            crop_fraction=1.0,
            eval_batch_size=200,
            mean=(128.0,) * 3,
            std=(128.0,) * 3,
            augment=dict(random_resized_crop=False, hflip=False),
        )
    )
    config.train = d.train(
        batch_size=100, total_steps=600, boundaries=(), base_lr=0.01, warmup_steps=0, weight_decay=0.0
    )
    config.train.optimizer.name = "adamw"
    config.train.update(trainable_only=("/classifier/",), log_every=100, checkpoint_every=600, seed=3)
    return config_lib.complete(config)


@pytest.mark.slow
def test_linear_probe_matches_logistic_regression(digits_folder, tmp_path):
    """The loop trains only the classifier of a frozen backbone, to a linear model on the same
    (fixed) features as good as scikit-learn's LogisticRegression: its test accuracy lies on
    LogisticRegression's regularisation path between C = 0.1 and C = 10 (600 unregularised Adam
    steps are an implicitly regularised fit; that path spans ~0.65-0.76 on these features, so a
    single C would be an arbitrary target)."""
    from frozen_det.data import classification
    from frozen_det.evaluation.classification import extract_features
    from frozen_det.training.loop import train_and_evaluate
    from frozen_det.training.run import Run

    config = _probe_config(digits_folder)
    result = train_and_evaluate(config, str(tmp_path))
    assert set(result) >= {"top1", "top5", "loss", "num_images", "per_class_accuracy", "mean_per_class_accuracy"}
    assert result["num_images"] == 597
    with Run(str(tmp_path), config) as run:
        task, model, variables = run.task, run.model, run.variables()
    features = task.features_fn(model)
    splits = {}
    for split in ("train", "test"):
        pipeline = classification.build_eval_pipeline(config, split=split, process_index=0, process_count=1)
        splits[split] = extract_features(features, variables, pipeline)
    low, high = (LogisticRegression(C=c, max_iter=5000).fit(*splits["train"]).score(*splits["test"]) for c in (0.1, 10))
    assert low - 0.01 <= result["top1"] <= high + 0.01, (low, result["top1"], high)


def _tiny_detector_config():
    """The tiny two-stage detector (4 classes, 64-px synthetic canvases) the transfer tests save."""
    return config_lib.complete(
        d.ConfigDict(
            dict(
                model=d.tiny_two_stage_model(num_classes=4),
                train=d.train(batch_size=2),
                data=dict(source="synthetic", canvas=64, max_instances=4),
            )
        )
    )


def _saved_run(config, workdir, shift: float):
    """A run's checkpoint without training: its initial state with every trainable parameter
    moved by `shift` * (10% of its size + 1e-3) in a random direction (restored values are told
    apart from any fresh initialisation, and the network's activations keep their scale: a shift
    of every weight by a constant would make them overflow)."""
    from frozen_det.tasks import get_task
    from frozen_det.training import sharding
    from frozen_det.training.checkpointing import Checkpointer
    from frozen_det.training.state import build_state

    task = get_task(config)
    state, _, _, _ = build_state(config, task, task.build_model(), sharding.make_mesh(jax.devices()[:1]))
    rng = np.random.default_rng(0)

    def moved(x):
        x = np.asarray(x)
        return x + shift * (0.1 * np.abs(x) + 1e-3) * rng.choice([-1.0, 1.0], size=x.shape).astype(x.dtype)

    state = state.replace(params=jax.tree.map(moved, state.params))
    checkpointer = Checkpointer(workdir)
    checkpointer.save(state, {"data": {}, "config": config.to_json()})
    checkpointer.close()
    return jax.tree.map(np.asarray, jax.device_get(state.variables()))


def _flat(tree):
    from frozen_det.tree_paths import flatten

    return {k: np.asarray(v) for k, v in flatten(tree).items()}


@pytest.mark.slow
def test_transfer_between_a_detector_and_a_classifier(tmp_path):
    from frozen_det.tasks import get_task
    from frozen_det.training import sharding
    from frozen_det.training.run import init_from
    from frozen_det.training.state import build_state

    detector = _tiny_detector_config()
    classifier = config_lib.complete(
        d.ConfigDict(
            dict(
                model=dict(type="classifier", num_classes=7, backbone=dict(type="resnet", depth=18)),
                train=d.train(batch_size=2),
                data=dict(source="fashion_mnist", image_size=32),
            )
        )
    )

    def transferred(config, source_dir):
        task = get_task(config)
        state, _, _, _ = build_state(config, task, task.build_model(), sharding.make_mesh(jax.devices()[:1]))
        fresh = _flat(jax.device_get(state.variables()))
        state, report = init_from(state, str(source_dir))
        return fresh, _flat(jax.device_get(state.variables())), report

    # detector -> classifier: exactly the backbone's leaves (bit-identical), the rest fresh
    det = _flat(_saved_run(detector, tmp_path / "detector", shift=1.0))
    fresh, got, report = transferred(classifier, tmp_path / "detector")
    backbone = sorted(p for p in got if p.split("/")[1] == "backbone" and "/classifier/" not in p)
    assert sorted(report["restored"]) == backbone
    for path in backbone:
        np.testing.assert_array_equal(got[path], det[path], err_msg=path)
    assert sorted(report["not_in_source"]) == ["params/backbone/classifier/bias", "params/backbone/classifier/kernel"]
    for path in report["not_in_source"]:
        np.testing.assert_array_equal(got[path], fresh[path])
    assert any(p.startswith("params/neck/") for p in report["unused_from_source"])

    # classifier -> detector: the backbone (ImageNet-style head aside) restored, neck and heads fresh
    cls = _flat(_saved_run(classifier, tmp_path / "classifier", shift=-1.0))
    fresh, got, report = transferred(detector, tmp_path / "classifier")
    assert sorted(report["restored"]) == sorted(p for p in got if p.split("/")[1] == "backbone")
    for path in report["restored"]:
        np.testing.assert_array_equal(got[path], cls[path], err_msg=path)
    assert {p.split("/")[1] for p in report["not_in_source"]} == {"neck", "rpn_head", "box_heads_0"}
    for path in report["not_in_source"]:
        np.testing.assert_array_equal(got[path], fresh[path])
    assert "params/backbone/classifier/kernel" in report["unused_from_source"]

    # classifier -> classifier with other classes: the head's shape differs and stays fresh
    other = config_lib.complete(
        d.ConfigDict(dict(classifier.to_dict(), model=dict(classifier.model.to_dict(), num_classes=3)))
    )
    fresh, got, report = transferred(other, tmp_path / "classifier")
    assert [s.split(":")[0] for s in report["shape_differs"]] == [
        "params/backbone/classifier/bias",
        "params/backbone/classifier/kernel",
    ]
    np.testing.assert_array_equal(got["params/backbone/classifier/kernel"], fresh["params/backbone/classifier/kernel"])


@pytest.mark.slow
@pytest.mark.skipif(not FASHION, reason="Debian package dataset-fashion-mnist not installed")
def test_train_and_evaluate_commands_write_the_classification_json(tmp_path):
    config = os.path.join(ROOT, "configs", "classification", "fashion_mnist.py")
    common = ["--config", config, "--workdir", str(tmp_path)]

    def run(module, *args):
        out = subprocess.run(
            [sys.executable, "-m", module, *common, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    run(
        "frozen_det.train",
        "--config.train.total_steps=60",
        "--config.train.log_every=20",
        "--config.train.eval_at_end=False",
    )
    summary = json.loads(run("frozen_det.evaluate").strip().splitlines()[-1])
    assert summary["step"] == 60 and summary["num_images"] == 10_000
    assert summary["top1"] > 0.3 and summary["top5"] > summary["top1"]  # 10 classes: chance is 0.1
    with open(tmp_path / "eval" / "test_step60.json") as f:
        written = json.load(f)
    assert set(written["per_class_accuracy"]) == {
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    }


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BCCD_DIR"), reason="BCCD not found (set BCCD_DIR)")
def test_bccd_crops_linear_probe_on_lite0(tmp_path):
    """The packaged ImageNet Lite0, frozen, with a linear classifier trained on BCCD's trainval
    cell crops: mean per-class accuracy >= 0.9 on the test crops (red cells are 85% of them)."""
    import runpy

    from frozen_det.training.loop import train_and_evaluate

    config = runpy.run_path(os.path.join(ROOT, "configs", "classification", "bccd_crops.py"))["get_config"](
        "linear_probe"
    )
    config.train.update(total_steps=150, log_every=50)
    result = train_and_evaluate(config, str(tmp_path))
    assert result["num_images"] == 945 and result["mean_per_class_accuracy"] >= 0.9, result


def test_coarse_minus_fine_accuracy_equals_a_direct_count():
    from frozen_det.evaluation.classification import coarse_minus_fine_accuracy

    rng = np.random.default_rng(2)
    group_of = np.array([0, 0, 0, 1, 1, 2])
    labels = rng.integers(0, 6, 400)
    predictions = np.where(rng.random(400) < 0.6, labels, rng.integers(0, 6, 400))
    got = coarse_minus_fine_accuracy(predictions, labels, group_of)
    for g in range(3):
        mine = group_of[labels] == g
        coarse = np.mean(group_of[predictions[mine]] == g)
        fine = np.mean([np.mean(predictions[labels == c] == c) for c in np.flatnonzero(group_of == g)])
        assert got[g] == pytest.approx(coarse - fine)
    assert got[2] == pytest.approx(0.0)  # a group of one class: coarse accuracy is its accuracy


def test_classifiers_on_detector_taps_transfer_from_a_detector_run(tmp_path):
    """A linear classifier on each tap of a detector (Conv5, the whole-image box's ConvProj map,
    pooled 1/2/4, FC1, FC2): the detector run's leaves restored by path, only the new layer
    fresh; a linear-probe step changes that layer alone."""
    from frozen_det.tasks import get_task
    from frozen_det.training import sharding
    from frozen_det.training.run import init_from
    from frozen_det.training.state import build_state
    from frozen_det.training.step import make_train_step

    detector_model = d.tiny_two_stage_model(num_classes=4)
    detector = config_lib.complete(
        d.ConfigDict(
            dict(
                model=detector_model,
                train=d.train(batch_size=2),
                data=dict(source="synthetic", canvas=64, max_instances=4),
            )
        )
    )
    source = _flat(_saved_run(detector, tmp_path / "detector", shift=0.5))
    expected_dims = {
        "conv5": 512,
        "conv_proj": 7 * 7 * 32,
        "conv_proj_1": 32,
        "conv_proj_2": 2 * 2 * 32,
        "conv_proj_4": 4 * 4 * 32,
        "fc1": 64,
    }
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    for tap, dims in expected_dims.items():
        config = config_lib.complete(
            d.ConfigDict(
                dict(
                    model=dict(
                        type="classifier", num_classes=3, features=tap, detector=detector.model, frozen_features=True
                    ),
                    train=d.train(batch_size=2),
                    data=dict(source="fashion_mnist", image_size=64),
                )
            )
        )
        model = get_task(config).build_model()
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), {"image": x}), images)
        assert variables["params"]["tap_classifier"]["kernel"].shape == (dims, 3), tap
    config.model.features = "fc1"
    config.train.update(trainable_only=("^tap_classifier/",), weight_decay=0.0)
    task = get_task(config)
    model = task.build_model()
    state, _, optimizer, _ = build_state(config, task, model, sharding.make_mesh(jax.devices()[:1]))
    state, report = init_from(state, str(tmp_path / "detector"))
    assert report["not_in_source"] == ["params/tap_classifier/bias", "params/tap_classifier/kernel"]
    assert {p.split("/")[1] for p in report["restored"]} == {"backbone", "neck", "box_heads_0"}
    before = _flat(jax.device_get(state.variables()))
    for path in report["restored"]:
        np.testing.assert_array_equal(before[path], source[path])
    step = jax.jit(make_train_step(task.loss_fn(model), optimizer))
    batch = {"image": images, "label": np.array([0, 2], np.int32)}
    new_state, metrics = step(state, batch, jax.random.key(1))
    assert np.isfinite(metrics["loss"]) and not metrics["nonfinite"]  # else the step keeps the state
    after = _flat(jax.device_get(new_state.variables()))
    changed = sorted(p for p in before if not np.array_equal(before[p], after[p]))
    assert changed == ["params/tap_classifier/bias", "params/tap_classifier/kernel"]  # BN statistics too: fixed

    # train.backbone_from: another run's backbone under the first run's FPN and box head.
    from frozen_det.training.run import other_runs_weights

    other = _flat(_saved_run(detector, tmp_path / "other_detector", shift=-0.5))
    config.train.update(init_from=str(tmp_path / "detector"), backbone_from=str(tmp_path / "other_detector"))
    state, _, _, _ = build_state(config, task, model, sharding.make_mesh(jax.devices()[:1]))
    state, reports = other_runs_weights(state, config)
    assert set(reports) == {"init_from", "backbone_from"}
    mixed = _flat(jax.device_get(state.variables()))
    for path in report["restored"]:
        expected = other if path.split("/")[1] == "backbone" else source
        np.testing.assert_array_equal(mixed[path], expected[path], err_msg=path)
    assert {p.split("/")[1] for p in reports["backbone_from"]["restored"]} == {"backbone"}


def test_pooled_taps_are_adaptive_average_pools_as_torch():
    torch = pytest.importorskip("torch")
    from frozen_det.models.classifier import adaptive_average_pool

    x = np.random.default_rng(0).normal(size=(2, 7, 7, 5)).astype(np.float32)
    for size in (1, 2, 4, 7):
        expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), size)
        np.testing.assert_allclose(adaptive_average_pool(jnp.asarray(x), size), expected.permute(0, 2, 3, 1), atol=1e-6)


def test_the_conv_proj_tap_reads_the_whole_image_box_on_p5():
    """Li et al.'s ~800-px whole images land on P5 by the canonical FPN rule; a 64-px canvas
    would land on P2: the tap reads P5 whatever the input size."""
    from frozen_det.models.classifier import DetectorTapClassifier
    from frozen_det.ops.roi_align import multilevel_roi_align

    detector = _tiny_detector_config().model
    model = DetectorTapClassifier(config=detector, tap="conv_proj", num_tap_classes=3, frozen_features=True)
    images = jnp.asarray(np.random.default_rng(1).normal(size=(1, 64, 64, 3)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), {"image": images})
    features, _ = jax.jit(lambda v: model.apply(v, images, False, method=DetectorTapClassifier.tap_features))(variables)

    def read_at(m, level):  # the detector's own layers, the box read at `level`
        pyramid = m.neck(m.backbone(images, train=False), train=False)
        whole = jnp.asarray([[[0.0, 0.0, 64.0, 64.0]]])
        crops = multilevel_roi_align({level: pyramid[level]}, whole, detector.roi.crop_size)
        return m.box_heads[0](crops, False, taps=True)["conv_proj"][:, 0].reshape(1, -1)

    at_level = jax.jit(lambda v, level: model.apply(v, level, method=read_at), static_argnums=1)
    np.testing.assert_allclose(features, at_level(variables, 5), atol=1e-5)
    assert not np.allclose(features, at_level(variables, 2), atol=1e-3)
