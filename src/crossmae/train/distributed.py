"""One process per device under `torchrun`; a plain single process without it.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT); we read them and use
NCCL on GPUs, gloo on CPUs. Nothing here launches processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from crossmae.errors import CrossMAEError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when there is a GPU; under torchrun each process takes its local GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise CrossMAEError(f"unknown device {device!r}; use cpu, cuda or auto") from None
    if dev.type not in ("cpu", "cuda"):
        raise CrossMAEError(f"device {device!r} is not supported; use cpu, cuda or auto")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CrossMAEError("--device cuda was asked for, but no CUDA GPU is visible")
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
    return dev


def init_distributed(device: str) -> DistInfo:
    """Join the process group that torchrun describes in the environment, if any."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(0, 1, 0, resolve_device(device), True)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, store=_attempt_store(), rank=rank, world_size=world_size,
            device_id=dev if dev.type == "cuda" else None,
        )  # fmt: skip
    return DistInfo(rank, world_size, local_rank, dev, rank == 0)


def _attempt_store() -> dist.Store:
    """The env:// store, with keys of this torchrun attempt only.

    After a worker dies, torchrun restarts the group on the same store; without a prefix per
    attempt, a restarted rank can read the addresses of the dead group's processes and fail to
    connect.
    """
    store, _, _ = next(dist.rendezvous("env://"))
    return dist.PrefixStore(f"attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over all processes (a copy; `tensor` itself is untouched)."""
    out = tensor.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out)
        out /= dist.get_world_size()
    return out


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of `tensor` over all processes (a copy; on the GPU under
    NCCL, which reduces nothing else)."""
    out = tensor.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl" and out.device.type != "cuda":
            out = out.to(torch.cuda.current_device())
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


class StopVote:
    """Whether any rank has been asked to stop, agreed on every step without waiting.

    Each call starts a max-reduce of this rank's flag over a CPU (gloo) group and returns the
    result of the call before, which has long arrived: the ranks stop together one step after
    a signal reaches any of them, and no GPU work is waited for. Every rank must call it once
    per step, and `close` before leaving the process group.
    """

    def __init__(self) -> None:
        self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        self._flag = torch.zeros(1)
        self._pending: dist.Work | None = None

    def __call__(self, stop: bool) -> bool:
        agreed = False
        if self._pending is not None:
            self._pending.wait()
            agreed = bool(self._flag[0])
        self._flag = torch.tensor([float(stop)])
        self._pending = dist.all_reduce(
            self._flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True
        )
        return agreed

    def close(self) -> None:
        if self._pending is not None:
            self._pending.wait()
            self._pending = None


def broadcast_object(obj: T) -> T:
    """Rank 0's `obj` on every process (e.g. a run directory named by rank 0's clock)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
