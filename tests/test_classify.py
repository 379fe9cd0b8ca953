"""`python -m frozen_det.classify` with the packaged ImageNet EfficientNet-Lite0 on real photos,
and converted checkpoints loaded through the config field."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from frozen_det.checkpoints.pretrained import load_backbone_variables
from frozen_det.classify import classify
from frozen_det.models.backbones.resnet import ResNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LITE0_CONFIG = os.path.join(ROOT, "configs/backbones/efficientnet_lite0_imagenet.py")
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    data = pytest.importorskip("skimage.data")
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("chelsea", "coffee"):
        paths[name] = str(folder / f"{name}.png")
        Image.fromarray(getattr(data, name)()).save(paths[name])
    return paths


def _load_config(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_packaged_lite0_recognises_real_photos(photos):
    results = classify(_load_config(LITE0_CONFIG), [photos["chelsea"], photos["coffee"]])
    cat, coffee = ({c for c, _ in r["top5"]} for r in results)
    assert cat & CAT_CLASSES, results[0]
    assert coffee & COFFEE_CLASSES, results[1]
    probs = [p for _, p in results[1]["top5"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6


def test_classify_command_prints_one_json_line_per_image(photos):
    out = subprocess.run(
        [sys.executable, "-m", "frozen_det.classify", "--config", LITE0_CONFIG, photos["coffee"]],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and lines[0]["image"] == photos["coffee"]
    assert len(lines[0]["top5"]) == 5 and lines[0]["top5"][0][0] in COFFEE_CLASSES


def test_converted_torchvision_checkpoint_loads_by_config_field(tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import convert_checkpoint
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    pth = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), pth)
    out = tmp_path / "converted"
    assert (
        convert_checkpoint.main(
            ["--format", "torchvision_resnet", "--depth", "18", "--input", str(pth), "--output", str(out)]
        )
        == 0
    )

    # Without the ImageNet head and with adapters: the head is skipped, adapters start at zero.
    model = ResNet(18, num_classes=None, adapters=True, freeze="all")
    variables, preprocessing = load_backbone_variables(str(out), model)
    np.testing.assert_array_equal(
        variables["params"]["stage3"]["block1"]["conv2"]["kernel"],
        reference.layer3[1].conv2.weight.detach().numpy().transpose(2, 3, 1, 0),
    )
    assert "classifier" not in variables["params"]
    assert not np.any(variables["params"]["stage1"]["block0"]["adapter"]["conv"]["kernel"])
    np.testing.assert_allclose(preprocessing.mean, (123.675, 116.28, 103.53), rtol=1e-6)

    with pytest.raises(ValueError, match="choose one of"):  # wrong depth for the checkpoint
        load_backbone_variables(str(out), ResNet(19, num_classes=None))
    with pytest.raises(Exception, match="have no value in the checkpoint|match no model variable"):
        load_backbone_variables(str(out), ResNet(34, num_classes=None))


def test_missing_checkpoint_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="convert_checkpoint.py"):
        load_backbone_variables(str(tmp_path / "nothing"), ResNet(18))
