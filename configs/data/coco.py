"""COCO 2017 through TFDS (boxes only: TFDS coco/2017 has no instance masks), LSJ 1024
(docs/reference.md §2.11). Arguments: "folder" reads a local COCO folder with masks instead
(data.path = a folder with annotations/instances_{train2017,val2017}.json and train2017/,
val2017/), and enables masks; "copy_paste" adds Copy-Paste (needs "folder").

    python -m frozen_det.data.show --config configs/data/coco.py:folder --num 4 --output /tmp/coco \
        --config.data.path=/data/coco
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    args = set(filter(None, (arg or "").split(",")))
    config = d.ConfigDict()
    data = dict(
        source="tfds",
        name="coco/2017",
        path="",
        train_split="train",
        eval_split="validation",
        canvas=1024,
        batch_size=64,
        eval_batch_size=8,
        max_instances=100,
        with_masks=False,
        mask_size=112,
        augment=dict(hflip=True, scale_min=0.1, scale_max=2.0, copy_paste="copy_paste" in args),
    )
    if "folder" in args:
        data.update(source="coco_folder", name="", train_split="train2017", eval_split="val2017", with_masks=True)
    config.data = d.ConfigDict(data)
    return d.complete(config)
