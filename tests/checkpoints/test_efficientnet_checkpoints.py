"""EfficientNet converters: keras.applications B0/B3 equivalence (same random weights) and the
packaged ImageNet Lite0 weights classifying real photos."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frozen_det.checkpoints import efficientnet_lite, keras_efficientnet
from frozen_det.checkpoints.mapping import CheckpointMismatchError
from frozen_det.checkpoints.torch_pickle import load_torch_state_dict
from frozen_det.models.backbones.efficientnet import EfficientNet

IMAGENET_MEAN_PX = (123.675, 116.28, 103.53)
IMAGENET_STD_PX = (58.395, 57.12, 57.375)


def _randomise_keras(keras_model, rng, images):
    """Random BN affine parameters (residual branches' last BN small, as in trained networks)
    with moving statistics taken from `images` (so activations keep their scale through the
    depth, like a trained network's) and a non-trivial input Normalization.

    The statistics come from a 16-image batch: at 64x64 the deep layers see only 2x2 positions,
    and statistics of fewer images make the network amplify float32 rounding (keras' and ours
    both drift ~1e-4 from a float64 run of the same weights at O(10) logits)."""
    bns = [layer for layer in keras_model.layers if type(layer).__name__ == "BatchNormalization"]
    for layer in bns:
        n = layer.get_weights()[0].shape
        low, high = (0.1, 0.3) if layer.name.endswith("project_bn") else (0.5, 1.0)
        layer.set_weights([rng.uniform(low, high, n), rng.normal(0, 0.1, n), np.zeros(n), np.ones(n)])
        layer.momentum = 0.0  # the next training call stores its batch statistics
    norm = next(layer for layer in keras_model.layers if type(layer).__name__ == "Normalization")
    norm.set_weights([np.array([0.4, 0.5, 0.6]), np.array([0.05, 0.06, 0.07]), np.array(1)])
    norm.finalize_state()  # what load_weights does; set_weights alone leaves the layer at 0 / 1
    dropouts = [layer for layer in keras_model.layers if type(layer).__name__ == "Dropout"]
    rates = [layer.rate for layer in dropouts]
    for layer in dropouts:  # drop-connect would skew the statistics
        layer.rate = 0.0
    keras_model(images, training=True)
    for layer, rate in zip(dropouts, rates):
        layer.rate = rate
    for layer in bns:
        layer.momentum = 0.99
    dense = keras_model.get_layer("predictions")
    dense.set_weights([dense.get_weights()[0], rng.normal(0, 0.1, dense.units)])


@pytest.mark.parametrize("variant", ["b0", "b3"])
def test_matches_keras_applications_logits(variant):
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(int(variant[1]))
    keras.utils.set_random_seed(int(variant[1]))
    ref = getattr(keras.applications, f"EfficientNet{variant.upper()}")(
        weights=None, input_shape=(64, 64, 3), classifier_activation=None
    )
    calibration = rng.uniform(0, 255, size=(16, 64, 64, 3)).astype(np.float32)
    _randomise_keras(ref, rng, calibration)
    variables, pre = keras_efficientnet.convert_keras_model(ref)
    # Rescaling(1/255) then Normalization(mean, var) == (x - 255 mean) / (255 sqrt(var)).
    np.testing.assert_allclose(pre.mean, [102.0, 127.5, 153.0], rtol=1e-6)
    np.testing.assert_allclose(pre.std, 255 * np.sqrt([0.05, 0.06, 0.07]), rtol=1e-6)

    images = calibration[:2]
    expected = np.asarray(ref(images, training=False))
    model = EfficientNet(variant)
    _, logits = jax.jit(lambda v, x: model.apply(v, pre(x), return_logits=True))(variables, images)
    diff = float(np.abs(np.asarray(logits) - expected).max())
    print(f"{variant}: max |logit diff| {diff:.2e}, max |logit| {np.abs(expected).max():.2f}")
    assert np.abs(expected).max() > 0.3  # not a comparison of near-zero outputs,
    assert np.abs(expected[0] - expected[1]).max() > 0.3  # nor of input-independent ones
    assert diff <= 1e-4


def test_keras_weights_file_headless_and_imagenet_normalisation(tmp_path):
    """A keras weights file of the ImageNet release stores std as the Normalization variance;
    the converter reports keras' effective ImageNet mean/std. include_top=False -> no head."""
    keras = pytest.importorskip("keras")
    ref = keras.applications.EfficientNetB0(weights=None, include_top=False, input_shape=(64, 64, 3))
    norm = next(layer for layer in ref.layers if type(layer).__name__ == "Normalization")
    norm.set_weights([np.array([0.485, 0.456, 0.406]), np.array(keras_efficientnet.KERAS_IMAGENET_STD), np.array(0)])
    path = tmp_path / "b0_notop.weights.h5"
    ref.save_weights(path)
    variables, pre = keras_efficientnet.load_keras_file(path, "b0", include_top=False)
    np.testing.assert_allclose(pre.mean, IMAGENET_MEAN_PX, rtol=1e-6)
    np.testing.assert_allclose(pre.std, IMAGENET_STD_PX, rtol=1e-6)
    assert set(variables["params"]) == {"stem", "stage1", "stage2", "stage3", "stage4"}
    np.testing.assert_array_equal(
        variables["params"]["stage4"]["block7a"]["project_conv"]["kernel"],
        ref.get_layer("block7a_project_conv").get_weights()[0],
    )
    with pytest.raises(ValueError, match=r"b0, .*lite4"):
        keras_efficientnet.load_keras_file(path, "b8")


def test_keras_variant_mismatch_lists_every_problem():
    keras = pytest.importorskip("keras")
    ref = keras.applications.EfficientNetB0(weights=None, include_top=False, input_shape=(64, 64, 3))
    with pytest.raises(CheckpointMismatchError, match=r"(?s)no value in the checkpoint.*shapes differ"):
        keras_efficientnet.convert_keras_model(ref, "b2")


def _photos(size=224):
    skimage = pytest.importorskip("skimage")
    from skimage import transform

    return np.stack(
        [
            transform.resize(image, (size, size), anti_aliasing=True, preserve_range=True)
            for image in (skimage.data.chelsea(), skimage.data.coffee())
        ]
    ).astype(np.float32)


def test_lite0_imagenet_weights_classify_real_photos():
    path = efficientnet_lite.lite0_checkpoint_path()
    assert path.endswith("efficientnet-lite0-57934424.pth")
    variables = efficientnet_lite.load_lite0_imagenet()
    model = EfficientNet("lite0")
    images = efficientnet_lite.LITE_PREPROCESSING(_photos())
    _, logits = jax.jit(lambda v, x: model.apply(v, x, return_logits=True))(variables, images)
    probs = np.asarray(jax.nn.softmax(logits))
    top5 = np.argsort(-probs, axis=1)[:, :5]
    print("chelsea", [(int(c), round(float(probs[0, c]), 3)) for c in top5[0]])
    print("coffee", [(int(c), round(float(probs[1, c]), 3)) for c in top5[1]])
    assert set(top5[0]) & {281, 282, 283, 284, 285}  # tabby .. Egyptian cat
    assert set(top5[1]) & {967, 968}  # espresso, cup
    assert top5[0, 0] == 285 and top5[1, 0] == 967  # Egyptian cat, espresso


def test_lite0_matches_efficientnet_lite_pytorch():
    """Only where the reference package is importable (not a dependency: pip install
    efficientnet-lite-pytorch==0.1.0 into a scratch dir and put it on PYTHONPATH)."""
    torch = pytest.importorskip("torch")
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    ref = reference.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=efficientnet_lite.lite0_checkpoint_path()
    ).eval()
    x = np.asarray(efficientnet_lite.LITE_PREPROCESSING(_photos()))  # 224: its padding is static
    with torch.no_grad():
        expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    _, logits = jax.jit(lambda v, x: EfficientNet("lite0").apply(v, x, return_logits=True))(
        efficientnet_lite.load_lite0_imagenet(), x
    )
    assert np.abs(np.asarray(logits) - expected).max() <= 1e-4


def test_lite0_headless_with_adapters_and_bad_keys():
    variables = efficientnet_lite.load_lite0_imagenet(num_classes=None, adapters=True)
    assert "classifier" not in variables["params"] and "head_bn" not in variables["batch_stats"]
    kernel = variables["params"]["stage3"]["block4a"]["adapter"]["conv"]["kernel"]
    assert kernel.shape == (1, 1, 40, 80) and not np.any(kernel)
    state = load_torch_state_dict(efficientnet_lite.lite0_checkpoint_path())
    np.testing.assert_array_equal(  # OIHW depthwise (C, 1, k, k) -> (k, k, 1, C)
        variables["params"]["stage3"]["block4a"]["depthwise_conv"]["kernel"][:, :, 0, 5],
        state["_blocks.5._depthwise_conv.weight"][5, 0],
    )
    np.testing.assert_array_equal(variables["batch_stats"]["stem"]["bn"]["var"], state["_bn0.running_var"])

    state["_blocks.99._se_reduce.weight"] = np.zeros((4, 32, 1, 1), np.float32)
    mapped = efficientnet_lite.convert_state_dict(state)
    target = jax.eval_shape(EfficientNet("lite0").init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    from frozen_det.checkpoints.mapping import assign_by_path

    with pytest.raises(CheckpointMismatchError, match=r"_blocks\.99\._se_reduce\.weight"):
        assign_by_path(target, mapped, source="test")
    with pytest.raises(ValueError, match="not an EfficientNet-Lite variant"):
        efficientnet_lite.convert_state_dict(state, "b0")
