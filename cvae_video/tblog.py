"""TensorBoard logs of a training run, in ``LOG_DIR/tb`` (``tensorboard --logdir runs``).

``--tensorboard``: ``auto`` (the default) writes them when the ``tensorboard`` package is importable
(``pip install -e ".[tb]"``), ``on`` insists (and says what to install), ``off`` never writes them.

Scalars per optimizer step, at the number of steps done (1, 2, ...): ``train/loss``, ``train/mse``, ``train/kl``,
``train/beta``, ``train/tfr``, ``train/lr``. Per epoch, at the step count at its end: ``val/psnr``, ``val/ssim``,
``val/kl_per_step``, ``val/active_units``, the prediction grid of the first validation sequence as the image
``val/predictions`` and, where ``moviepy`` is installed, ground truth beside the best sample as the video
``val/prediction_video``. Only rank 0 writes. A resumed run purges the events a killed process wrote after its
last checkpoint, so no step is logged twice.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError

MODES = ("auto", "on", "off")


def available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def side_by_side(pred) -> torch.Tensor:
    """Ground truth beside the first sample of the first sequence of ``pred``: (T, C, H, 2W) uint8."""
    sample = torch.cat([pred.x[0, :pred.n_past], pred.samples[0, 0]], 0)
    return (torch.cat([pred.x[0], sample], -1).clamp(0, 1) * 255 + 0.5).to(torch.uint8)


class TrainingLog:
    """The run's TensorBoard writer, or nothing (every method a no-op) when it does not write."""

    def __init__(self, log_dir: Path, mode: str, steps_done: int = 0, enabled: bool = True):
        self.writer = None
        if mode not in MODES:
            raise ConfigError(f"tensorboard = {mode!r}: must be one of {MODES}")
        if not enabled or mode == "off" or (mode == "auto" and not available()):
            return
        if not available():
            raise ConfigError("--tensorboard on needs the tensorboard package: pip install -e \".[tb]\" (or pip "
                              "install tensorboard)")
        from torch.utils.tensorboard import SummaryWriter
        # events at steps past the checkpoint were written by a process that died after it: drop them
        self.writer = SummaryWriter(str(log_dir / "tb"), purge_step=steps_done + 1 if steps_done else None)

    def step(self, steps_done: int, logs: dict, beta: float, tfr: float, lr: float) -> None:
        if self.writer is None:
            return
        for key in ("loss", "mse", "kl", "points", "point_accel"):
            if key in logs:
                self.writer.add_scalar(f"train/{key}", logs[key], steps_done)
        for key, value in (("beta", beta), ("tfr", tfr), ("lr", lr)):
            self.writer.add_scalar(f"train/{key}", value, steps_done)

    def epoch(self, steps_done: int, record: dict, grid: Path | None, pred=None) -> None:
        """``grid``: the PNG to show; ``pred``: the epoch's :class:`~cvae_video.inference.Predictions`, whose first
        sequence becomes a video (ground truth beside the first sample) where moviepy is installed."""
        if self.writer is None:
            return
        for tag, key in (("val/psnr", "val_psnr"), ("val/ssim", "val_ssim"), ("val/kl_per_step", "val_kl"),
                         ("val/active_units", "active_units")):
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], steps_done)
        if grid is not None and grid.is_file():
            from PIL import Image
            with Image.open(grid) as im:
                self.writer.add_image("val/predictions", np.asarray(im.convert("RGB")), steps_done,
                                      dataformats="HWC")
        if pred is not None and importlib.util.find_spec("moviepy") is not None:
            self.writer.add_video("val/prediction_video", side_by_side(pred)[None], steps_done, fps=4)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
