"""Device, precision and seeding, decided once at the top of a run."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from .errors import ConfigError

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str = "", cuda: bool = False) -> torch.device:
    """``device`` if given, else cuda with ``cuda=True``, else cpu. Fails clearly when CUDA is asked for but absent."""
    name = device or ("cuda" if cuda else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a device name (try 'cpu', 'cuda' or 'cuda:1')") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--cuda/--device {name} was asked for, but CUDA is not available on this machine "
                              f"(torch {torch.__version__}, torch.cuda.is_available() is False); "
                              f"run without --cuda to use the CPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise ConfigError(f"device {name!r}: only 'cpu' and 'cuda[:N]' are supported")
    return dev


def autocast(device: torch.device, precision: str):
    """An autocast context for bf16/fp16, or a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 has fp32's exponent range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*keys: int) -> int:
    """A 64-bit seed that is a well-mixed function of integer ``keys`` (e.g. seed, stream, epoch, rank)."""
    return int(np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(1, np.uint64)[0])
