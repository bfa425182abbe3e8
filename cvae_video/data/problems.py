"""What makes a trajectory unusable: the one rule that the reader (``VideoDataset``) applies at start-up and that
``cvae-data check`` reports in full.

A trajectory is a folder ``0.png .. {T-1}.png`` with ``actions.csv`` (T rows x 4) and ``endeffector_positions.csv``
(T rows x 3). :func:`scan_trajectory` lists every :class:`Problem` of one, of the kinds in ``KINDS``. The reader
ignores stray entries and extra files and converts any image mode to RGB, so those kinds (``TOLERATED``) are
reported but harmless; any other problem is fatal: the reader leaves the trajectory out or stops, naming the file.

The trajectory length T is the row count of the CSVs when both are readable and agree, else the number of frames
(largest index + 1).

A model trained with ``condition = "none"`` reads no conditions: for it (``with_conditions=False``) a trajectory is
its frames alone, the CSVs are neither needed nor looked at, and T is the number of frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import layout

KINDS = {
    "missing_split": "split folder not found",
    "empty_split": "split without trajectories",
    "empty_group": "group folder without trajectories",
    "stray_entry": "unexpected entry in a split or group folder (ignored by the reader)",
    "no_frames": "trajectory without frames",
    "missing_frame": "frame absent from 0.png .. {T-1}.png",
    "extra_frame": "frame beyond the CSV rows, after a gap",
    "extra_file": "unexpected entry in a trajectory folder (ignored by the reader)",
    "frame_count_mismatch": "frame count differs from the rows of both CSVs",
    "too_short": "fewer frames than asked for",
    "wrong_size": "frame of the wrong size",
    "wrong_mode": "frame not RGB (still readable: converted to RGB)",
    "unreadable_image": "frame cannot be decoded",
    "csv_missing": "CSV file missing",
    "csv_unreadable": "CSV file not readable as text",
    "csv_columns": "CSV lines with the wrong number of columns",
    "csv_not_a_number": "CSV lines with a cell that is not a number",
    "csv_non_finite": "CSV lines with NaN or infinity",
    "csv_rows": "CSV row count differs from the frame count",
}
TOLERATED = frozenset({"stray_entry", "extra_file", "wrong_mode"})

_CSV_KIND = {"missing": "csv_missing", "unreadable": "csv_unreadable", "columns": "csv_columns",
             "not_a_number": "csv_not_a_number", "non_finite": "csv_non_finite", "rows": "csv_rows"}
_CSV_FILES = ((layout.ACTIONS_FILE, layout.ACTION_DIM), (layout.POSITIONS_FILE, layout.POSITION_DIM))


@dataclass(frozen=True)
class Problem:
    """One problem: its ``kind`` (a key of ``KINDS``), the file or folder it concerns, and what is wrong."""
    kind: str
    path: str
    detail: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")

    @property
    def fatal(self) -> bool:
        """True if the reader would fail on it (everything but ``TOLERATED``)."""
        return self.kind not in TOLERATED

    @property
    def message(self) -> str:
        """``path: detail``, as errors name it."""
        return f"{self.path}: {self.detail}"


@dataclass
class TrajectoryScan:
    """What :func:`scan_trajectory` found: every problem, the frames present, and the (T, 7) conditions
    (actions, then positions; float32) when both CSVs are readable and have the trajectory's length, else None;
    without conditions (``with_conditions=False``) a (T, 0) array for a trajectory with frames."""
    problems: list[Problem]
    n_frames: int
    conditions: np.ndarray | None

    @property
    def fatal(self) -> Problem | None:
        """The first problem that makes the trajectory unusable, or None."""
        return next((p for p in self.problems if p.fatal), None)


def too_short(traj: Path | str, length: int, min_frames: int) -> Problem:
    return Problem("too_short", str(traj), f"{length} frames, but sequences of {min_frames} frames were asked for")


def scan_trajectory(traj_dir: str | os.PathLike, image_size: int = layout.IMAGE_SIZE, min_frames: int = 1,
                    check_images: bool = True, decode: bool = True, with_conditions: bool = True) -> TrajectoryScan:
    """Every problem of one trajectory folder: frames listed, then CSVs, lengths, and the images in frame order.

    ``check_images=False`` skips opening the frames (listing and CSVs only: what ``VideoDataset`` checks at
    start-up); ``decode=False`` checks headers and checksums without decoding the pixels.
    ``with_conditions=False``: the frames alone, for a model without conditions (the CSVs are not read).
    """
    traj = Path(traj_dir)
    problems: list[Problem] = []
    frames: set[int] = set()
    with os.scandir(traj) as it:
        entries = sorted(it, key=lambda e: layout.natural_key(e.name))
    for entry in entries:
        name = entry.name
        index = layout.frame_index(name)
        if index is not None and name == f"{index}.png" and entry.is_file():
            frames.add(index)
        elif name not in (layout.ACTIONS_FILE, layout.POSITIONS_FILE) and not name.startswith("."):
            problems.append(Problem("extra_file", str(traj / name), "not a frame (<n>.png) or a condition CSV"))

    rows: list[int | None] = []
    values = []
    for name, n_cols in (_CSV_FILES if with_conditions else ()):
        scan = layout.scan_csv(traj / name, n_cols)
        problems.extend(_csv_problems(scan.problems))
        missing = any(p.kind in ("missing", "unreadable") for p in scan.problems)
        rows.append(None if missing else scan.n_rows)
        values.append(scan.values)

    n = max(frames) + 1 if frames else 0
    gapless = len(frames) == n
    agreed = rows[0] if with_conditions and rows[0] is not None and rows[0] == rows[1] else None
    if not frames:
        problems.insert(0, Problem("no_frames", str(traj), "no frames (expected 0.png, 1.png, ...)"))
        length = agreed or 0
    elif agreed is None or agreed == n or gapless:
        length = n
        problems[:0] = _missing(traj, frames, n)
        if agreed is not None and agreed != n:
            problems.append(Problem("frame_count_mismatch", str(traj),
                                    f"{n} frames (0.png .. {n - 1}.png) but both CSVs have {agreed} rows"))
        elif agreed is None:
            for (name, _), r in zip(_CSV_FILES, rows):
                if r is not None and r != n:
                    problems.append(Problem("csv_rows", str(traj / name),
                                            f"expected {n} rows (one per frame), found {r}"))
    else:
        # frames on both sides of a gap: the CSVs, which agree with each other, say where the trajectory ends
        length = agreed
        extra = [Problem("extra_frame", str(traj / f"{i}.png"), f"beyond the {agreed} rows of the CSVs")
                 for i in sorted(frames) if i >= agreed]
        problems[:0] = _missing(traj, frames, agreed) + extra
    if frames and length < min_frames:
        problems.append(too_short(traj, length, min_frames))

    if check_images:
        for i in sorted(frames):
            problems.extend(check_frame(traj / f"{i}.png", image_size, decode))
    usable = all(v is not None and len(v) == length for v in values) and length > 0
    if not with_conditions:
        return TrajectoryScan(problems, len(frames), np.zeros((length, 0), np.float32) if usable else None)
    return TrajectoryScan(problems, len(frames), np.concatenate(values, 1) if usable else None)


def _missing(traj: Path, frames: set[int], n: int) -> list[Problem]:
    return [Problem("missing_frame", str(traj / f"{i}.png"), "frame missing") for i in range(n) if i not in frames]


def _csv_problems(found: list[layout.CsvProblem]) -> list[Problem]:
    """One problem per file and kind: the first offending line, and how many lines share the problem."""
    by_kind: dict[str, list[layout.CsvProblem]] = {}
    for p in found:
        by_kind.setdefault(p.kind, []).append(p)
    out = []
    for kind, group in by_kind.items():
        first = group[0]
        detail = first.detail if first.line is None else f"line {first.line}: {first.detail}"
        if kind == "missing":
            detail += " (only a model trained with --condition none does without the condition files)"
        if len(group) > 1:
            detail += f" ({len(group)} lines)"
        out.append(Problem(_CSV_KIND[kind], str(first.path), detail))
    return out


def check_frame(path: Path, image_size: int = layout.IMAGE_SIZE, decode: bool = True) -> list[Problem]:
    """Problems of one frame file: size, mode, and whether it opens, passes its checksums and (``decode``) decodes."""
    problems = []
    try:
        with Image.open(path) as im:
            if im.size != (image_size, image_size):
                problems.append(Problem("wrong_size", str(path), f"frame is {im.size[0]}x{im.size[1]}, "
                                                                 f"expected {image_size}x{image_size}"))
            if im.mode != "RGB":
                problems.append(Problem("wrong_mode", str(path), f"mode {im.mode}, expected RGB"))
            im.verify()  # reads every chunk and checks its CRC; leaves `im` unusable
        if decode:
            with Image.open(path) as im:
                im.load()
    except Exception as e:  # PIL raises several unrelated types for broken files
        problems.append(Problem("unreadable_image", str(path), f"unreadable image ({e.__class__.__name__}: {e})"))
    return problems
