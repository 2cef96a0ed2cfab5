"""torchrun support for ``pndm sample``: ranks from the environment, one process group, sums;
and the refusal of one-process commands under torchrun.

Each rank takes its device from ``LOCAL_RANK`` (NCCL on CUDA, gloo on the CPU) and a strided share
of the seeds (``seeds[rank::world]``); since an image depends on its seed alone, the set of images
is the same for any world size and batch size. torchrun ends every rank when one fails, so an
error on one rank fails the job instead of hanging it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")
TIMEOUT = timedelta(minutes=30)  # a rank may load and hash a large model before the first barrier


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job; one process outside torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @classmethod
    def from_env(cls) -> Ranks:
        """Read torchrun's RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE (absent: one)."""
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
        defaults = (0, 1, 0, 1)
        values = [_env_int(name, default) for name, default in zip(names, defaults, strict=True)]
        ranks = cls(*values)
        if not (0 <= ranks.rank < ranks.world and 0 <= ranks.local_rank < ranks.local_world):
            raise ValueError(f"inconsistent torchrun environment: {ranks}")
        return ranks

    @property
    def many(self) -> bool:
        return self.world > 1

    @property
    def lead(self) -> bool:
        """Rank 0: the one that writes shared files and prints."""
        return self.rank == 0

    def share(self, items: list[T]) -> list[T]:
        return items[self.rank :: self.world]


def refuse_ranks(command: str, would: str) -> None:
    """Refuse to run ``command``, a one-process command, under torchrun (a world size above 1),
    where every rank ``would`` do the same."""
    ranks = Ranks.from_env()
    if ranks.many:
        raise ValueError(
            f"{command} runs in one process, not under torchrun (WORLD_SIZE={ranks.world}): "
            f"every rank would {would}; run it without torchrun"
        )


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise ValueError(f"environment variable {name}={text!r} must be a whole number")
    return int(text)


def start(ranks: Ranks, device: Any) -> None:
    """Join the process group (only with several ranks)."""
    import torch
    import torch.distributed as dist

    if ranks.many and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL's collectives run on the current device
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)


def stop(device: Any = None) -> None:
    """Leave the process group; with ``device`` (a run that finished) after a barrier, so that no
    rank tears gloo down while another still talks to it (seen once: a rank aborted at exit with
    "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if device is not None:
            barrier(device)
        dist.destroy_process_group()


def gather(value: int, device: Any) -> list[int]:
    """``value`` of every rank, in rank order (``[value]`` with one rank)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    mine = torch.tensor([value], dtype=torch.int64, device=_comm_device(device))
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return [int(v) for v in every]


def barrier(device: Any) -> None:
    gather(0, device)  # an all-gather is a barrier that works on gloo and NCCL alike


def _comm_device(device: Any) -> Any:
    import torch.distributed as dist

    return device if dist.get_backend() == "nccl" else "cpu"
