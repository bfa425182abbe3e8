"""Training schedules as pure functions of the epoch or the global step (so a resumed run continues them)."""

from __future__ import annotations

import math


def teacher_forcing_ratio(epoch: int, *, tfr: float, start_decay_epoch: int, decay_step: float,
                          lower_bound: float) -> float:
    """Teacher-forcing probability for a (zero-based) epoch.

    Stays at ``tfr`` up to and including ``start_decay_epoch``, then falls by ``decay_step`` per epoch, never
    below ``lower_bound`` (nor above ``tfr``): epoch start+k has tfr - k * decay_step.
    """
    value = tfr - decay_step * max(0, epoch - start_decay_epoch)
    return max(min(lower_bound, tfr), value)


def kl_weight(step: int, *, total_steps: int, cyclical: bool, ratio: float, n_cycles: int,
              max_weight: float = 1.0) -> float:
    """KL weight beta for a (zero-based) global iteration.

    monotonic: rises linearly from 0 to ``max_weight`` over the first ``ratio`` of training, then stays.
    cyclical (Fu et al. 2019): training is cut into ``n_cycles`` equal cycles; within each, beta rises linearly
    from 0 over the first ``ratio`` of the cycle, then stays at ``max_weight`` until the cycle ends.
    """
    period = total_steps / n_cycles if cyclical else total_steps
    position = (step % period) / period if cyclical else min(step / period, 1.0)
    return max_weight * min(1.0, position / ratio)


def learning_rate(step: int, *, total_steps: int, base_lr: float, schedule: str = "constant",
                  final_ratio: float = 0.05) -> float:
    """Learning rate for a (zero-based) global iteration.

    constant: ``base_lr``. cosine: from ``base_lr`` down to ``final_ratio * base_lr`` along half a cosine over
    ``total_steps`` (the step after the last one has the final value).
    """
    if schedule == "constant":
        return base_lr
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    progress = min(step / max(total_steps, 1), 1.0)
    return base_lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
