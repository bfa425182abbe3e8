"""The steps every use of a trained model shares: open a checkpoint for inference (model, device, precision),
find and open its data with the statistics it was trained with, predict a batch with the latents seeded by
``(seed, index of its first sequence)``, and draw the predictions.

``cvae-eval`` (and the validation of ``cvae-train``), ``cvae-make-gif``, ``cvae-predict`` and the pictures
``cvae-train`` draws after each epoch all predict through :func:`predict_batch`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from . import metrics
from .checkpoint import Checkpoint, load_checkpoint
from .data.dataset import ConditionStats, VideoDataset, frames_to_float
from .errors import CheckpointError, ConfigError, CvaeError, DataError
from .models.svg import CVAE
from .runtime import PRECISIONS, autocast, choose_precision, derive_seed, resolve_device


@dataclass
class Trained:
    """A checkpoint opened for inference (see :func:`open_for_inference`): the checkpoint, its model (eval mode,
    on its device), the file it came from, and the precision asked for (``requested``; :attr:`precision` decides
    ``auto``, prefixing what it says with ``script``, by timing a prediction from ``probe_frames`` frames)."""
    checkpoint: Checkpoint
    model: CVAE
    path: Path
    requested: str = "fp32"
    script: str = "cvae_video"
    probe_frames: int | None = None   # None: as the model was trained
    _precision: str | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def precision(self) -> str:
        """The precision to predict in: ``requested``, with ``auto`` decided for this model on its device at first
        use (so after the caller's checks of its input) and said once on stderr."""
        if self._precision is None:
            auto = self.requested == "auto"
            probe = prediction_probe(self.model, self.probe_frames or self.n_past) if auto else None
            choice = choose_precision(self.requested, self.device, probe)
            if auto:
                print(f"{self.script}: {choice.describe()}", file=sys.stderr)
            self._precision = choice.precision
        return self._precision

    def amp(self):
        """The autocast context of :attr:`precision` on the model's device (a no-op for fp32)."""
        return autocast(self.device, self.precision)

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


def open_for_inference(path: str | os.PathLike, *, device: str | torch.device = "cpu", precision: str = "fp32",
                       channels_last: bool | None = None, n_past: int | None = None,
                       script: str = "cvae_video") -> Trained:
    """Open the checkpoint at ``path`` (safely: tensors and plain values only) and rebuild its model on ``device``
    in eval mode, in the memory format it was trained in unless ``channels_last`` says otherwise. ``precision``:
    what to predict in (:meth:`Trained.amp`); ``auto`` is decided at first use by timing a prediction from
    ``n_past`` frames (default: as trained), and said on stderr prefixed with ``script``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: must be one of {PRECISIONS}")
    device = resolve_device(str(device))
    ckpt = load_checkpoint(path)
    model = ckpt.build_model().to(device).eval()
    trained_nhwc = ckpt.training is not None and ckpt.training.channels_last
    if trained_nhwc if channels_last is None else channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Trained(ckpt, model, Path(path), precision, script, n_past)


def take_batch(dataset: Dataset, indices: list[int]) -> dict:
    """The items ``indices`` of ``dataset`` as one batch; CvaeError naming the first index out of range."""
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        raise CvaeError(f"sequence index {bad[0]} out of range: the split has {len(dataset)} sequences")
    return next(iter(DataLoader(Subset(dataset, indices), batch_size=len(indices))))


@dataclass
class Predictions:
    """Ground truth ``x`` (B, T, C, H, W) in [0, 1] and ``samples`` (B, S, T - n_past, C, H, W) in float32, on the
    model's device (:meth:`cpu` for the CPU)."""
    x: torch.Tensor
    samples: torch.Tensor
    n_past: int

    def cpu(self) -> "Predictions":
        return Predictions(self.x.cpu(), self.samples.cpu(), self.n_past)


@torch.inference_mode()
def predict_batch(model: CVAE, batch: dict, *, n_past: int, n_future: int, n_samples: int = 1,
                  z_mode: str = "sample", seed: int = 0, amp=None) -> Predictions:
    """``n_samples`` futures of ``n_future`` frames for every sequence of ``batch`` (``frames``, ``cond`` and
    ``index``, the data set's item numbers), after its first ``n_past`` frames, under the autocast context
    ``amp``; z drawn (``z_mode="sample"``) or at the latents' means (``"mean"``), see :meth:`CVAE.predict`.

    The latents come from a generator seeded with ``derive_seed(seed, index of the batch's first sequence)``: the
    same call draws the same futures, and a batch of a split draws the same whichever batches ran before it or in
    other processes (``distributed.shard_loader``)."""
    device = next(model.parameters()).device
    model.eval()
    x = frames_to_float(batch["frames"][:, :n_past + n_future].to(device))     # (B, T, C, H, W)
    gen = torch.Generator(device).manual_seed(derive_seed(seed, int(batch["index"][0])))
    with amp or nullcontext():
        pred = model.predict(x[:, :n_past], batch["cond"].to(device), n_future, n_samples=n_samples, z_mode=z_mode,
                             generator=gen)                                     # (B, S, F, C, H, W)
    return Predictions(x, pred.float(), n_past)


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
    pred = pred.cpu()
    order, labels = best_first(pred, b, n_show)
    x = pred.x[b]
    written = [save_prediction_grid(x, pred.samples[b, order], grid, pred.n_past, labels=labels)]
    if gif is not None:
        full = [torch.cat([x[:pred.n_past], pred.samples[b, i]], 0) for i in order]   # the past is ground truth
        written.insert(0, save_gif([x] + full, gif, fps=fps, labels=labels, n_past=pred.n_past))
    return written
