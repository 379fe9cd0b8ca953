"""Offline steps (pseudo-boxes, proposal caches) split over the hosts of a TPU pod slice or a
multi-GPU job: every host runs the same command, takes a contiguous part of the images by its
`jax.process_index()`, writes its own shard file beside the output in a shared directory, and
whichever host finishes last (every shard marked done) merges the shards into the output.

A host's shard is appended as it goes and read back when the command is run again, so a
preempted host resumes where its shard ends; the merge is an atomic rename, so two hosts
finishing at once cannot leave half a file.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import multiprocessing
import os


@dataclasses.dataclass(frozen=True)
class ProcessSlot:
    """This process's place among `count` processes that share one offline step."""

    index: int = 0
    count: int = 1

    def part(self, total: int) -> range:
        """The contiguous part of `total` items that is this process's."""
        return range(self.index * total // self.count, (self.index + 1) * total // self.count)

    def shard_path(self, output: str, suffix: str) -> str:
        """This process's shard of `output`: OUTPUT.shards/process-00001-of-00004SUFFIX."""
        return os.path.join(shard_dir(output), f"process-{self.index:05d}-of-{self.count:05d}{suffix}")

    def all_shard_paths(self, output: str, suffix: str) -> list[str]:
        return [ProcessSlot(i, self.count).shard_path(output, suffix) for i in range(self.count)]


def shard_dir(output: str) -> str:
    return os.path.abspath(output) + ".shards"


def other_layouts(output: str, slot: ProcessSlot) -> list[str]:
    """Shard files of `output` written by another number of processes (their parts differ, so
    they cannot be resumed by this one)."""
    mine = f"-of-{slot.count:05d}"
    return sorted(p for p in glob.glob(os.path.join(shard_dir(output), "process-*")) if mine not in os.path.basename(p))


def process_slot(distributed: bool, coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> ProcessSlot:
    """The slot of this process: (0, 1) alone; with `distributed`, jax.distributed's (its
    cluster detection on TPU pods, SLURM and the like, or the coordinator address, process count
    and id given)."""
    if not distributed:
        return ProcessSlot()
    import jax

    kwargs = {}
    if coordinator:
        kwargs = dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    jax.distributed.initialize(**kwargs)
    return ProcessSlot(jax.process_index(), jax.process_count())


def chunks(items, size: int):
    """Lists of `size` consecutive items (the last one shorter)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def host_pool(workers: int) -> concurrent.futures.Executor:
    """`workers` processes for an offline step's host part (spawned: JAX's threads do not
    survive a fork), or, for 0, an executor that runs each job in this process when submitted."""
    if workers > 0:
        return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return _InlineExecutor()


class _InlineExecutor(concurrent.futures.Executor):
    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future
