"""`cvae-data check`: scan a data set in the BAIR layout and report every problem, not just the first.

    cvae-data check --data_root ROOT [--splits train validate test] [--min_frames N] [--quick] [--json OUT]

Prints, per kind of problem, a count and the first examples (path and detail), then exits 1 if anything was found,
0 with a one-line "ok" summary otherwise. ``--json OUT`` writes the full list.

Kinds of problem (``KINDS``; a :class:`Problem` always carries one of these):

    missing_split         ROOT/<split> does not exist
    empty_split           a split folder without any trajectory
    empty_group           a group folder without any integer-named trajectory folder
    stray_entry           a file in a split folder, or a file or non-integer folder in a group folder
    no_frames             a trajectory folder without any ``<n>.png``
    missing_frame         a frame absent from 0.png .. {T-1}.png
    extra_frame           a frame beyond the rows of the CSVs, separated from the others by a gap
    extra_file            any other entry of a trajectory folder (``a.png``, ``01.png``, ``notes.txt``)
    frame_count_mismatch  frames 0..n-1 all present, but both CSVs have another number of rows
    too_short             fewer frames than ``min_frames``
    wrong_size            a frame that is not image_size x image_size
    wrong_mode            a frame that is not RGB (grayscale, RGBA, palette)
    unreadable_image      a frame that cannot be opened or decoded (garbage, truncated, bad checksum)
    csv_missing           actions.csv or endeffector_positions.csv absent
    csv_unreadable        a CSV that cannot be read as UTF-8 text
    csv_columns           lines with the wrong number of columns (4 actions, 3 positions)
    csv_not_a_number      lines with a cell that is not a number
    csv_non_finite        lines with NaN or infinity
    csv_rows              the two CSVs disagree in length: the one(s) whose rows differ from the frame count

The trajectory length T is the row count of the CSVs when both are readable and agree, else the number of
frames (largest index + 1). The reader ignores stray entries and extra files and converts any image mode to
RGB, so ``stray_entry``, ``extra_file`` and ``wrong_mode`` (``TOLERATED``) are reported but do not make a
trajectory unusable; every other trajectory problem would stop ``VideoDataset`` or a training step.
Hidden entries (names starting with ".") are skipped, except ``*.partial`` folders left by an interrupted
``cvae-data convert``. Files at ROOT itself (convert.json, synth_config.json, .packed/) are not looked at.

Images: by default each frame is opened, its chunk checksums verified and its pixels fully decoded (what the
reader does). ``--quick`` stops after the checksums (about 5x faster): it still finds garbage, truncated and
corrupted files, but not a compressed stream that is broken while its checksums are intact. Both modes also
flag a PNG cut after its last pixel data (no end marker), which the reader would still load.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..errors import ConfigError
from ..fileio import atomic_write_json
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
EXAMPLES = 3

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


@dataclass
class Report:
    """What ``scan_dataset`` found. ``bad_trajectories`` have a fatal problem; ``flagged_trajectories`` any."""
    root: str
    splits: tuple[str, ...]
    images: str                      # "decoded", "checksums" (--quick) or "not checked"
    trajectories: int = 0
    frames: int = 0
    bad_trajectories: int = 0
    flagged_trajectories: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Problems per kind, in the order of ``KINDS``."""
        c = Counter(p.kind for p in self.problems)
        return {kind: c[kind] for kind in KINDS if c[kind]}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["splits"] = list(self.splits)
        d["ok"] = self.ok
        d["counts"] = self.counts()
        return d


# ----------------------------------------------------------------------------------------------------------------
# One trajectory


def scan_trajectory(traj_dir: str | os.PathLike, image_size: int = layout.IMAGE_SIZE, min_frames: int = 1,
                    check_images: bool = True, decode: bool = True) -> list[Problem]:
    """Every problem of one trajectory folder: frames listed, then CSVs, lengths, and the images in frame order.

    ``check_images=False`` skips opening the frames (listing and CSVs only: what ``VideoDataset`` checks at
    start-up); ``decode=False`` checks headers and checksums without decoding the pixels.
    """
    return _scan_trajectory(Path(traj_dir), image_size, min_frames, check_images, decode)[0]


