"""Class activation maps (Zhou et al. 2016, "Learning deep features for discriminative
localization"; as DAP uses them: Zhong et al., CVPR 2021, sec. 3.1 step 2) of any classifier of
ours: the linear classifier applied as a 1x1 convolution to the map it pools,

    CAM_c(y, x) = sum_d F(y, x, d) W(d, c) + b_c,

so that the spatial mean of CAM_c is the logit of class c (the classifier pools by a plain mean).

Classifiers: the model of a classification task (`model.type="classifier"`: the backbone's
pooling and classifier, or a detector tap classifier on its "conv5" tap) with its variables:
a classification run's, or a classifier config's pretrained ones (e.g. configs/backbones/
efficientnet_lite0_imagenet.py, the packaged ImageNet EfficientNet-Lite0); the entry point
`python -m frozen_det.pseudo_boxes` opens either.

Images are resized so that their shorter side is a given scale, normalised, zero-padded at the
bottom and right to a multiple of the stride (32) as the DAP authors' release does
(github.com/mikuhatsune/dap, code/compute_box_imagenet1k.py), and optionally also run
left-right flipped (the flipped map flipped back and averaged: the CAM is linear in the map).
How the scales are combined is the pseudo-box variant's business (frozen_det.localization.cam_boxes).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

STRIDE = 32  # the pooled map of every backbone family we build is at stride 32


@dataclasses.dataclass(frozen=True)
class CamClassifier:
    """What CAMs need of a classifier: `maps_and_logits(images)` (normalised float32 images
    [B, H, W, 3] -> (pooled map [B, H/32, W/32, D], logits [B, C]), both float32), the linear
    layer (`kernel` [D, C], `bias` [C]), the input normalisation and the class names."""

    maps_and_logits: Callable
    kernel: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    class_names: tuple

    @property
    def num_classes(self) -> int:
        return self.kernel.shape[1]

    def normalise(self, image_u8: np.ndarray) -> np.ndarray:
        return (np.asarray(image_u8, np.float32) - self.mean) / self.std


def cam_classifier_from_model(model, variables, mean, std, class_names) -> CamClassifier:
    """A CamClassifier of a classification task's model (frozen_det.models.classifier) and its
    variables: the backbone's own classifier, or a tap classifier on the detector's C5."""
    params = variables["params"]
    if "tap_classifier" not in params:
        layer = params["backbone"]["classifier"]
    elif getattr(model, "tap", None) == "conv5":
        layer = params["tap_classifier"]
    else:
        raise ValueError(
            f"config.model.features={getattr(model, 'tap', None)!r}: class activation maps need a spatial "
            "map before the pooling; a detector tap classifier has one only on the 'conv5' tap"
        )

    if jax.local_device_count() > 1:  # replicated, so that batches split over the local devices meet them
        variables = jax.device_put(variables, _local_sharding(jax.sharding.PartitionSpec()))

    @jax.jit
    def maps_and_logits(variables, images):
        out = model.apply(variables, {"image": images}, train=False, with_maps=True)
        return out["pre_pool_map"].astype(jnp.float32), out["logits"].astype(jnp.float32)

    return CamClassifier(
        lambda images: maps_and_logits(variables, images),
        np.asarray(layer["kernel"], np.float32),
        np.asarray(layer["bias"], np.float32),
        np.asarray(mean, np.float32),
        np.asarray(std, np.float32),
        tuple(class_names),
    )


def resize_shorter_side(image_u8: np.ndarray, short_side: int) -> np.ndarray:
    """Bilinear resize (PIL) so that the shorter side is `short_side`, aspect kept."""
    h, w = image_u8.shape[:2]
    s = short_side / min(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(np.asarray(image_u8, np.uint8)).resize(size, Image.BILINEAR))


def pad_to_stride(x: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Zero padding at the bottom and right up to a multiple of `stride` (after normalisation,
    so the padding is the mean colour)."""
    h, w = x.shape[:2]
    return np.pad(x, ((0, -h % stride), (0, -w % stride), (0, 0)))


def feature_map(clf: CamClassifier, image_u8: np.ndarray, short_side: int, flip: bool) -> np.ndarray:
    """The pooled map [h, w, D] of the image at `short_side` (padded to the stride), averaged
    with the flipped image's map flipped back when `flip`."""
    x = pad_to_stride(clf.normalise(resize_shorter_side(image_u8, short_side)))
    batch = np.stack([x, x[:, ::-1]]) if flip else x[None]
    maps, _ = clf.maps_and_logits(batch)
    maps = np.asarray(jax.device_get(maps))
    return 0.5 * (maps[0] + maps[1, :, ::-1]) if flip else maps[0]


