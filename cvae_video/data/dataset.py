"""Torch data sets over the BAIR layout, and the seeded window sampler used for training.

An item is a pure function of its index. The index is either a trajectory number (the window starts at frame
0: evaluation) or a ``(trajectory, start)`` pair chosen by :class:`WindowSampler`, whose choices depend only on
(seed, epoch), so DataLoader workers never repeat each other and a resumed run sees the same data order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DataError
from . import layout
from .packed import PackedSplit, open_packed
from .problems import scan_trajectory, too_short

BAD_SAMPLE_POLICIES = ("error", "skip")   # on_bad_sample: stop at a bad trajectory, or train without it


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """An item's (or batch's) uint8 frames (..., C, H, W) -> float32 in [0, 1], what the model takes."""
    return frames.float().div_(255.0)


class BadTrajectory(DataError):
    """A trajectory the reader cannot use (frames missing or broken, CSVs malformed, too short); names the file."""


@dataclass(frozen=True)
class ConditionStats:
    """Per-dimension mean and std of the condition vectors of the training split (empty for a data set read
    without conditions)."""
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_conditions(cls, conds: list[np.ndarray]) -> "ConditionStats":
        allc = np.concatenate(conds, 0).astype(np.float64)
        std = allc.std(0)
        std[std < 1e-6] = 1.0  # a constant dimension is centred, not blown up
        return cls(tuple(float(v) for v in allc.mean(0)), tuple(float(v) for v in std))

    def normalize(self, cond: np.ndarray) -> np.ndarray:
        return ((cond - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "ConditionStats":
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))


class VideoDataset(Dataset):
    """One split of a data set in the BAIR layout.

    ``seq_len`` frames per item. ``stats`` normalises the conditions; ``None`` means this split's own statistics
    (use that for the training split, then pass ``train.stats`` to the others). Every trajectory is checked at
    construction (frames present and contiguous, CSVs of the right shape and finite); frame contents (size,
    decodability) are checked when read. Items: ``frames`` uint8 (T, C, H, W) and ``cond`` float32 (T, 7).

    ``with_conditions=False`` reads the frames alone, for a model with ``condition = "none"``: the CSVs are not
    needed (a data set of frames only, e.g. one's own videos) and not read where present, ``cond`` is (T, 0)
    and ``stats`` has no dimensions.

    ``use_packed``: read frames and conditions from the packed cache (``cvae-data pack``, see
    :mod:`cvae_video.data.pack`) when it is present and up to date, else from the PNG/CSV files (``None``, with a
    warning if the cache is stale); never (``False``); or only from the cache, DataError if it is absent or stale
    (``True``). Items are bit-identical either way; with the cache, every frame was checked when it was packed.

    ``check_frames``: also open every PNG frame at construction and verify its size and chunk checksums (20-60 us
    per frame on a 2-core machine, about a minute for BAIR's 1.3M frames; the packed cache needs no check), so
    that a wrong-size, garbage or truncated frame is found at start-up rather than hours into training. Only a
    compressed stream broken behind intact checksums is still found when read. ``on_bad_sample``: ``"error"``
    raises :class:`BadTrajectory` naming the first bad file; ``"skip"`` leaves bad trajectories out and lists them
    in ``skipped`` (trajectory -> what is wrong).
    """

    def __init__(self, root: str | os.PathLike, split: str, seq_len: int, stats: ConditionStats | None = None,
                 image_size: int = layout.IMAGE_SIZE, use_packed: bool | None = None, check_frames: bool = False,
                 on_bad_sample: str = "error", with_conditions: bool = True):
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}")
        self.root, self.split, self.seq_len, self.image_size = Path(root), split, seq_len, image_size
        self.with_conditions = with_conditions
        self.skipped: dict[Path, str] = {}
        self.packed: PackedSplit | None = None
        if use_packed is not False:
            self.packed = open_packed(root, split, image_size, required=bool(use_packed),
                                      need_conditions=with_conditions)
        if self.packed is not None:
            conditions = (self.packed.trajectory_conditions() if with_conditions
                          else [np.zeros((n, 0), np.float32) for n in self.packed.lengths.tolist()])
            self._packed_index = []      # dataset index -> packed trajectory index (skipped ones left out)
            for j, (traj, n) in enumerate(zip(self.packed.trajectories, self.packed.lengths.tolist())):
                if n < seq_len:
                    self._bad(traj, too_short(traj, n, seq_len).message, on_bad_sample)
                else:
                    self._packed_index.append(j)
            self.trajectories = [self.packed.trajectories[j] for j in self._packed_index]
            self.conditions: list[np.ndarray] = [conditions[j] for j in self._packed_index]
        else:
            all_trajectories = layout.list_trajectories(root, split)
            if not all_trajectories:
                raise DataError(f"{self.root / split}: no trajectories (expected {split}/<group>/<integer>/)")
            self.trajectories, self.conditions = [], []
            for traj in all_trajectories:
                try:
                    self.conditions.append(self._read_trajectory_info(traj, check_frames))
                    self.trajectories.append(traj)
                except DataError as e:
                    self._bad(traj, str(e), on_bad_sample)
        if not self.trajectories:
            first = next(iter(self.skipped.values()))
            raise DataError(f"{self.root / split}: all {len(self.skipped)} trajectories are bad (first: {first})")
        self.lengths = np.array([len(c) for c in self.conditions])
        if not with_conditions:   # nothing to normalise, whatever statistics a model trained elsewhere brings
            stats = ConditionStats((), ())
        self.stats = stats or ConditionStats.from_conditions(self.conditions)
        self._normalized = [self.stats.normalize(c) for c in self.conditions]

    def _read_trajectory_info(self, traj: Path, check_frames: bool) -> np.ndarray:
        """The (T, 7) conditions of a trajectory ((T, 0) without conditions); DataError naming the file if the
        reader would fail on it (the rule of :mod:`cvae_video.data.problems`, which ``cvae-data check`` applies
        too)."""
        scan = scan_trajectory(traj, self.image_size, min_frames=self.seq_len, check_images=check_frames,
                               decode=False, with_conditions=self.with_conditions)
        if scan.fatal is not None:
            raise DataError(scan.fatal.message)
        return scan.conditions

    def _bad(self, traj: Path, problem: str, on_bad_sample: str) -> None:
        if on_bad_sample == "error":
            raise BadTrajectory(problem)
        self.skipped[traj] = problem

    def __len__(self) -> int:
        return len(self.trajectories)

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        i, start = (index, 0) if isinstance(index, (int, np.integer)) else (int(index[0]), int(index[1]))
        end = start + self.seq_len
        if start < 0 or end > self.lengths[i]:
            raise IndexError(f"window {start}:{end} outside trajectory {i} of {self.lengths[i]} frames")
        if self.packed is not None:
            # one copy out of the memory map, straight into (T, C, H, W) order
            window = self.packed.window(self._packed_index[i], start, end)
            frames = torch.from_numpy(window.transpose(0, 3, 1, 2).copy())
        else:
            traj = self.trajectories[i]
            frames = np.stack([layout.read_frame(traj / f"{t}.png", self.image_size) for t in range(start, end)])
            frames = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
        return {"frames": frames,                                                # (T, C, H, W) uint8
                "cond": torch.from_numpy(self._normalized[i][start:end].copy()),  # (T, 7), or (T, 0)
                "index": torch.tensor(i)}


class WindowSampler(Sampler):
    """``samples_per_epoch`` (trajectory, start) pairs per epoch, a pure function of (seed, epoch).

    Trajectories are drawn as consecutive random permutations (every trajectory once before any twice).
    With ``world_size > 1`` each rank takes every world_size-th pair of the same global stream, so ranks see
    disjoint data. ``random_window=False`` always starts at frame 0.
    """

    def __init__(self, lengths: np.ndarray, seq_len: int, samples_per_epoch: int, seed: int,
                 random_window: bool = True, rank: int = 0, world_size: int = 1):
        self.lengths, self.seq_len = np.asarray(lengths), seq_len
        self.samples_per_epoch, self.seed = samples_per_epoch, seed
        self.random_window, self.rank, self.world_size = random_window, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pairs(self) -> np.ndarray:
        """(samples_per_epoch, 2) array of (trajectory, start) for this rank and epoch."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n, total = len(self.lengths), self.samples_per_epoch * self.world_size
        order = np.concatenate([rng.permutation(n) for _ in range(-(-total // n))])[:total]
        max_start = self.lengths[order] - self.seq_len
        starts = (rng.integers(0, max_start + 1) if self.random_window else np.zeros_like(order))
        return np.stack([order, starts], 1)[self.rank::self.world_size]

    def __iter__(self):
        return iter(map(tuple, self.pairs().tolist()))

    def __len__(self) -> int:
        return self.samples_per_epoch