def _scan_trajectory(traj: Path, image_size: int, min_frames: int, check_images: bool, decode: bool
                     ) -> tuple[list[Problem], int]:
    """(problems, number of frames found)."""
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
    for name, n_cols in _CSV_FILES:
        scan = layout.scan_csv(traj / name, n_cols)
        problems.extend(_csv_problems(scan.issues))
        missing = any(i.kind in ("missing", "unreadable") for i in scan.issues)
        rows.append(None if missing else scan.n_rows)

    n = max(frames) + 1 if frames else 0
    gapless = len(frames) == n
    agreed = rows[0] if rows[0] is not None and rows[0] == rows[1] else None
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
        problems.append(Problem("too_short", str(traj), f"{length} frames, need at least {min_frames}"))

    if check_images:
        for i in sorted(frames):
            problems.extend(check_frame(traj / f"{i}.png", image_size, decode))
    return problems, len(frames)


def _missing(traj: Path, frames: set[int], n: int) -> list[Problem]:
    return [Problem("missing_frame", str(traj / f"{i}.png"), "frame missing") for i in range(n) if i not in frames]


def _csv_problems(issues: list[layout.CsvIssue]) -> list[Problem]:
    """One problem per file and kind: the first offending line, and how many lines share the problem."""
    by_kind: dict[str, list[layout.CsvIssue]] = {}
    for issue in issues:
        by_kind.setdefault(issue.kind, []).append(issue)
    out = []
    for kind, group in by_kind.items():
        first = group[0]
        detail = first.detail if first.line is None else f"line {first.line}: {first.detail}"
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


# ----------------------------------------------------------------------------------------------------------------
# A data set


def _scan_layout(root: Path, split: str) -> tuple[list[Path], list[Problem]]:
    """The trajectories of one split (as ``layout.list_trajectories`` finds them) and the layout problems."""
    split_dir = root / split
    if not split_dir.is_dir():
        return [], [Problem("missing_split", str(split_dir), "split folder not found")]
    problems = []
    for entry in sorted(split_dir.iterdir(), key=lambda p: layout.natural_key(p.name)):
        if not entry.is_dir():
            if _visible(entry.name):
                problems.append(Problem("stray_entry", str(entry), "file in a split folder (expected groups)"))
            continue
        n_trajs = 0
        for item in sorted(entry.iterdir(), key=lambda p: layout.natural_key(p.name)):
            if item.is_dir() and item.name.isdigit():
                n_trajs += 1
            elif item.name.endswith(".partial") and item.is_dir():
                problems.append(Problem("stray_entry", str(item),
                                        "unfinished trajectory left by an interrupted `cvae-data convert`"))
            elif _visible(item.name):
                what = "folder with a non-integer name" if item.is_dir() else "file"
                problems.append(Problem("stray_entry", str(item), f"{what} in a group folder (expected <n>/)"))
        if n_trajs == 0:
            problems.append(Problem("empty_group", str(entry), "no trajectory folders (expected <n>/)"))
    trajectories = layout.list_trajectories(root, split)
    if not trajectories:
        problems.append(Problem("empty_split", str(split_dir), f"no trajectories (expected {split}/<group>/<n>/)"))
    return trajectories, problems


def _visible(name: str) -> bool:
    return not name.startswith(".")


def scan_dataset(root: str | os.PathLike, splits: tuple[str, ...] = layout.SPLITS,
                 image_size: int = layout.IMAGE_SIZE, min_frames: int = 1, check_images: bool = True,
                 decode: bool = True, progress: bool = True) -> Report:
    """Scan the layout and every trajectory of ``splits`` under ``root``; see the module doc for what is checked."""
    start = time.perf_counter()
    root = Path(root)
    images = ("decoded" if decode else "checksums") if check_images else "not checked"
    report = Report(str(root), tuple(splits), images)
    trajectories: list[Path] = []
    for split in splits:
        trajs, problems = _scan_layout(root, split)
        trajectories.extend(trajs)
        report.problems.extend(problems)
    for traj in tqdm(trajectories, desc="check", unit="traj", disable=not progress, dynamic_ncols=True):
        problems, n_frames = _scan_trajectory(traj, image_size, min_frames, check_images, decode)
        report.trajectories += 1
        report.frames += n_frames
        report.problems.extend(problems)
        report.flagged_trajectories += bool(problems)
        report.bad_trajectories += any(p.fatal for p in problems)
    report.seconds = time.perf_counter() - start
    return report


