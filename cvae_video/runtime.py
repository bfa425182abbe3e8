"""Device, precision and seeding, decided once at the top of a run."""

from __future__ import annotations

import contextlib
import enum
import ctypes
import math
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import ConfigError

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
EXPLICIT_PRECISIONS = ("fp32", *_AMP_DTYPES)
PRECISIONS = ("auto", *EXPLICIT_PRECISIONS)


def resolve_device(device: str = "cpu") -> torch.device:
    """The device of a name ("cpu", "cuda", "cuda:1"; empty means cpu). Fails clearly when CUDA is asked for but
    absent."""
    name = device or "cpu"
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
    """An autocast context for bf16/fp16, or a no-op for fp32 (``auto`` must be resolved first, see
    :func:`choose_precision`)."""
    if precision not in EXPLICIT_PRECISIONS:
        raise ConfigError(f"precision {precision!r}: must be one of {EXPLICIT_PRECISIONS} here (resolve 'auto' with "
                          f"choose_precision first)")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 has fp32's exponent range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


# bf16 is chosen on the CPU only when the probe finds it this much faster than fp32: fp32's numerics are the safer
# default, and a smaller gain is within the noise of a short measurement on a shared machine
BF16_MARGIN = 0.95
# a training run's start-up probe takes at most this share of the run's expected time, and a run too short for
# one round of it within that share (fewer than MIN_PROBED_STEPS steps) trains in fp32 without probing
PROBE_SHARE = 0.02
MIN_PROBED_STEPS = 250


@dataclass
class PrecisionChoice:
    """What :func:`choose_precision` decided, and why (``times``: seconds per probe call, when it measured)."""
    precision: str
    requested: str
    reason: str
    times: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        if self.requested != "auto":
            return f"precision {self.precision}"
        return f"precision auto: {self.precision} ({self.reason})"


def cpu_name() -> str:
    """The processor's model name (``lscpu``'s), or the platform's description where Linux does not tell."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_precisions(probe: Callable[[str], object], precisions=("fp32", "bf16"), budget_s: float = 0.5,
                    rounds: int = 3, steps: int | None = None) -> dict[str, float]:
    """The best time of ``probe(precision)`` per precision: one untimed call each, then up to ``rounds`` rounds that
    alternate the precisions (so a machine that slows down mid-way slows both), fewer once ``budget_s`` is spent.

    ``steps``: the probe is one step of a run of that many; the budget is then ``PROBE_SHARE`` of the run's
    expected time (``steps`` times the fastest step of the first round), the untimed calls included, and a round
    is started only when it fits (the first always runs)."""
    start = time.perf_counter()
    for p in precisions:
        probe(p)
    best = {p: math.inf for p in precisions}
    rounds_start = time.perf_counter()
    for r in range(rounds):
        t_round = time.perf_counter()
        for p in precisions:
            t0 = time.perf_counter()
            probe(p)
            best[p] = min(best[p], time.perf_counter() - t0)
        now = time.perf_counter()
        if steps is None:
            if now - rounds_start > budget_s:
                break
        elif now - start + (now - t_round) > PROBE_SHARE * steps * min(best.values()):
            break
    return best


def choose_precision(requested: str, device: torch.device, probe: Callable[[str], object] | None = None,
                     *, steps: int | None = None) -> PrecisionChoice:
    """The precision to run in. An explicit ``fp32``/``bf16``/``fp16`` is kept. ``auto``: on CUDA, bf16 where the
    device supports it, else fp16 (with the gradient scaler); on the CPU, bf16 only if ``probe`` (one call of the
    model's own work at a precision) runs at most ``BF16_MARGIN`` of its fp32 time, else fp32.

    ``steps``: ``probe`` is one step of a run of that many; the probe then takes at most ``PROBE_SHARE`` of the
    run's expected time (see :func:`time_precisions`), and a run of fewer than ``MIN_PROBED_STEPS`` steps is not
    probed (fp32). Without ``steps`` the probe's timed rounds take about half a second at most.

    Whether bf16 pays on a CPU depends on the processor: with AMX or fast avx512_bf16 kernels it can be twice as
    fast as fp32, without them slower; so it is measured, not assumed.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"precision {requested!r}: must be one of {PRECISIONS}")
    if requested != "auto":
        return PrecisionChoice(requested, requested, "asked for")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", "auto", f"{torch.cuda.get_device_name(device)} supports bf16")
        return PrecisionChoice("fp16", "auto", f"{torch.cuda.get_device_name(device)} has no bf16; fp16 with a "
                                               f"gradient scaler")
    if probe is None:
        return PrecisionChoice("fp32", "auto", "nothing to measure")
    if steps is not None and steps < MIN_PROBED_STEPS:
        return PrecisionChoice("fp32", "auto", f"a run of {steps} steps is too short for a start-up probe to pay "
                                               f"(it needs {MIN_PROBED_STEPS})")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):   # the probe's random draws must not move the run's RNG
        times = time_precisions(probe, steps=steps)
    spent = time.perf_counter() - t0
    ratio = times["bf16"] / times["fp32"]
    chosen = "bf16" if ratio <= BF16_MARGIN else "fp32"
    cost = f"{spent:.1f} s"
    if steps is not None:
        expected = steps * times[chosen]
        cost += f", {100 * spent / expected:.1f}% of the run's expected {expected:.0f} s"
    return PrecisionChoice(chosen, "auto", f"{cpu_name()}: bf16 took {ratio:.2f}x the time of fp32 in a start-up "
                                           f"probe of {cost}", times)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class SeedStream(enum.IntEnum):
    """The first key of :func:`derive_seed` for each use of random numbers, so that no two uses share a seed."""
    LATENT = 1     # the global torch RNG of a training epoch (z's draws, dropout)
    TEACHER = 2    # the teacher-forcing decisions of a training epoch
    LOADER = 3     # the training loader's generator (the workers' seeds)


def derive_seed(*keys: int) -> int:
    """A 64-bit seed that is a well-mixed function of integer ``keys`` (e.g. seed, stream, epoch, rank)."""
    return int(np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(1, np.uint64)[0])
