"""torchvision ResNet state dicts (`resnet18` ... `resnet152`, and any `.pth` with the same
names) -> our `ResNet(variant="v1.5")` variables.

Names map one to one (`layer{k}.{i}.conv1` -> `stage{k}/block{i}/conv1`, `downsample.0/1` ->
`proj_conv/proj_bn`, `fc` -> `classifier`); convolution kernels go from torch OIHW to HWIO and
dense kernels are transposed.
"""

from __future__ import annotations

import re

import numpy as np

_BN_FIELDS = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


def _our_module(torch_module: str) -> str:
    if torch_module in ("conv1", "bn1"):
        return f"stem/{torch_module}"
    if torch_module == "fc":
        return "classifier"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", torch_module)
    if not m:
        raise KeyError(torch_module)
    stage, block, inner = m.groups()
    inner = {"downsample.0": "proj_conv", "downsample.1": "proj_bn"}.get(inner, inner)
    return f"stage{stage}/block{block}/{inner}"


def convert_torchvision_resnet(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Returns {'params/...': array, 'batch_stats/...': array} for `assign_by_path`.

    Raises KeyError listing every torch name it cannot place.
    """
    out: dict[str, np.ndarray] = {}
    unknown = []
    for name, value in state_dict.items():
        module, _, field = name.rpartition(".")
        if field == "num_batches_tracked":
            continue
        try:
            ours = _our_module(module)
        except KeyError:
            unknown.append(name)
            continue
        leaf = ours.rpartition("/")[2]
        if leaf.startswith("bn") or leaf == "proj_bn":
            if field not in _BN_FIELDS:
                unknown.append(name)
                continue
            collection, our_field = _BN_FIELDS[field]
            out[f"{collection}/{ours}/{our_field}"] = value
        elif field == "weight":
            kernel = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
            out[f"params/{ours}/kernel"] = kernel
        elif field == "bias":
            out[f"params/{ours}/bias"] = value
        else:
            unknown.append(name)
    if unknown:
        raise KeyError(f"torchvision ResNet entries with no place in our ResNet: {unknown}")
    return out
