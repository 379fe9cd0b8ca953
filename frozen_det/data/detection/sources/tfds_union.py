"""Several TFDS detection datasets of one kind and label set read as one source: Pascal VOC
2007 + 2012 trainval ("07+12"), the training set of most VOC transfer tables (DAP sec. 4,
Li et al. 2019 sec. 4).

    data.source = "tfds"
    data.name = "voc/2007+voc/2012"
    data.train_split = "train+validation"      # every member's train+validation
    data.eval_split = "voc/2007:test"          # one member's split: NAME:SPLIT[,NAME:SPLIT...]

A split is either a TFDS split read from every member, or a comma-separated list of
`NAME:SPLIT` parts naming members (VOC 2012's test split has no labels in TFDS, so "test"
alone would add unlabelled images). Shuffled reads interleave the members at random in
proportion to their sizes (seeded, so resuming replays the same order); unshuffled reads
(evaluation) concatenate them. Image ids must differ between members (VOC's do: 2007 files
are numbered 000005..009963, 2012 ones 2007_000027.. and later); a clash is an error.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from frozen_det.data.detection.sources.tfds_source import TfdsSource
from frozen_det.data.source import DataError, Source


class TfdsUnionSource(Source):
    random_access = False

    def __init__(self, members: dict[str, TfdsSource]):
        self.members = dict(members)
        first_name, first = next(iter(self.members.items()))
        for name, member in self.members.items():
            if member.kind != first.kind or member.info.class_names != first.info.class_names:
                raise DataError(
                    f"data.name={'+'.join(self.members)!r}: {name} and {first_name} have different kinds or "
                    "class names; a union needs one label set"
                )
        self.name = "+".join(self.members)
        self.kind = first.kind
        self.info = first.info
        self._first = first

    def parts(self, split: str) -> list[tuple[TfdsSource, str]]:
        """(member, its split) pairs that `split` reads (module docstring)."""
        if ":" not in split:
            return [(member, split) for member in self.members.values()]
        out = []
        for part in split.split(","):
            name, _, member_split = part.strip().rpartition(":")
            if name not in self.members:
                raise DataError(
                    f"split {split!r}: {name!r} is not one of data.name's datasets {sorted(self.members)}; "
                    "write NAME:SPLIT[,NAME:SPLIT...]"
                )
            out.append((self.members[name], member_split))
        return out

    def num_records(self, split: str) -> int:
        return sum(member.num_records(s) for member, s in self.parts(split))

    def stream(self, split, shard, seed, buffer, repeats=None):
        parts = self.parts(split)
        sizes = [member.num_records(s) for member, s in parts]
        starts = np.cumsum([0, *sizes])
        streams = [
            member.stream(s, shard, seed, buffer, None if repeats is None else repeats[starts[i] : starts[i + 1]])
            for i, (member, s) in enumerate(parts)
        ]
        if len(streams) == 1:
            return streams[0]
        if seed is None:
            out = streams[0]
            for ds in streams[1:]:
                out = out.concatenate(ds)
            return out
        read = sizes if repeats is None else [int(np.sum(repeats[a:b])) for a, b in zip(starts[:-1], starts[1:])]
        weights = np.asarray(read, np.float64) / max(1, sum(read))
        return tf.data.Dataset.sample_from_datasets(
            streams, weights=weights.tolist(), seed=seed, stop_on_empty_dataset=False
        )

    def decode(self, record, with_masks):
        return self._first.decode(record, with_masks)

    def _record_class_counts(self, split):
        return [counts for member, s in self.parts(split) for counts in member.record_class_counts(s)]

    def coco_ground_truth(self, split):
        images, annotations = [], []
        for member, s in self.parts(split):
            truth = member.coco_ground_truth(s)
            images.extend(truth["images"])
            for a in truth["annotations"]:
                annotations.append(dict(a, id=len(annotations) + 1))
            categories = truth["categories"]
        ids = [im["id"] for im in images]
        if len(set(ids)) != len(ids):
            clash = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise DataError(f"tfds {self.name} split {split!r}: image ids {clash} occur in more than one dataset")
        return {"images": images, "annotations": annotations, "categories": categories}

    def describe_record(self, split, index):
        for member, s in self.parts(split):
            n = member.num_records(s)
            if index < n:
                return member.describe_record(s, index)
            index -= n
        return f"record {index} past the end of tfds {self.name} {split!r}"
