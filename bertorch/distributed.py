"""Process-group set-up from the launcher's environment, and the collectives the tasks need.

torchrun, `python -m torch.distributed.launch` and multi-node launches all export RANK, LOCAL_RANK and
WORLD_SIZE; we read them there rather than from flags, so every launcher works the same way. A single
process never initialises a process group, so `python run_x.py` needs no rendezvous.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def setup(no_cuda: bool = False, timeout_s: float | None = None) -> DistEnv:
    """Read the launcher's environment, pick the device, and join the process group if there is one.

    `timeout_s` bounds every collective (and the rendezvous): a rank that is alive but stuck ends the run
    with an error on the others instead of hanging them forever."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    use_cuda = torch.cuda.is_available() and not no_cuda
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        # Share the cores between the processes of this node instead of every process spawning one
        # thread per core (oversubscription halves throughput). An explicit OMP_NUM_THREADS wins.
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, _available_cores() // local_world_size))
    if world_size > 1 and not dist.is_initialized():
        kwargs = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", **kwargs)
    return DistEnv(rank, local_rank, world_size, local_world_size, device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank gets the list of every rank's `obj` (pickled by torch between our own processes)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few floats over ranks (one collective for all of them)."""
    return sum_across_ranks(torch.tensor(values, dtype=torch.float64, device=device))


def sum_across_ranks(values: torch.Tensor) -> list[float]:
    """Sum a small tensor over ranks and bring it to the host: one collective and one device sync in all."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
    return values.tolist()


def is_timeout(error: BaseException) -> bool:
    """A collective that waited longer than the process group's timeout (gloo and nccl word it differently)."""
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("timed out" in text or "timeout" in text)


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the gradient of its own slice.

    Every rank computes the same loss over the gathered tensor, so the gradient that reaches rank r's
    slice is the sum over ranks of d(loss_k)/d(slice_r); DDP then averages parameter gradients over
    ranks, which turns that sum into the gradient of the mean loss, exactly as one process would get.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        chunks = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(chunks, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        return torch.cat([c[:n] for c, n in zip(chunks, sizes)], dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None


def all_gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate `tensor` (N_r, ...) from all ranks; returns it and this rank's row offset."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    # Every rank's row count, gathered once (one small collective, one host transfer): the padding for the
    # all_gather, the slices to cut and this rank's offset all come from it.
    counts = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([tensor.shape[0]], device=tensor.device))
    sizes = torch.cat(counts).tolist()
    return _AllGatherWithGrad.apply(tensor, sizes), sum(sizes[: dist.get_rank()])