def batched_feature_maps(
    clf: CamClassifier, images_u8: list, scales, flip: bool, batch_size: int = 8, pad_multiple: int = STRIDE
) -> list[list[np.ndarray]]:
    """`feature_maps` of many images at once: per scale, the images whose padded inputs have
    the same shape go through the classifier together, `batch_size` images per call (the last
    call's batch filled with zeros, so that each input shape compiles once), spread over the
    local devices. -> per image, its pooled map [h, w, D] at every scale.

    With `pad_multiple` = 32 (the stride) every input is padded as `feature_map` pads it and the
    maps are those of one image at a time (to float rounding). A larger multiple (e.g. 128)
    bounds the number of input shapes, and so of compilations on an accelerator, for datasets
    of many aspect ratios; each map is cropped to its image's own stride-32 grid, but its cells
    near the bottom and right edges see more padding than the release's (numbers differ there).
    """
    if pad_multiple % STRIDE:
        raise ValueError(f"pad_multiple={pad_multiple}: a multiple of the stride ({STRIDE})")
    rows = batch_size * (2 if flip else 1)
    rows += -rows % jax.local_device_count()
    sharding = _local_sharding(jax.sharding.PartitionSpec("batch"))
    out = [[None] * len(scales) for _ in images_u8]
    for k, short_side in enumerate(scales):
        groups = collections.defaultdict(list)  # padded input shape -> [(image index, input, grid hw)]
        for i, image in enumerate(images_u8):
            x = clf.normalise(resize_shorter_side(image, short_side))
            grid = (-(-x.shape[0] // STRIDE), -(-x.shape[1] // STRIDE))
            groups[(x.shape[0] + -x.shape[0] % pad_multiple, x.shape[1] + -x.shape[1] % pad_multiple)].append(
                (i, x, grid)
            )
        for (height, width), members in groups.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                batch = np.zeros((rows, height, width, 3), np.float32)
                for j, (_, x, _) in enumerate(chunk):
                    batch[j, : x.shape[0], : x.shape[1]] = x
                    if flip:  # the padded input mirrored, padding included, as feature_map does
                        batch[len(chunk) + j] = batch[j, :, ::-1]
                maps = np.asarray(jax.device_get(clf.maps_and_logits(jax.device_put(batch, sharding))[0]))
                for j, (i, _, (gh, gw)) in enumerate(chunk):
                    m = 0.5 * (maps[j] + maps[len(chunk) + j, :, ::-1]) if flip else maps[j]
                    out[i][k] = m[:gh, :gw]
    return out


def _local_sharding(spec) -> jax.sharding.NamedSharding:
    """`spec` on a one-axis ("batch") mesh of this process's devices."""
    return jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(jax.local_devices()), ("batch",)), spec)


def cam_of(clf: CamClassifier, maps: np.ndarray, class_id: int) -> np.ndarray:
    """The un-normalised CAM [h, w] of `class_id` from a pooled map [h, w, D]."""
    return maps @ clf.kernel[:, class_id] + clf.bias[class_id]


def min_max_normalise(cam: np.ndarray) -> np.ndarray:
    """DAP Eq. 1: affine map of the extreme values to [0, 1] (a constant map becomes zeros)."""
    lo, hi = float(cam.min()), float(cam.max())
    return (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)


def resize_map(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (PIL, half-pixel centres) resize of a float map."""
    return np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR))


def feature_maps(clf: CamClassifier, image_u8: np.ndarray, scales, flip: bool) -> list:
    """`feature_map` at every scale (computed once per image, shared by all classes)."""
    return [feature_map(clf, image_u8, s, flip) for s in scales]


def top1_class(clf: CamClassifier, maps: list) -> int:
    """The classifier's top-1 class from the pooled maps (the mean over scales of each map's
    spatial mean through the linear layer: the mean of the CAMs' spatial means)."""
    logits = np.mean([m.mean(axis=(0, 1)) @ clf.kernel + clf.bias for m in maps], axis=0)
    return int(np.argmax(logits))


def cam_in_image_pixels(clf: CamClassifier, maps: list, image_hw, scales, class_id: int) -> np.ndarray:
    """The paper's CAM (sec. 3.1, sec. 4.1) from `feature_maps`: the un-normalised CAM of every
    scale brought to the original image's pixels (bilinear: upsampled to the padded input, the
    padding cropped, resized to the image), averaged, then min-max normalised (Eq. 1).
    -> float32 [H, W] in [0, 1]."""
    h, w = image_hw
    total = np.zeros((h, w), np.float32)
    for s, m in zip(scales, maps):
        cam = cam_of(clf, m, class_id)
        k = s / min(h, w)
        rh, rw = max(1, round(h * k)), max(1, round(w * k))  # as resize_shorter_side
        padded = resize_map(cam, cam.shape[0] * STRIDE, cam.shape[1] * STRIDE)
        total += resize_map(padded[:rh, :rw], h, w)
    return min_max_normalise(total / len(scales))


def cam_on_grid(clf: CamClassifier, maps: list, image_hw, scales, class_id: int) -> tuple[np.ndarray, float]:
    """The released code's CAM from `feature_maps`: per scale the CAM of the flip-averaged map,
    min-max normalised per scale, nearest-upsampled to the largest scale's stride-32 grid
    (padding included) and averaged. -> (float32 [h, w] in [0, 1], original-image pixels per
    grid cell)."""
    cams = [min_max_normalise(cam_of(clf, m, class_id)) for m in maps]
    gh, gw = cams[int(np.argmax(scales))].shape
    grid = np.mean([_nearest(c, gh, gw) for c in cams], axis=0)
    return grid.astype(np.float32), STRIDE * min(image_hw) / max(scales)


def _nearest(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch.nn.functional.interpolate(mode="nearest"): source index floor(i * in / out)."""
    rows = np.floor(np.arange(height) * x.shape[0] / height).astype(int)
    cols = np.floor(np.arange(width) * x.shape[1] / width).astype(int)
    return x[rows][:, cols]
