"""Data sources selected by `config.data.source` (see :mod:`frozen_det.data.detection.sources.base`)."""

from __future__ import annotations

from frozen_det.data.detection.sources.base import DatasetInfo
from frozen_det.data.source import DataError, Source


def build_source(cfg, split: str | None = None) -> Source:
    """The source of a resolved `config.data` (frozen_det.data.detection.config.resolve)."""
    if cfg.source == "synthetic":
        from frozen_det.data.detection.sources.tfds_source import TfdsSource
        from frozen_det.data.offline import synthetic

        return TfdsSource(synthetic.build(cfg.synthetic, cfg.synthetic.data_dir or cfg.path))
    if cfg.source == "voc_folder":
        from frozen_det.data.detection.sources.voc_folder import VocFolderSource

        return VocFolderSource(
            cfg.path,
            class_names=list(cfg.class_names),
            difficult=cfg.voc_difficult,
            size_mismatch=cfg.voc_size_mismatch,
        )
    if cfg.source == "coco_folder":
        from frozen_det.data.detection.sources.coco_folder import CocoFolderSource

        src = CocoFolderSource(cfg.path, files={k: tuple(v) for k, v in cfg.coco_files.items()})
        first = split or cfg.train_split
        try:
            src.ensure_info(first)
        except DataError as first_error:
            if first == cfg.eval_split:
                raise
            try:
                src.ensure_info(cfg.eval_split)
            except DataError:
                raise first_error from None
        return src
    if cfg.source == "tfds":
        from frozen_det.data.detection.sources.tfds_source import TfdsSource
        from frozen_det.data.tfds import tfds_builder

        def member(name):
            return TfdsSource(
                tfds_builder(name, cfg.path), voc_difficult=cfg.voc_difficult, frequency_split=cfg.train_split
            )

        if "+" in cfg.name:  # several datasets as one, e.g. "voc/2007+voc/2012"
            from frozen_det.data.detection.sources.tfds_union import TfdsUnionSource

            return TfdsUnionSource({name: member(name) for name in cfg.name.split("+")})
        return member(cfg.name)
    if cfg.source == "tfds_pseudo_boxes":
        from frozen_det.data.detection.sources.tfds_pseudo_boxes import TfdsPseudoBoxSource
        from frozen_det.data.tfds import tfds_builder

        return TfdsPseudoBoxSource(tfds_builder(cfg.name, cfg.path), {k: tuple(v) for k, v in cfg.coco_files.items()})
    raise DataError(f"config.data.source={cfg.source!r} unknown")


__all__ = ["DataError", "DatasetInfo", "Source", "build_source"]
