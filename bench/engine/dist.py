"""Scale-out over ``torchrun``: samples are sharded by index, gathered on rank 0.

Because every sample's randomness is keyed by (seed, index) alone, the
gathered set is identical whatever the world size.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init(device: str = "cpu"):
    """Join the process group when launched by torchrun; returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if str(device).startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(n: int, rank: int, world: int) -> torch.Tensor:
    return torch.arange(rank, n, world, dtype=torch.int64)


def gather(indices: torch.Tensor, rows: dict, world: int) -> dict:
    """Gather per-index tensors from every rank and put them back in index order."""
    if world == 1:
        return rows
    parts = [None] * world
    dist.all_gather_object(parts, (indices, {k: (v.cpu() if v is not None else None) for k, v in rows.items()}))
    idx = torch.cat([p[0] for p in parts])
    order = torch.argsort(idx)
    return {k: (None if parts[0][1][k] is None else torch.cat([p[1][k] for p in parts])[order]) for k in rows}


def errors(error: BaseException | None, world: int) -> list[tuple[int, str]]:
    """Collective: each rank passes the exception it met (or None) and every rank gets
    ``[(rank, "Type: message")]`` for the ranks that failed. Call it on every rank
    before collectives a failing rank would skip, so no rank is left waiting."""
    mine = None if error is None else f"{type(error).__name__}: {error}"
    parts = [mine]
    if world > 1:
        parts = [None] * world
        dist.all_gather_object(parts, mine)
    return [(r, p) for r, p in enumerate(parts) if p is not None]


def all_sum(value: float, world: int) -> float:
    if world == 1:
        return value
    parts = [None] * world
    dist.all_gather_object(parts, float(value))
    return float(sum(parts))


def barrier(world: int):
    if world > 1:
        dist.barrier()


def finish(world: int):
    """Leave the process group together: a rank that exits while another still works makes
    gloo's threads abort the process (``terminate called without an active exception``)."""
    if world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
