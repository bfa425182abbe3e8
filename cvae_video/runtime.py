"""Device, precision and seeding, decided once at the top of a run."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import random

import numpy as np
import torch

from .errors import ConfigError

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("fp32", *_AMP_DTYPES)


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


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4   # mallopt parameters, from glibc's malloc.h
_kept_freed_memory: bool | None = None


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel. True if it does.

    A CPU training or evaluation step allocates and frees the same large activation tensors every time. glibc
    serves every block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and unmaps it on ``free``,
    so each step pays for page faults that zero gigabytes of new pages: about a tenth of a lab-size bf16 step on
    a 2-core machine, as system time. With mmap and trimming off, freed heap blocks are reused instead. The price
    is memory: the heap never shrinks back, and freed blocks fragment it, so the resident peak is higher (a
    lab-size step: fp32 about 6 GB instead of 4.5, bf16 3.4 instead of 3.0). Without glibc (macOS, Windows,
    musl) nothing changes; ``CVAE_VIDEO_MALLOC=system`` opts out.
    """
    global _kept_freed_memory
    if _kept_freed_memory is None:
        _kept_freed_memory = False
        if os.environ.get("CVAE_VIDEO_MALLOC", "") != "system" and platform.libc_ver()[0] == "glibc":
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _kept_freed_memory = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return _kept_freed_memory


def autocast(device: torch.device, precision: str):
    """An autocast context for bf16/fp16, or a no-op for fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: must be one of {PRECISIONS}")
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
