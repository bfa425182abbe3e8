"""Data-parallel training over several processes, launched by torchrun; a no-op in a single process.

    torchrun --nproc_per_node N -m cvae_video.train ...

The environment decides: torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address), so a
multi-node run needs only torchrun's own flags. One process per device: ``cuda:LOCAL_RANK`` with NCCL, or the
CPU with gloo. The decisions, made once at the top of ``train``:

- ``--batch_size`` is per process; the global batch is ``batch_size * WORLD_SIZE`` and an epoch of
  ``epoch_size`` optimizer steps sees ``WORLD_SIZE`` times as many windows. Ranks take every WORLD_SIZE-th
  window of one seeded stream (:class:`~cvae_video.data.dataset.WindowSampler`), so they never overlap, and the
  union of their batches at a step is the batch a single process with ``batch_size * WORLD_SIZE`` would see.
- The model is built from the same seed on every rank (DDP broadcasts rank 0's weights anyway). Afterwards each
  rank's global torch RNG, which draws the latents and the teacher-forcing decision, is reseeded at every epoch
  with (seed, epoch, rank): independent across ranks, reproducible from the seed, and a resumed run continues
  it exactly. A single process keeps the RNG as before.
- ``--sync_bn``: BatchNorm statistics over the global batch. On CUDA this is ``torch.nn.SyncBatchNorm``; on the
  CPU (which that class refuses) :class:`SyncBatchNormCPU` does the same with all-reduces. Synchronised
  BatchNorm makes every rank run the same layers in the same order, so the teacher-forcing decision is then
  shared by all ranks (drawn from a generator seeded with (seed, epoch)), and a per-sample decision is refused.
- Only rank 0 writes logs, pictures and checkpoints; checkpoints hold the unwrapped model (no ``module.``).
- Validation: rank r scores the batches r, r + WORLD_SIZE, ... of the validate split and the per-frame PSNR sums
  and counts, and the sums of the posterior means behind the active units, are all-reduced; latent draws are
  seeded per batch (see ``inference.predict_batch``), so the result equals a single process scoring the whole split.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from .errors import ConfigError
from .runtime import SeedStream, derive_seed, resolve_device

_owns_group = False


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1) and its device."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def setup(cfg) -> World:
    """The process's rank, world size and device, from torchrun's environment; starts the process group."""
    global _owns_group
    device = resolve_device(cfg.device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not dist.is_initialized():
        return World(device=device)
    if not dist.is_initialized() and "RANK" not in os.environ:
        raise ConfigError(f"WORLD_SIZE={world_size} but RANK is not set; launch several processes with "
                          f"torchrun (torchrun --nproc_per_node N -m cvae_video.train ...)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(f"--device {cfg.device}: under torchrun every process takes the GPU of its "
                              f"LOCAL_RANK; pass --cuda (or --device cuda) without an index")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) on "
                              f"this machine: --nproc_per_node must not exceed the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if cfg.sync_bn and cfg.tf_per_sample:
        raise ConfigError("sync_bn with tf_per_sample: synchronised BatchNorm needs every process to run the "
                          "same layers, which a per-sample teacher-forcing choice does not guarantee; "
                          "drop one of them")
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        except ValueError as e:
            raise ConfigError(f"WORLD_SIZE={world_size}: the process group did not start ({e}); "
                              f"launch with torchrun") from None
        _owns_group = True
    return World(dist.get_rank(), dist.get_world_size(), local_rank, device)


def teardown() -> None:
    """Destroy the process group if :func:`setup` started it."""
    global _owns_group
    if _owns_group and dist.is_initialized():
        dist.destroy_process_group()
    _owns_group = False


def barrier(world: World) -> None:
    if not world.is_distributed:
        return
    if world.device.type == "cuda":
        dist.barrier(device_ids=[world.device.index])
    else:
        dist.barrier()


@contextlib.contextmanager
def main_first(world: World, per_machine: bool = False):
    """Rank 0 (``per_machine``: local rank 0 of every machine) runs the body before the other ranks do."""
    first = (world.local_rank if per_machine else world.rank) == 0
    if not first:
        barrier(world)
    yield
    if first:
        barrier(world)


# ---- model ----------------------------------------------------------------------------------------------------

class _SumOverRanks(torch.autograd.Function):
    """y = sum of x over the ranks; the gradient of every rank's x is the sum of the ranks' gradients of y."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNormCPU(nn.modules.batchnorm._BatchNorm):
    """BatchNorm with statistics over the batches of all ranks, for CPU tensors (gloo).

    In training with several processes: mean and (biased) variance over every rank's batch, from two
    differentiable all-reduces (the sums, then the squared deviations from the global mean, which is exact where
    E[x^2] - E[x]^2 would cancel), and running statistics updated like ``BatchNorm`` with the unbiased variance.
    Otherwise plain BatchNorm. Same parameters and buffers, so state_dicts load either way.
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]                             # all but channels
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        sums = _SumOverRanks.apply(torch.cat([xf.sum(dims), xf.new_tensor([x.numel() // x.shape[1]])]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = xf - mean.view(shape)
        var = _SumOverRanks.apply((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                count = n.item()
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_((var * count / max(count - 1, 1)).to(self.running_var.dtype), momentum)
        return y.to(x.dtype)


def convert_sync_batchnorm_cpu(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer by :class:`SyncBatchNormCPU`, keeping its parameters and buffers."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNormCPU):
        out = SyncBatchNormCPU(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm_cpu(child))
    return out


def wrap_model(model: nn.Module, cfg, world: World) -> nn.Module:
    """The module the training step calls: ``model`` (BatchNorm synchronised with ``cfg.sync_bn``, in place, so
    the optimizer's parameters stay the same), wrapped in DDP with several processes, then compiled with
    ``cfg.compile`` (wrapping first lets TorchDynamo split graphs at DDP's gradient buckets, as PyTorch's DDP
    notes advise). ``checkpoint.unwrap`` of the result is ``model``."""
    step_model = model
    if world.is_distributed:
        if cfg.sync_bn:   # children are replaced in place (the top module is not a BatchNorm)
            if world.device.type == "cuda":
                nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                convert_sync_batchnorm_cpu(model)
        step_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
    return torch.compile(step_model, mode=getattr(cfg, "compile_mode", "default")) if cfg.compile else step_model


@torch.no_grad()
def broadcast_buffers(model: nn.Module, world: World) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), which are what its checkpoint saves:
    without ``sync_bn`` each rank's last training step updated them with its own batch."""
    if world.is_distributed:
        for buf in model.buffers():
            dist.broadcast(buf, 0)


# ---- randomness -----------------------------------------------------------------------------------------------

def seed_epoch(seed: int, epoch: int, world: World) -> None:
    """With several processes: reseed this rank's torch RNG (latents, teacher forcing) from (seed, epoch, rank)."""
    if world.is_distributed:
        torch.manual_seed(derive_seed(seed, SeedStream.LATENT, epoch, world.rank))


def teacher_forcing_generator(cfg, epoch: int, world: World) -> torch.Generator | None:
    """A generator shared by all ranks for the teacher-forcing decision when BatchNorm is synchronised (the ranks
    must then run the same layers), else None: the rank's own RNG."""
    if world.is_distributed and cfg.sync_bn:
        return torch.Generator().manual_seed(derive_seed(cfg.seed, SeedStream.TEACHER, epoch))
    return None


# ---- data and metrics -----------------------------------------------------------------------------------------

def shard_loader(dataset, batch_size: int, world: World) -> DataLoader:
    """This rank's batches r, r + world_size, ... of the consecutive, unshuffled batches of ``dataset``. The last
    ranks may get one batch fewer (or none); with one process: all batches, as ``evaluate.make_loader``."""
    n = len(dataset)
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    return DataLoader(dataset, batch_sampler=batches[world.rank::world.world_size],
                      pin_memory=world.device.type == "cuda")


def _all_reduce_sum(values: list[float], world: World) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(value, world: World):
    """Rank 0's ``value`` on every rank (a decision all ranks must share, such as the precision)."""
    if not world.is_distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=world.device if world.device.type == "cuda" else None)
    return box[0]


def global_mean(values: np.ndarray, world: World) -> float:
    """The mean of ``values`` over the entries of all ranks (shards may differ in size or be empty)."""
    if not world.is_distributed:
        return float(values.mean())
    total, count = _all_reduce_sum([float(values.sum()), float(values.size)], world)
    return total / count


def global_sum(values: np.ndarray, world: World) -> np.ndarray:
    """``values`` (n, ...) summed over its first axis and over the entries of all ranks: float64 (...)."""
    total = np.asarray(values, np.float64).sum(0)
    if not world.is_distributed:
        return total
    return np.asarray(_all_reduce_sum(total.ravel().tolist(), world), np.float64).reshape(total.shape)


def average_logs(logs: dict[str, float], world: World) -> dict[str, float]:
    """A training step's scalar logs averaged over the ranks: the global batch's mean loss, which every rank then
    sees (so a non-finite loss stops all of them at the same step)."""
    if not world.is_distributed:
        return logs
    keys = sorted(logs)
    sums = _all_reduce_sum([logs[k] for k in keys], world)
    return {k: s / world.world_size for k, s in zip(keys, sums)}
