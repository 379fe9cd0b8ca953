"""timm converter: our ResNet-18 and EfficientNet-B0 / Lite0 against timm's ``resnet18``,
``tf_efficientnet_b0`` and ``tf_efficientnet_lite0`` with the same random weights (logits and
pyramid features), the models timm has but we do not, unknown names, and a converted directory
used as `model.backbone.init_checkpoint`. Nothing is downloaded: every timm model is built with
``pretrained=False``."""

import functools
import os
import sys

import jax
import numpy as np
import pytest

from frozen_det.checkpoints import timm as timm_checkpoints
from frozen_det.checkpoints.mapping import CheckpointMismatchError
from frozen_det.checkpoints.pretrained import load_backbone_variables
from frozen_det.models.backbones.resnet import ResNet

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SIZE = 64


@functools.lru_cache(maxsize=None)
def _reference(name):
    """(timm model in eval mode, its state dict as numpy) with random weights and BatchNorm
    statistics taken from a 16-image batch, so that BN matters and activations keep their
    scale through the depth (the residual branches' last BN small, as in trained networks)."""
    rng = np.random.default_rng(len(name))
    torch.manual_seed(len(name))
    model = timm.create_model(name, pretrained=False)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                last = module_name.endswith("bn3") or (
                    module_name.startswith("blocks.0.") and module_name.endswith("bn2")
                )
                low, high = (0.1, 0.3) if last else (0.5, 1.0)
                module.weight.copy_(torch.from_numpy(rng.uniform(low, high, module.weight.shape)))
                module.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, module.bias.shape)))
                module.momentum = None  # cumulative average: the one batch sets the statistics
        model.train()
        model(torch.from_numpy(rng.normal(size=(16, 3, SIZE, SIZE)).astype(np.float32)))
    model.eval()
    return model, {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_b0", "tf_efficientnet_lite0"])
def test_matches_timm_logits_and_features(name):
    reference, state = _reference(name)
    variables = timm_checkpoints.load_timm_variables(state, name)
    model = timm_checkpoints.backbone(name)
    x = np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    features, logits = jax.jit(lambda v, x: model.apply(v, x, return_logits=True))(variables, x)
    with torch.no_grad():
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        expected = reference(xt).numpy()
        # Strides 2, 4, ..., 32: our levels 2..5 are the last four.
        maps = [m.numpy().transpose(0, 2, 3, 1) for m in reference.forward_intermediates(xt, intermediates_only=True)]
    diffs = [float(np.abs(np.asarray(logits) - expected).max())]
    diffs += [float(np.abs(np.asarray(features[level]) - m).max()) for level, m in zip((2, 3, 4, 5), maps[1:])]
    print(f"{name}: max |diff| logits {diffs[0]:.1e}, levels 2-5 {max(diffs[1:]):.1e}", np.abs(expected).max())
    assert np.abs(expected).max() > 0.3 and np.abs(expected[0] - expected[1]).max() > 0.1  # not trivially equal
    assert max(diffs) <= 1e-4


def test_resnet50_names_and_shapes():
    """The bottleneck layout (the function itself is torchvision's, tests/models/test_resnet.py)."""
    state = {k: v.numpy() for k, v in timm.create_model("resnet50", pretrained=False).state_dict().items()}
    variables = timm_checkpoints.load_timm_variables(state, "resnet50.a1_in1k")
    np.testing.assert_array_equal(
        variables["params"]["stage3"]["block5"]["conv2"]["kernel"], state["layer3.5.conv2.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["stage4"]["block0"]["proj_bn"]["var"], state["layer4.0.downsample.1.running_var"]
    )


def test_models_that_are_not_ours_are_refused_by_name():
    assert timm_checkpoints.architecture("tf_efficientnet_b3.ap_in1k") == {"type": "efficientnet", "variant": "b3"}
    assert timm_checkpoints.architecture("resnet101") == {"type": "resnet", "depth": 101}
    with pytest.raises(ValueError, match="pads its convolutions symmetrically.*tf_efficientnet_lite0"):
        timm_checkpoints.architecture("efficientnet_lite0")
    with pytest.raises(ValueError, match=r"'resnet50d' is not one of our backbones; convertible: resnet18"):
        timm_checkpoints.architecture("resnet50d")


def test_unknown_names_are_reported():
    _, resnet = _reference("resnet18")
    with pytest.raises(KeyError, match=r"timm resnet18 .*head\.fc\.weight"):
        timm_checkpoints.convert_state_dict({**resnet, "head.fc.weight": np.zeros((10, 512))}, "resnet18")
    with pytest.raises(CheckpointMismatchError, match=r"params/stage1/block0/se\.fc1/kernel"):  # seresnet18's
        timm_checkpoints.load_timm_variables({**resnet, "layer1.0.se.fc1.weight": np.zeros((4, 64, 1, 1))}, "resnet18")
    _, lite = _reference("tf_efficientnet_lite0")
    extra = {
        "blocks.1.0.attn.weight": np.zeros((4,)),  # no such layer
        "blocks.6.1.conv_pw.weight": np.zeros((1,)),  # no such block in Lite0
        "blocks.1.0.se.conv_reduce.weight": np.zeros((4, 16, 1, 1)),  # Lite has no squeeze-excite
    }
    with pytest.raises(CheckpointMismatchError) as info:
        timm_checkpoints.load_timm_variables({**lite, **extra}, "tf_efficientnet_lite0")
    message = str(info.value)
    assert "blocks.1.0.attn.weight" in message and "blocks.6.1.conv_pw.weight" in message
    assert "params/stage1/block2a/se_reduce/kernel" in message


def test_converted_directory_is_an_init_checkpoint(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import convert_checkpoint
    finally:
        sys.path.pop(0)
    _, state = _reference("resnet18")
    path = tmp_path / "model.safetensors"
    safetensors_numpy.save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    out = tmp_path / "converted"
    assert (
        convert_checkpoint.main(
            ["--format", "timm", "--model", "resnet18.a1_in1k", "--input", str(path), "--output", str(out)]
        )
        == 0
    )

    # A detection backbone: no ImageNet head, FiLM adapters at their identity initialisation.
    variables, preprocessing = load_backbone_variables(str(out), ResNet(18, num_classes=None, adapters="film"))
    np.testing.assert_array_equal(
        variables["params"]["stage2"]["block1"]["conv1"]["kernel"], state["layer2.1.conv1.weight"].transpose(2, 3, 1, 0)
    )
    assert "classifier" not in variables["params"]
    film = variables["params"]["stage4"]["block1"]["adapter"]
    assert np.all(film["scale"] == 1.0) and np.all(film["shift"] == 0.0) and film["scale"].shape == (512,)
    np.testing.assert_allclose(preprocessing.mean, (123.675, 116.28, 103.53), rtol=1e-6)
    np.testing.assert_allclose(preprocessing.std, (58.395, 57.12, 57.375), rtol=1e-6)
    # The Lite tags expect 0.5 / 0.5 on [0, 1] pixels.
    assert timm_checkpoints.preprocessing("tf_efficientnet_lite0.in1k").mean == (127.5,) * 3
