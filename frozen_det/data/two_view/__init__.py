"""PreDet's two-view data (Ramanathan et al., ICCV 2021, sec. 3-4): two augmented views of one
image with index-aligned query boxes, from image folders, COCO / VOC folders or TFDS datasets;
unsupervised region proposals and their cache for the queries. Batch contract:
frozen_det.data.two_view.pipelines."""

from frozen_det.data.two_view import config
from frozen_det.data.two_view.pipelines import build_eval_pipeline, build_train_pipeline

__all__ = ["build_eval_pipeline", "build_train_pipeline", "config"]
