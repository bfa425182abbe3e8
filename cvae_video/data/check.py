"""`cvae-data check`: scan a data set in the BAIR layout and report every problem, not just the first.

    cvae-data check --data_root ROOT [--splits train validate test] [--min_frames N] [--quick] [--json OUT]
                    [--condition {full,actions,positions,none}]

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

Which of them make a trajectory unusable is one rule, in :mod:`cvae_video.data.problems`, that the reader applies
too: ``stray_entry``, ``extra_file`` and ``wrong_mode`` (``TOLERATED``) are reported but harmless; every other
trajectory problem would stop ``VideoDataset`` or a training step.
Hidden entries (names starting with ".") are skipped, except ``*.partial`` folders left by an interrupted
``cvae-data convert``. Files at ROOT itself (convert.json, synth_config.json, .packed/) are not looked at.

``--condition none`` checks the data set as a model without conditions reads it: the frames alone, the CSVs
neither needed nor looked at (the ``csv_*`` kinds do not arise), so a data set of frames only passes.

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

from tqdm import tqdm

from ..errors import ConfigError
from ..fileio import atomic_write_json
from . import layout
from .problems import KINDS, Problem, scan_trajectory

EXAMPLES = 3
# the model's choices (cvae_video.models.svg.CONDITIONS), named here so that the data tools need not import torch
CONDITIONS = ("full", "actions", "positions", "none")

@dataclass
class ScanReport:
    """What ``scan_dataset`` found. ``bad_trajectories`` have a fatal problem; ``flagged_trajectories`` any."""
    root: str
    splits: tuple[str, ...]
    images: str                      # "decoded", "checksums" (--quick) or "not checked"
    conditions: bool = True          # False: checked as a model with --condition none reads it (frames alone)
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
                 decode: bool = True, progress: bool = True, with_conditions: bool = True) -> ScanReport:
    """Scan the layout and every trajectory of ``splits`` under ``root``; see the module doc for what is checked.
    ``with_conditions=False``: the frames alone, as the reader of a model with ``condition = "none"``."""
    start = time.perf_counter()
    root = Path(root)
    images = ("decoded" if decode else "checksums") if check_images else "not checked"
    report = ScanReport(str(root), tuple(splits), images, conditions=with_conditions)
    trajectories: list[Path] = []
    for split in splits:
        trajs, problems = _scan_layout(root, split)
        trajectories.extend(trajs)
        report.problems.extend(problems)
    for traj in tqdm(trajectories, desc="check", unit="traj", disable=not progress, dynamic_ncols=True):
        scan = scan_trajectory(traj, image_size, min_frames, check_images, decode, with_conditions)
        problems, n_frames = scan.problems, scan.n_frames
        report.trajectories += 1
        report.frames += n_frames
        report.problems.extend(problems)
        report.flagged_trajectories += bool(problems)
        report.bad_trajectories += any(p.fatal for p in problems)
    report.seconds = time.perf_counter() - start
    return report


# ----------------------------------------------------------------------------------------------------------------
# Printing and the command line


def format_report(report: ScanReport, examples: int = EXAMPLES) -> str:
    """Human-readable summary: a count and the first ``examples`` problems per kind, paths relative to the root."""
    scanned = (f"{report.root}: {report.trajectories} trajectories, {report.frames} frames in "
               f"{', '.join(report.splits)} (images {report.images}, "
               f"{'' if report.conditions else 'frames only, conditions not read, '}{report.seconds:.1f} s)")
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
    p.add_argument("--condition", choices=CONDITIONS, default="full",
                   help="the --condition of the model to train: none checks the frames alone (the condition CSVs "
                        "are not needed and not read, as training with --condition none reads none); the others "
                        "need both CSVs (default: %(default)s)")
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
                          min_frames=args.min_frames, decode=not args.quick, progress=not args.no_progress,
                          with_conditions=args.condition != "none")
    if args.json:
        atomic_write_json(args.json, report.to_dict())
    print(format_report(report))
    return 0 if report.ok else 1