def bad_trajectories(root: str | os.PathLike, split: str, seq_len: int, image_size: int = layout.IMAGE_SIZE,
                     check_images: bool = False, progress: bool = False) -> dict[Path, Problem]:
    """The trajectories of a split that the reader would fail on, each with its first fatal problem.

    Keys are the paths ``layout.list_trajectories`` returns, so a data set can drop them from its list.
    ``seq_len`` is the shortest usable trajectory. Raises DataError if the split folder is missing.
    """
    bad = {}
    trajectories = layout.list_trajectories(root, split)
    for traj in tqdm(trajectories, desc=f"check {split}", unit="traj", disable=not progress, dynamic_ncols=True):
        problems, _ = _scan_trajectory(traj, image_size, seq_len, check_images, decode=True)
        fatal = next((p for p in problems if p.fatal), None)
        if fatal is not None:
            bad[traj] = fatal
    return bad


# ----------------------------------------------------------------------------------------------------------------
# Printing and the command line


def format_report(report: Report, examples: int = EXAMPLES) -> str:
    """Human-readable summary: a count and the first ``examples`` problems per kind, paths relative to the root."""
    scanned = (f"{report.root}: {report.trajectories} trajectories, {report.frames} frames in "
               f"{', '.join(report.splits)} (images {report.images}, {report.seconds:.1f} s)")
    if report.ok:
        return f"ok: {scanned}, no problems"
    lines = [scanned,
             f"{len(report.problems)} problems; {report.flagged_trajectories} trajectories affected, "
             f"{report.bad_trajectories} of them unusable"]
    by_kind: dict[str, list[Problem]] = {}
    for p in report.problems:
        by_kind.setdefault(p.kind, []).append(p)
    for kind, count in report.counts().items():
        lines.append(f"  {kind:<21} {count:>7}  {KINDS[kind]}")
        for p in by_kind[kind][:examples]:
            lines.append(f"      {_relative(p.path, report.root)}: {p.detail}")
        if count > examples:
            lines.append(f"      ... and {count - examples} more")
    return "\n".join(lines)


def _relative(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check", help="scan a data set and report every problem",
        description="Scan ROOT/{train,validate,test}/<group>/<trajectory>/ and report every problem (missing or "
                    "extra frames, wrong size or mode, unreadable PNGs, malformed CSVs, empty folders) with "
                    "counts and examples. Exit code 1 if anything was found.")
    p.add_argument("--data_root", required=True, metavar="ROOT", help="data root (the --data_root of training)")
    p.add_argument("--splits", nargs="+", choices=layout.SPLITS, default=list(layout.SPLITS), metavar="SPLIT",
                   help="splits to scan (default: train validate test)")
    p.add_argument("--image_size", type=int, default=layout.IMAGE_SIZE, help="expected frame width and height")
    p.add_argument("--min_frames", type=int, default=1, metavar="N",
                   help="flag trajectories shorter than N frames (e.g. the training sequence length)")
    p.add_argument("--quick", action="store_true",
                   help="check PNG headers and checksums only, without decoding the pixels (about 5x faster)")
    p.add_argument("--json", metavar="OUT", help="write the full report (every problem) to this JSON file")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.min_frames < 1:
        raise ConfigError(f"--min_frames must be >= 1, got {args.min_frames}")
    if args.image_size < 1:
        raise ConfigError(f"--image_size must be >= 1, got {args.image_size}")
    report = scan_dataset(args.data_root, tuple(args.splits), image_size=args.image_size,
                          min_frames=args.min_frames, decode=not args.quick, progress=not args.no_progress)
    if args.json:
        atomic_write_json(args.json, report.to_dict())
    print(format_report(report))
    return 0 if report.ok else 1
