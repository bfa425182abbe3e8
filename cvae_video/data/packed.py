"""The packed cache's format and its reader: each split's frames and conditions in two NumPy files, read by
memory mapping. ``cvae-data pack`` (:mod:`cvae_video.data.pack`) writes it; see there for when it is up to date.

    ROOT/.packed/<split>/frames.npy      uint8 (total_frames, H, W, 3), all trajectories one after another
                        /conditions.npy  float32 (total_frames, cond_dim), c_t = concat(action_t, position_t)
                        /index.json      per trajectory: path (relative to ROOT/<split>), offset, length and a
                                         fingerprint of its source files; cond_dim

``cond_dim`` is 7, or 0 for a split packed from frames alone (a data set without condition files): such a cache
serves only readers that need no conditions (models with ``condition = "none"``). Caches written before the key
existed hold 7.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from . import layout

PACKED_DIR = ".packed"
FORMAT = "cvae_video.packed/1"
FRAMES_FILE = "frames.npy"
CONDITIONS_FILE = "conditions.npy"
INDEX_FILE = "index.json"


class StalePackWarning(UserWarning):
    """A packed cache exists but no longer matches its source files; the PNG files are used instead."""


def packed_dir(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / PACKED_DIR / split


# ---- fingerprints ------------------------------------------------------------------------------------------

def _is_source(name: str) -> bool:
    stem, _, ext = name.partition(".")
    return (ext == "png" and stem.isdigit()) or name in (layout.ACTIONS_FILE, layout.POSITIONS_FILE)


def trajectory_fingerprint(traj_dir: Path) -> str:
    """Digest of (name, size, mtime_ns) of the trajectory's frames and CSVs."""
    entries = []
    with os.scandir(traj_dir) as it:
        for entry in it:
            if _is_source(entry.name):
                st = entry.stat()
                entries.append(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    entries.sort()
    return hashlib.blake2b("\n".join(entries).encode(), digest_size=10).hexdigest()


def scan_split(root: str | os.PathLike, split: str, progress: bool = False) -> list[tuple[str, str]]:
    """(path relative to ROOT/<split>, fingerprint) of every trajectory of a split, in layout order."""
    split_dir = Path(root) / split
    trajs = layout.list_trajectories(root, split)
    return [(t.relative_to(split_dir).as_posix(), trajectory_fingerprint(t))
            for t in tqdm(trajs, desc=f"{split}: check", unit="traj", leave=False, disable=not progress)]


# ---- reading -------------------------------------------------------------------------------------------------

class PackedSplit:
    """A packed split: trajectory paths, offsets and lengths, conditions in memory, frames memory-mapped.

    The memory map is reopened lazily after pickling, so DataLoader workers (fork or spawn) share the page cache
    instead of receiving a copy of the frames.
    """

    def __init__(self, root: str | os.PathLike, split: str, index: dict):
        self.root, self.split = Path(root), split
        self.folder = packed_dir(root, split)
        items = index["trajectories"]
        self.trajectories = [self.root / split / item["path"] for item in items]
        self.offsets = np.array([item["offset"] for item in items], dtype=np.int64)
        self.lengths = np.array([item["length"] for item in items], dtype=np.int64)
        self.image_size = int(index["image_size"])
        self.cond_dim = int(index.get("cond_dim", layout.COND_DIM))   # 0: packed from frames alone
        self.conditions = np.load(self.folder / CONDITIONS_FILE)        # (total_frames, cond_dim) float32
        self._frames = None
        total = int(index["total_frames"])
        frames = self.frames
        expected = (total, self.image_size, self.image_size, 3)
        if frames.dtype != np.uint8 or frames.shape != expected or self.conditions.shape != (total, self.cond_dim):
            raise DataError(f"{self.folder}: damaged packed cache (frames {frames.dtype} {frames.shape}, "
                            f"conditions {self.conditions.shape}, index says {total} frames)")
        if total and not (np.all(self.offsets + self.lengths <= total) and np.all(self.lengths > 0)):
            raise DataError(f"{self.folder}: damaged packed cache (offsets beyond {total} frames)")

    @property
    def frames(self) -> np.ndarray:
        """All frames, uint8 (total_frames, H, W, 3), memory-mapped read-only."""
        if self._frames is None:
            self._frames = np.load(self.folder / FRAMES_FILE, mmap_mode="r")
        return self._frames

    def __len__(self) -> int:
        return len(self.trajectories)

    def window(self, i: int, start: int, end: int) -> np.ndarray:
        """Frames start .. end-1 of trajectory i: a read-only view (end - start, H, W, 3) into the map."""
        o = int(self.offsets[i])
        return self.frames[o + start:o + end]

    def trajectory_conditions(self) -> list[np.ndarray]:
        """Per-trajectory condition arrays (T_i, cond_dim), views of one array."""
        return [self.conditions[o:o + n] for o, n in zip(self.offsets.tolist(), self.lengths.tolist())]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_frames"] = None
        return state


def _stale_reason(root: Path, split: str, recorded: list[tuple[str, str]]) -> str | None:
    """Why the recorded (path, fingerprint) list no longer matches the split's files; None if it does."""
    try:
        current = scan_split(root, split)
    except DataError as e:
        return f"its source cannot be listed ({e})"
    if current == recorded:
        return None
    now, then = dict(current), dict(recorded)
    added = [p for p in now if p not in then]
    removed = [p for p in then if p not in now]
    changed = [p for p in now if p in then and now[p] != then[p]]
    parts = []
    for what, paths in (("added", added), ("removed", removed), ("changed", changed)):
        if paths:
            parts.append(f"{len(paths)} trajector{'y' if len(paths) == 1 else 'ies'} {what}, e.g. {split}/{paths[0]}")
    return "; ".join(parts) or "trajectory order differs"


def check_packed(root: str | os.PathLike, split: str, image_size: int | None = None, need_conditions: bool = False
                 ) -> tuple[PackedSplit | None, str, bool]:
    """(packed split, "", True) when usable; else (None, why, present), present = a cache folder exists.
    ``need_conditions``: a cache packed from frames alone (``cond_dim`` 0) is not usable."""
    folder = packed_dir(root, split)
    rerun = f"re-run `cvae-data pack --data_root {root} --splits {split}`"
    if not (folder / INDEX_FILE).is_file():
        return None, f"no packed cache of split '{split}' at {folder} (run `cvae-data pack --data_root {root}`)", \
            folder.exists()
    try:
        index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        if index.get("format") != FORMAT:
            return None, f"packed cache of split '{split}' at {folder} has format {index.get('format')!r}, " \
                         f"expected {FORMAT!r}; {rerun}", True
        recorded = [(item["path"], item["fingerprint"]) for item in index["trajectories"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"packed cache of split '{split}' at {folder} is unreadable ({e}); {rerun}", True
    why = _stale_reason(Path(root), split, recorded)
    if why is not None:
        return None, f"packed cache of split '{split}' at {folder} is out of date ({why}); {rerun}", True
    if image_size is not None and int(index.get("image_size", -1)) != image_size:
        return None, f"packed cache of split '{split}' at {folder} holds {index.get('image_size')}-pixel frames, " \
                     f"{image_size} were asked for; {rerun} --image_size {image_size}", True
    if need_conditions and int(index.get("cond_dim", layout.COND_DIM)) == 0:
        return None, f"packed cache of split '{split}' at {folder} holds frames only (it was packed without " \
                     f"conditions)", True
    try:
        return PackedSplit(root, split, index), "", True
    except (OSError, ValueError) as e:
        return None, f"packed cache of split '{split}' at {folder} is unreadable ({e}); {rerun}", True
    except DataError as e:
        return None, f"{e}; {rerun}", True


def open_packed(root: str | os.PathLike, split: str, image_size: int | None = None, required: bool = False,
                need_conditions: bool = False) -> PackedSplit | None:
    """The packed cache of a split if present and up to date (and, with ``need_conditions``, holding conditions),
    else None.

    A cache that exists but is stale (or damaged, or without the conditions needed) gives a
    :class:`StalePackWarning` naming the split; with ``required`` any unusable cache, absent ones included, raises
    DataError instead.
    """
    packed, why, present = check_packed(root, split, image_size, need_conditions)
    if packed is None:
        if required:
            raise DataError(why)
        if present:
            warnings.warn(f"{why}; reading the PNG files instead", StalePackWarning, stacklevel=2)
    return packed


# ---- writing -------------------------------------------------------------------------------------------------
