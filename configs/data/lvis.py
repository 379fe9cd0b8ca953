"""LVIS v1 through TFDS `lvis` (boxes + masks, 1203 classes), LSJ 1024, more instances per
image (what does not fit in max_instances is counted). Argument "folder": a local folder with
the LVIS json files and COCO 2017 images (data.path).

    python -m frozen_det.data.show --config configs/data/lvis.py:folder --num 4 --output /tmp/lvis \
        --config.data.path=/data/lvis
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    args = set(filter(None, (arg or "").split(",")))
    config = d.ConfigDict()
    data = dict(
        source="tfds",
        name="lvis",
        train_split="train",
        eval_split="validation",
        canvas=1024,
        batch_size=64,
        eval_batch_size=8,
        max_instances=300,
        with_masks=True,
        mask_size=112,
        augment=dict(hflip=True, scale_min=0.1, scale_max=2.0, copy_paste="copy_paste" in args),
    )
    if "folder" in args:
        data.update(
            source="coco_folder",
            name="",
            train_split="train",
            eval_split="val",
            coco_files=dict(train=("lvis_v1_train.json", "train2017"), val=("lvis_v1_val.json", "val2017")),
        )
    config.data = d.ConfigDict(data)
    return d.complete(config)
