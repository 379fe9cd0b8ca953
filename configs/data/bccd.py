"""BCCD blood cells (Pascal-VOC folder, 364 images, 3 classes, boxes only; MIT licence,
https://github.com/Shenggan/BCCD_Dataset, its `BCCD/` folder).

    python -m frozen_det.data.show --config configs/data/bccd.py --num 4 --output /tmp/bccd

The folder: `--config.data.path=DIR`, or the environment variable BCCD_DIR, or `datasets/bccd`
inside this repository (e.g. `git clone https://github.com/Shenggan/BCCD_Dataset` and link its
BCCD/ folder there).
"""

import os

from frozen_det import config_defaults as d

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_path() -> str:
    return os.environ.get("BCCD_DIR") or os.path.join(REPOSITORY, "datasets", "bccd")


def get_config(arg=None):
    config = d.ConfigDict()
    config.data = d.ConfigDict(
        dict(
            source="voc_folder",
            path=default_path(),
            train_split="trainval",
            eval_split="test",
            class_names=("Platelets", "RBC", "WBC"),
            canvas=512,
            batch_size=8,
            eval_batch_size=8,
            max_instances=100,
            with_masks=False,
            augment=dict(hflip=True, scale_min=0.1, scale_max=2.0, copy_paste=False),
        )
    )
    return d.complete(config)
