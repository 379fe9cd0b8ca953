"""BCCD blood cells (Pascal-VOC folder, 364 images, 3 classes, boxes only).

    python -m frozen_det.data.inspect --config configs/data/bccd.py --num 4 --output /tmp/bccd

`path` defaults to ../shared/datasets/bccd next to the repository; override with
--config.data.path=DIR.
"""

import os

import ml_collections

_DEFAULT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "datasets", "bccd")


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(dict(
        source="voc_folder", path=os.path.normpath(_DEFAULT), train_split="trainval", eval_split="test",
        class_names=["Platelets", "RBC", "WBC"], canvas=512, batch_size=8, eval_batch_size=8,
        max_instances=100, with_masks=False,
        augment=dict(hflip=True, scale_min=0.1, scale_max=2.0, copy_paste=False),
    ))
    return config
