"""The steps every use of a trained model shares: open a checkpoint as a model, find and open its data with the
statistics it was trained with, predict a batch from a seeded generator, and draw the predictions.

``cvae-eval``, ``cvae-make-gif`` and the pictures ``cvae-train`` draws after each epoch all go through here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from . import metrics
from .checkpoint import Checkpoint, load_checkpoint
from .data.dataset import ConditionStats, VideoDataset, frames_to_float
from .errors import CheckpointError, CvaeError, DataError
from .models.svg import CVAE
from .runtime import autocast, choose_precision


@dataclass
class Trained:
    """A checkpoint opened for inference: the checkpoint, its model (eval mode, on its device) and the file it
    came from."""
    checkpoint: Checkpoint
    model: CVAE
    path: Path

    @property
    def stats(self) -> ConditionStats:
        """The normalisation of the conditions the model was trained with."""
        if self.checkpoint.cond_stats is None:
            raise CheckpointError(f"{self.path}: holds no condition statistics (a checkpoint of a model alone)")
        return self.checkpoint.cond_stats

    @property
    def n_past(self) -> int:
        """The frames the model was trained to start from."""
        if self.checkpoint.training is None:
            raise CheckpointError(f"{self.path}: does not record how many frames the model starts from (a "
                                  f"checkpoint of a model alone); give --n_past")
        return self.checkpoint.training.n_past

    def data_root(self, data_root: str | os.PathLike = "") -> Path:
        """``data_root``, or else the data set the model was trained on; DataError if it is not a folder."""
        resolved = self.checkpoint.resolved
        root = data_root or (resolved.data_root if resolved is not None else "")
        if not root:
            raise DataError(f"no --data_root given, and {self.path} does not record the data it was trained on")
        if not Path(root).is_dir():
            raise DataError(f"--data_root {root}: folder not found")
        return Path(root)

    def open_split(self, data_root: str | os.PathLike, split: str, seq_len: int) -> VideoDataset:
        """The ``split`` of ``data_root`` (see :meth:`data_root`) in ``seq_len``-frame sequences, normalised with
        the model's statistics; a model with ``condition = "none"`` reads the frames alone."""
        conditions = self.model.cfg.condition != "none"
        return VideoDataset(self.data_root(data_root), split, seq_len, stats=self.stats if conditions else None,
                            with_conditions=conditions)


def prediction_probe(model: CVAE, n_past: int, batch: int = 8) -> Callable[[str], object]:
    """One short prediction (``batch`` sequences, two frames) at a given precision: what ``choose_precision`` times
    to decide ``auto`` for inference on the CPU. Evaluation predicts many sequences at once, and a batch of one
    would weigh per-call overheads that a full batch does not have."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    cfg = model.cfg
    x = torch.rand(batch, n_past, cfg.channels, 64, 64, generator=g).to(device)
    cond = torch.randn(batch, n_past + 2, cfg.cond_dim, generator=g).to(device)

    @torch.inference_mode()
    def run(precision: str):
        with autocast(device, precision):
            return model.predict(x, cond, 2, generator=torch.Generator(device).manual_seed(0))
    return run


def inference_precision(requested: str, model: CVAE, n_past: int, script: str) -> str:
    """``requested``, with ``auto`` resolved for this model on its device (said once on stderr)."""
    choice = choose_precision(requested, next(model.parameters()).device, prediction_probe(model, n_past))
    if requested == "auto":
        print(f"{script}: {choice.describe()}", file=sys.stderr)
    return choice.precision


def open_trained(path: str | os.PathLike, device: torch.device, channels_last: bool | None = None) -> Trained:
    """Load the checkpoint at ``path`` (safely: tensors and plain values only) and rebuild its model on ``device``,
    in the memory format it was trained in unless ``channels_last`` says otherwise."""
    ckpt = load_checkpoint(path)
    model = ckpt.build_model().to(device).eval()
    trained_nhwc = ckpt.training is not None and ckpt.training.channels_last
    if trained_nhwc if channels_last is None else channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Trained(ckpt, model, Path(path))


def take_batch(dataset: Dataset, indices: list[int]) -> dict:
    """The items ``indices`` of ``dataset`` as one batch; CvaeError naming the first index out of range."""
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        raise CvaeError(f"sequence index {bad[0]} out of range: the split has {len(dataset)} sequences")
    return next(iter(DataLoader(Subset(dataset, indices), batch_size=len(indices))))


@dataclass
class Predictions:
    """Ground truth ``x`` (B, T, C, H, W) in [0, 1] and ``samples`` (B, S, T - n_past, C, H, W), float32 on the CPU."""
    x: torch.Tensor
    samples: torch.Tensor
    n_past: int


@torch.inference_mode()
def predict_batch(model: CVAE, batch: dict, *, n_past: int, n_future: int, n_samples: int, seed: int,
                  amp=None) -> Predictions:
    """``n_samples`` futures of ``n_future`` frames for every sequence of ``batch``, after its first ``n_past``
    frames; the latents come from a generator seeded with ``seed``, so the same call draws the same futures."""
    device = next(model.parameters()).device
    model.eval()
    x = frames_to_float(batch["frames"].to(device))
    gen = torch.Generator(device).manual_seed(seed)
    with amp or nullcontext():
        pred = model.predict(x[:, :n_past], batch["cond"].to(device), n_future, n_samples=n_samples,
                             generator=gen)
    return Predictions(x[:, :n_past + n_future].cpu(), pred.float().cpu(), n_past)


def best_first(pred: Predictions, b: int, n_show: int) -> tuple[list[int], list[str]]:
    """The samples of sequence ``b`` to show: the best by SSIM against the ground truth first, then the next ones
    in drawing order, ``n_show`` in all; and their row labels (ground truth first)."""
    gt = pred.x[b, pred.n_past:]
    s = metrics.ssim(pred.samples[b], gt.expand_as(pred.samples[b])).mean(1)   # (S,) mean SSIM of each sample
    best = int(s.argmax())
    order = [best] + [i for i in range(pred.samples.shape[1]) if i != best][:max(0, n_show - 1)]
    return order, ["ground truth", "best (SSIM)"] + [f"sample {i + 1}" for i in range(len(order) - 1)]


def save_pictures(pred: Predictions, b: int, *, grid: str | os.PathLike, gif: str | os.PathLike | None = None,
                  n_show: int = 3, fps: float = 4) -> list[Path]:
    """Sequence ``b``'s grid (ground-truth row, then the samples of :func:`best_first`) and, with ``gif``, its
    animated GIF (ground truth and the same samples side by side). Returns the paths written."""
    from .viz import save_gif, save_prediction_grid
    order, labels = best_first(pred, b, n_show)
    x = pred.x[b]
    written = [save_prediction_grid(x, pred.samples[b, order], grid, pred.n_past, labels=labels)]
    if gif is not None:
        full = [torch.cat([x[:pred.n_past], pred.samples[b, i]], 0) for i in order]   # the past is ground truth
        written.insert(0, save_gif([x] + full, gif, fps=fps, labels=labels, n_past=pred.n_past))
    return written
