"""Data-parallel training helpers (torch DDP under ``torchrun``) for :mod:`drive_segment_training.trainer`.

How a distributed run is defined (so that it equals the one-process run with the same
**global** batch, and can resume with another number of processes):

* ``TrainConfig.batch_size`` is the *global* batch ``B``; each of the ``W`` processes takes
  ``b = B / W`` samples per step (``B`` must be divisible by ``W``).
* The sample stream is the one of :class:`~drive_segment_training.datasets.InfiniteSampler`
  (position ``p`` -> dataset index); step ``i`` uses positions ``[i*B, (i+1)*B)`` and rank
  ``r`` takes ``[i*B + r*b, i*B + (r+1)*b)`` (:class:`RankSampler`). Augmentations are a pure
  function of ``(seed, index)``, so the union of the ranks' batches is exactly the
  one-process batch, for any ``W``; the learning-rate schedule and the iteration count are
  in global steps. Resuming at iteration ``i`` with another ``W`` continues the same stream.
* Losses are summed per rank and divided by the *global* element count (all-reduced), times
  ``W`` (DDP averages gradients over ranks): the gradient is the one of the global mean loss,
  whatever the split of valid pixels between ranks (:func:`global_mean_loss`).
* Model parameters are identical on all ranks (DDP broadcasts rank 0's at wrap time and
  all-reduces gradients); floating-point buffers (BatchNorm running statistics, updated from
  each rank's own batch) are broadcast from rank 0 after every step, so the EMA teacher, which
  is updated on every rank from the same student, stays identical everywhere
  (:func:`broadcast_buffers`, checked by :func:`state_checksum`).
* Rank 0 alone writes checkpoints, ``optimizer.pt``, metrics and logs; the other ranks wait at a
  barrier. All ranks read the checkpoint when resuming (one shared file system, as on a
  multi-GPU node).
* Backend: ``nccl`` on CUDA (device ``cuda:LOCAL_RANK``), ``gloo`` on the CPU. BatchNorm layers
  become ``SyncBatchNorm`` on CUDA; on the CPU (gloo) they normalise with per-rank batch
  statistics (a BatchNorm model then differs slightly from the one-process run; LayerNorm
  models such as the ViT backbones do not).

Launch: ``torchrun --standalone --nproc_per_node=N $(which drive-segment) train-teacher ...``
(torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
:func:`init_from_env` reads them). Without these variables everything here is a no-op and the
trainer runs exactly as before. :func:`drive_segment_training.ddp_launch.spawn_local` starts ``W``
local processes the same way without torchrun (tests, ``bench/bench_scale.py``).
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
import socket
from dataclasses import dataclass
from typing import Dict, Iterator

import numpy as np
import torch
import torch.distributed as dist

from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

__all__ = [
    "DistContext", "RankSampler", "all_reduce_sum", "barrier", "broadcast_buffers", "cleanup", "distributed_device",
    "free_port", "global_mean_loss", "init_from_env", "no_forward_buffer_sync", "per_rank_batch", "rank_seed",
    "state_checksum",
]


@dataclass
class DistContext:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: global rank (0 .. world_size-1). world_size: number of processes.
        local_rank: rank on this machine (selects ``cuda:local_rank``).
        backend: ``"nccl"`` / ``"gloo"`` or ``""`` when not distributed.
        owns_group: this context initialised the process group (and :func:`cleanup` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: writes checkpoints, metrics, logs."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise DriveSegmentError(f"distributed: environment variable {name}={value!r} is not an integer") from None


def init_from_env(device: torch.device, backend: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment, if any.

    Reads ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (and ``MASTER_ADDR`` / ``MASTER_PORT`` through
    ``init_method="env://"``). ``WORLD_SIZE`` unset or 1 -> a one-process context, nothing
    initialised. An already initialised default group is reused.

    Args:
        device: the training device (``cuda`` -> backend ``nccl``, ``cpu`` -> ``gloo``).
        backend: ``"auto"`` (from the device), ``"gloo"`` or ``"nccl"``.

    Returns:
        :class:`DistContext`.

    Raises:
        DriveSegmentError: inconsistent environment (rank outside the world), unknown backend,
        or the process group cannot be set up (message of the torch error on one line).
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise DriveSegmentError(f"distributed: RANK={rank} outside WORLD_SIZE={world}")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise DriveSegmentError(f"distributed: backend must be auto, gloo or nccl, got {backend!r}")
    if not dist.is_available():
        raise DriveSegmentError("distributed: this torch build has no torch.distributed")
    try:
        if backend == "nccl":
            torch.cuda.set_device(device)
            dist.init_process_group(backend, init_method="env://", device_id=device)
        else:
            dist.init_process_group(backend, init_method="env://")
    except Exception as exc:  # torch raises RuntimeError / ValueError / DistNetworkError
        raise DriveSegmentError(f"distributed: cannot initialise the {backend} process group "
                                f"(rank {rank}/{world}): {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    return DistContext(rank, world, local_rank, backend, owns_group=True)


def distributed_device(device: torch.device) -> torch.device:
    """``cuda:LOCAL_RANK`` when ``device`` is an index-less CUDA device and ``LOCAL_RANK`` is set, else ``device``."""
    if device.type == "cuda" and device.index in (None, 0) and "LOCAL_RANK" in os.environ and _env_int("WORLD_SIZE", 1) > 1:
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return device


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group if ``ctx`` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        ctx.owns_group = False


def barrier(ctx: DistContext) -> None:
    """Wait for all ranks (no-op in a one-process run)."""
    if ctx.distributed:
        dist.barrier()


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """``global_batch / world_size``.

    Raises:
        DriveSegmentError: not divisible (the global batch must split evenly).
    """
    if global_batch % world_size:
        raise DriveSegmentError(f"distributed: batch_size {global_batch} (the global batch) is not divisible by "
                                f"the {world_size} processes; use a multiple of {world_size}")
    return global_batch // world_size


class RankSampler(torch.utils.data.Sampler):
    """One rank's share of a global sample stream (use with ``DataLoader(batch_size=b)``).

    The global stream is any iterable of dataset indices (here
    :class:`~drive_segment_training.datasets.InfiniteSampler` started at ``iteration * B``).
    It is cut into global batches of ``B = b * world_size`` consecutive positions; this rank
    yields positions ``r*b .. (r+1)*b - 1`` of each. With ``world_size == 1`` it yields the
    stream unchanged.

    Args:
        stream: the global sampler (infinite or not; a trailing partial global batch is dropped).
        batch_per_rank: ``b``. rank, world_size: this process and the number of processes.
    """

    def __init__(self, stream, batch_per_rank: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_per_rank < 1 or not 0 <= rank < world_size:
            raise DriveSegmentError(f"RankSampler: bad batch {batch_per_rank} / rank {rank} / world {world_size}")
        self.stream, self.b, self.rank, self.world = stream, int(batch_per_rank), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        B, lo = self.b * self.world, self.rank * self.b
        buf = []
        for idx in self.stream:
            buf.append(idx)
            if len(buf) == B:
                yield from buf[lo : lo + self.b]
                buf = []

    def __len__(self) -> int:
        return len(self.stream) // (self.b * self.world) * self.b


def all_reduce_sum(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``value`` over ranks (a new tensor; ``value`` itself in a one-process run).

    Not differentiable: use on counts and on detached values only.
    """
    if not ctx.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def global_mean_loss(local_sum: torch.Tensor, local_count: torch.Tensor, ctx: DistContext):
    """Per-rank loss whose DDP-averaged gradient is the gradient of the global mean loss.

    Args:
        local_sum: scalar, differentiable sum of the per-element losses of this rank's batch.
        local_count: scalar, number of elements in that sum (e.g. labelled pixels).
        ctx: the run.

    Returns:
        ``(loss_for_backward, global_mean)``: ``local_sum * W / N`` with ``N`` the all-reduced
        count (DDP divides the summed gradients by ``W``), and the detached global mean
        ``sum_r local_sum_r / N`` for logging (the value the one-process run reports).
        ``N == 0`` gives a zero loss (no element anywhere).
    """
    count = local_count.detach().to(torch.float32).reshape(())
    totals = all_reduce_sum(torch.stack([local_sum.detach().float().reshape(()), count]), ctx)
    n = totals[1].clamp_min(1.0)
    loss = local_sum * (float(ctx.world_size) / n)
    return loss, totals[0] / n


def broadcast_buffers(module: torch.nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy every floating-point buffer (BatchNorm running statistics) of ``module`` from rank ``src``."""
    if not ctx.distributed:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src)


def no_forward_buffer_sync() -> Dict[str, bool]:
    """``DistributedDataParallel`` keyword that turns off the buffer broadcast at every forward
    (``forward_sync_buffers=False`` on torch versions that have it, else ``broadcast_buffers=False``)."""
    params = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def state_checksum(module: torch.nn.Module) -> str:
    """SHA-1 of a module's parameters and buffers in state-dict order (exact, bitwise)."""
    h = hashlib.sha1()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def free_port() -> int:
    """A free TCP port on localhost (for ``MASTER_PORT`` of a local run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_seed(seed: int, rank: int) -> int:
    """torch seed of rank ``rank`` after model construction (dropout masks differ across ranks);
    rank 0 keeps ``seed``'s stream untouched."""
    return int(np.random.default_rng([int(seed), int(rank), 0xD15]).integers(0, 2**62))

