"""`cvae-data pack`: writes the packed cache (format and reader: :mod:`cvae_video.data.packed`), each split's
frames and conditions in two NumPy files, read by memory mapping.

Decoding 64x64 PNGs costs more than a small model's training step on a CPU. ``cvae-data pack`` decodes every
frame once and writes, per split,

    ROOT/.packed/<split>/frames.npy      uint8 (total_frames, H, W, 3), all trajectories one after another
                        /conditions.npy  float32 (total_frames, 7), c_t = concat(action_t, position_t)
                        /index.json      per trajectory: path (relative to ROOT/<split>), offset, length and a
                                         fingerprint of its source files

A split none of whose trajectories has a condition file (frames alone, e.g. one's own videos), or any split with
``--frames_only``, is packed without conditions (``conditions.npy`` is (total_frames, 0)): that cache serves models
with ``--condition none``, which read no conditions.

``VideoDataset`` then slices windows out of ``frames.npy`` (``np.load(..., mmap_mode="r")``) instead of opening
PNG files. The cache lives inside the data root, outside the split folders, so the layout readers never see it.

When is the cache up to date?
-----------------------------
The fingerprint of a trajectory is a digest of (name, size, mtime_ns) of each of its source files (the frames
``<t>.png`` and the two CSVs); other files in the folder are ignored. The cache is up to date when the split
lists the same trajectories in the same order, each with the same fingerprint, as when it was packed. Any write
through the file system (a frame overwritten, a trajectory added, removed or renamed, a CSV edited) changes a
size or a modification time, so it is caught; ``rsync -a`` or ``cp -p`` of a whole root keep it valid. The check
costs one ``stat`` per source file (about 0.2 ms per 30-frame trajectory with a warm file-system cache, roughly
half of what opening the PNG data set costs anyway, as that reads both CSVs of every trajectory). Files are
stat'ed before they are read, so a file changed while packing makes the cache look stale, never wrongly fresh.
A file rewritten with identical size within the file system's timestamp granularity is not detected.

Every frame is decoded and checked while packing with the same functions the PNG path uses
(``layout.read_frame``, ``layout.read_conditions``), so bad data fails with the same ``DataError`` naming the file.
A split is written into a temporary folder and renamed into place; a reader never sees half a cache.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..fileio import atomic_folder
from . import layout
from ._pool import run_with_progress
from .packed import CONDITIONS_FILE, FORMAT, FRAMES_FILE, INDEX_FILE, check_packed, packed_dir, \
    trajectory_fingerprint

@dataclass
class PackReport:
    split: str
    n_trajectories: int
    n_frames: int
    seconds: float
    skipped: bool = False          # already up to date
    folder: str = ""
    cond_dim: int = layout.COND_DIM   # 0: packed without conditions


def _fill_frames(path: str, jobs: list[tuple[str, int, int]], image_size: int) -> int:
    """Decode the frames of ``jobs`` (trajectory dir, offset, length) into the open .npy file at ``path``."""
    frames = np.load(path, mmap_mode="r+")
    n = 0
    for traj, offset, length in jobs:
        traj = Path(traj)
        for t in range(length):
            frames[offset + t] = layout.read_frame(traj / f"{t}.png", image_size)
        n += length
    frames.flush()
    del frames
    return n


def _has_conditions(traj: Path) -> bool:
    return any((traj / name).is_file() for name in (layout.ACTIONS_FILE, layout.POSITIONS_FILE))


def pack_split(root: str | os.PathLike, split: str, image_size: int = layout.IMAGE_SIZE, workers: int = 1,
               force: bool = False, progress: bool = True, frames_only: bool = False) -> PackReport:
    """Write the packed cache of one split (skipped when already up to date, unless ``force``). Without
    conditions with ``frames_only`` or when no trajectory of the split has a condition file."""
    begin = time.perf_counter()
    root = Path(root)
    split_dir = root / split
    trajs = layout.list_trajectories(root, split)
    if not trajs:
        raise DataError(f"{split_dir}: no trajectories (expected {split}/<group>/<integer>/)")
    frames_only = frames_only or not any(_has_conditions(t) for t in trajs)
    if not force:
        packed, _, _ = check_packed(root, split, image_size, need_conditions=not frames_only)
        if packed is not None:
            return PackReport(split, len(packed), int(packed.lengths.sum()), time.perf_counter() - begin,
                              skipped=True, folder=str(packed.folder), cond_dim=packed.cond_dim)

    # stat before reading, so a file changed meanwhile leaves a stale (never a wrongly fresh) cache
    items, conds, offset = [], [], 0
    for traj in tqdm(trajs, desc=f"{split}: scan", unit="traj", leave=False, disable=not progress):
        fingerprint = trajectory_fingerprint(traj)
        n = layout.count_frames(traj)
        if frames_only:
            conds.append(np.zeros((n, 0), np.float32))
        elif not _has_conditions(traj):
            raise DataError(f"{traj / layout.ACTIONS_FILE}: file not found (other trajectories of the split have "
                            f"condition files; `cvae-data pack --frames_only` packs the frames alone, for models "
                            f"with --condition none)")
        else:
            conds.append(layout.read_conditions(traj, n))
        items.append({"path": traj.relative_to(split_dir).as_posix(), "offset": offset, "length": n,
                      "fingerprint": fingerprint})
        offset += n
    total = offset

    folder = packed_dir(root, split)
    with atomic_folder(folder, replace=True) as tmp:   # readers holding the old map keep valid data
        frames = np.lib.format.open_memmap(tmp / FRAMES_FILE, mode="w+", dtype=np.uint8,
                                           shape=(total, image_size, image_size, 3))
        del frames  # filled through separate maps, by this process or by workers
        chunk = 16
        jobs = [(str(trajs[k]), item["offset"], item["length"]) for k, item in enumerate(items)]
        tasks = [(str(tmp / FRAMES_FILE), jobs[a:a + chunk], image_size) for a in range(0, len(jobs), chunk)]
        with tqdm(total=total, desc=f"{split}: pack", unit="frame", disable=not progress) as bar:
            run_with_progress(_fill_frames, tasks, workers, bar)
        np.save(tmp / CONDITIONS_FILE, np.concatenate(conds).astype(np.float32, copy=False))
        index = {"format": FORMAT, "split": split, "image_size": image_size, "total_frames": total,
                 "cond_dim": 0 if frames_only else layout.COND_DIM, "n_trajectories": len(items),
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "trajectories": items}
        (tmp / INDEX_FILE).write_text(json.dumps(index, separators=(",", ":")) + "\n", encoding="utf-8")
    return PackReport(split, len(items), total, time.perf_counter() - begin, folder=str(folder),
                      cond_dim=0 if frames_only else layout.COND_DIM)


def pack(root: str | os.PathLike, splits: list[str] | None = None, image_size: int = layout.IMAGE_SIZE,
         workers: int = 1, force: bool = False, progress: bool = True, frames_only: bool = False
         ) -> list[PackReport]:
    """Pack ``splits`` (default: every split folder present under ``root``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data_root {root}: folder not found")
    if splits is None:
        splits = [s for s in layout.SPLITS if (root / s).is_dir()]
        if not splits:
            raise DataError(f"{root}: none of the split folders {', '.join(layout.SPLITS)} found")
    return [pack_split(root, s, image_size, workers, force, progress, frames_only) for s in splits]


# ---- command line: `cvae-data pack` -------------------------------------------------------------------------

def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pack", help="decode every frame once into a memory-mapped cache (ROOT/.packed/<split>/)",
        description="Write each split's frames and conditions as NumPy files under ROOT/.packed/<split>/. "
                    "Training and evaluation use the cache while it matches the PNG/CSV files (same trajectories, "
                    "same file sizes and modification times) and fall back to the PNG files otherwise.")
    p.add_argument("--data_root", required=True, metavar="ROOT", help="data root holding {train,validate,test}/")
    p.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                   help="splits to pack (default: all of train, validate, test that exist)")
    p.add_argument("--image_size", type=int, default=layout.IMAGE_SIZE, help="frame size to expect")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="processes decoding frames in parallel")
    p.add_argument("--force", action="store_true", help="rewrite splits whose cache is already up to date")
    p.add_argument("--frames_only", action="store_true",
                   help="pack the frames without the conditions (for models with --condition none; automatic for "
                        "a split without any condition file)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    reports = pack(args.data_root, args.splits, args.image_size, args.workers, args.force, not args.no_progress,
                   args.frames_only)
    for r in reports:
        what = "frames only, " if r.cond_dim == 0 else ""
        if r.skipped:
            print(f"{r.split:<9} up to date: {r.n_trajectories} trajectories, {r.n_frames} frames ({what}{r.folder})")
        else:
            size = r.n_frames * args.image_size ** 2 * 3 / 2 ** 20
            print(f"{r.split:<9} packed {r.n_trajectories} trajectories, {r.n_frames} frames ({what}{size:.0f} MiB) "
                  f"in {r.seconds:.1f} s -> {r.folder}")
    return 0
