"""The BAIR directory layout: finding trajectories, reading and writing one trajectory.

    ROOT/{train,validate,test}/<group>/<trajectory>/0.png ... {T-1}.png
                                                   /actions.csv               # T rows x 4 floats
                                                   /endeffector_positions.csv # T rows x 3 floats

Group names are free-form (``traj_0_to_255``, ``traj_0_to_255.tfrecords``); trajectory folders are integers.
Both are sorted numerically (natural order), so every reader sees the same sequence order.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from ..errors import DataError

SPLITS = ("train", "validate", "test")
ACTIONS_FILE = "actions.csv"
POSITIONS_FILE = "endeffector_positions.csv"
ACTION_DIM = 4
POSITION_DIM = 3
COND_DIM = ACTION_DIM + POSITION_DIM
IMAGE_SIZE = 64

_NUM = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded integers numerically: traj_2 < traj_10."""
    return tuple(int(p) if p.isdigit() else p for p in _NUM.split(name))


def list_trajectories(root: str | os.PathLike, split: str) -> list[Path]:
    """All trajectory folders of one split, in natural (group, trajectory) order."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder not found (expected ROOT/{split}/<group>/<trajectory>/)")
    out: list[Path] = []
    for group in sorted((g for g in split_dir.iterdir() if g.is_dir()), key=lambda p: natural_key(p.name)):
        trajs = [t for t in group.iterdir() if t.is_dir() and t.name.isdigit()]
        out.extend(sorted(trajs, key=lambda p: int(p.name)))
    return out


def count_frames(traj_dir: Path) -> int:
    """Number of frames of a trajectory: 0.png .. {n-1}.png, all present; DataError naming a gap."""
    indices = set()
    with os.scandir(traj_dir) as it:
        for entry in it:
            index = frame_index(entry.name)
            if index is not None:
                indices.add(index)
    if not indices:
        raise DataError(f"{traj_dir}: no frames (expected 0.png, 1.png, ...)")
    n = max(indices) + 1
    if len(indices) != n:
        first = min(set(range(n)) - indices)
        raise DataError(f"{traj_dir / f'{first}.png'}: frame missing ({n - len(indices)} of {n} missing)")
    return n


def frame_index(name: str) -> int | None:
    """The frame number of a file name ``<digits>.png`` (``7.png`` -> 7), else None."""
    stem, _, ext = name.partition(".")
    return int(stem) if ext == "png" and stem.isdigit() else None


@dataclass(frozen=True)
class CsvProblem:
    """One problem of a condition CSV, as :func:`scan_csv` finds it (``cvae-data check`` reports one
    :class:`~cvae_video.data.problems.Problem` per file and kind of them).

    ``kind`` is one of "missing", "unreadable", "columns", "not_a_number", "non_finite" (these name a ``line``)
    or "rows". ``message`` is the text of the DataError that ``read_csv`` raises for it.
    """
    kind: str
    path: Path
    line: int | None
    detail: str

    @property
    def message(self) -> str:
        where = f"{self.path}, line {self.line}" if self.line is not None else f"{self.path}"
        return f"{where}: {self.detail}"


class CsvScan(NamedTuple):
    values: np.ndarray | None   # float32 (rows, n_cols); None if the file is missing or any line is malformed
    n_rows: int                 # non-empty lines, well-formed or not
    problems: list[CsvProblem]  # in file order; a row-count problem (if asked for) comes last


def scan_csv(path: Path, n_cols: int, n_rows: int | None = None, stop_at_first: bool = False) -> CsvScan:
    """Parse a headerless CSV of floats without raising: the values and every problem found.

    Each line must hold ``n_cols`` finite numbers; blank lines are ignored. If ``n_rows`` is given, a different
    number of lines is a problem of kind "rows". ``stop_at_first`` returns at the first problem (``read_csv``).
    """
    path = Path(path)
    if not path.is_file():
        return CsvScan(None, 0, [CsvProblem("missing", path, None, "file not found")])
    rows: list[list[float]] = []
    problems: list[CsvProblem] = []
    count = 0
    try:
        with open(path, "r", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                count += 1
                problem = None
                cells = line.split(",")
                if len(cells) != n_cols:
                    problem = CsvProblem("columns", path, lineno, f"expected {n_cols} columns, found {len(cells)}")
                else:
                    try:
                        values = [float(c) for c in cells]
                    except ValueError:
                        problem = CsvProblem("not_a_number", path, lineno, f"not a number in {line!r}")
                    else:
                        if all(math.isfinite(v) for v in values):
                            rows.append(values)
                        else:
                            problem = CsvProblem("non_finite", path, lineno, f"non-finite value in {line!r}")
                if problem is not None:
                    problems.append(problem)
                    if stop_at_first:
                        return CsvScan(None, count, problems)
    except (OSError, UnicodeDecodeError) as e:
        problem = CsvProblem("unreadable", path, None, f"unreadable ({e.__class__.__name__}: {e})")
        return CsvScan(None, count, problems + [problem])
    if n_rows is not None and count != n_rows:
        problems.append(CsvProblem("rows", path, None, f"expected {n_rows} rows (one per frame), found {count}"))
    values = np.asarray(rows, dtype=np.float32).reshape(len(rows), n_cols) if len(rows) == count else None
    return CsvScan(values, count, problems)


def read_csv(path: Path, n_rows: int | None, n_cols: int) -> np.ndarray:
    """Read a headerless CSV of floats: exactly ``n_cols`` columns and (if given) exactly ``n_rows`` rows.

    Returns float32 (rows, n_cols). Every problem is a DataError naming the file and, where it helps, the line.
    """
    scan = scan_csv(path, n_cols, n_rows, stop_at_first=True)
    if scan.problems:
        raise DataError(scan.problems[0].message)
    return scan.values


def read_frame(path: Path, size: int = IMAGE_SIZE) -> np.ndarray:
    """One RGB frame as uint8 (H, W, 3); DataError if missing, unreadable or the wrong size."""
    if not path.is_file():
        raise DataError(f"{path}: frame missing")
    try:
        with Image.open(path) as im:
            if im.size != (size, size):
                raise DataError(f"{path}: frame is {im.size[0]}x{im.size[1]}, expected {size}x{size}")
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:  # PIL raises several unrelated types for broken files
        raise DataError(f"{path}: unreadable image ({e.__class__.__name__}: {e})") from None
    return arr


def read_conditions(traj_dir: Path, n_frames: int) -> np.ndarray:
    """Condition rows c_t = concat(action_t, position_t), (T, 7) float32; each CSV must have T rows."""
    actions = read_csv(traj_dir / ACTIONS_FILE, n_frames, ACTION_DIM)
    positions = read_csv(traj_dir / POSITIONS_FILE, n_frames, POSITION_DIM)
    return np.concatenate([actions, positions], axis=1)


def write_trajectory(traj_dir: str | os.PathLike, frames: np.ndarray, actions: np.ndarray,
                     positions: np.ndarray, compress_level: int = 1) -> None:
    """Write one trajectory in the BAIR layout: frames (T, H, W, 3) uint8, actions (T, 4), positions (T, 3)."""
    traj_dir = Path(traj_dir)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(actions) != len(frames) or len(positions) != len(frames):
        raise ValueError("frames, actions and positions must have the same length")
    traj_dir.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(traj_dir / f"{t}.png", compress_level=compress_level)
    _write_csv(traj_dir / ACTIONS_FILE, actions)
    _write_csv(traj_dir / POSITIONS_FILE, positions)


def _write_csv(path: Path, rows: np.ndarray) -> None:
    # repr-exact float32 text, so a round trip through the layout is lossless
    lines = [",".join(repr(float(v)) for v in np.asarray(row, dtype=np.float32)) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
