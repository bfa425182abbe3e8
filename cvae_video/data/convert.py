"""`cvae-data convert`: the original BAIR release (TFRecord files, softmotion30_44k) to the BAIR layout of
:mod:`cvae_video.data.layout`.

No TensorFlow is needed: ``tfrecord.py`` reads the framing and the ``tf.train.Example`` payloads.

    DIR/train/traj_256_to_511.tfrecords  record 7  ->  ROOT/train/traj_256_to_511/7/
    DIR/train/traj_0_to_255.tfrecords    record 7  ->  ROOT/validate/traj_0_to_255/7/   (the validate set)
    DIR/test/traj_0_to_255.tfrecords     record 7  ->  ROOT/test/traj_0_to_255/7/

Each trajectory folder holds ``0.png .. {T-1}.png`` from ``{i}/image_aux1/encoded`` (raw 64x64x3 uint8 bytes),
``actions.csv`` from ``{i}/action`` (4 floats) and ``endeffector_positions.csv`` from ``{i}/endeffector_pos``
(3 floats). T is found from the keys (largest step index + 1; 30 in BAIR) and every step must have all three.

- Groups are named after their source file without the ``.tfrecords`` suffix; trajectory folders are the record's
  index in that file, from 0.
- Validate set: the first ``--validate_count`` records (default 256) of the train split, reading the train files
  in natural name order (traj_0_to_255, traj_256_to_511, ...) and each file from its first record. On the real
  release that is exactly ``train/traj_0_to_255.tfrecords``. These records are not also written to train. The
  choice is made from the record positions alone, so a record skipped as corrupt leaves a gap rather than
  pulling another record in, and every run (or resumed run) picks the same set.
- DIR may be the extracted ``softmotion30_44k`` folder or the folder that contains it.
- Resumable: each trajectory is written into a hidden ``.<n>.partial`` folder beside its place and renamed when
  complete, so a trajectory folder that exists is complete and is skipped; a leftover partial folder is redone.
  ``ROOT/convert.json`` records the settings, and a rerun with another ``--validate_count`` is refused (it would
  leave records in both validate and train).
- ``--workers N`` converts chunks of records (of several files) in N processes; the progress bar counts records.
- A record with a bad CRC, a cut-off file or a malformed example stops the conversion with an error naming file
  and record; with ``--skip_corrupt`` the record (for a cut or unreadable header: the rest of that file) is
  skipped, listed and counted instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..fileio import atomic_write_json
from . import tfrecord
from ._pool import run_with_progress
from .layout import ACTION_DIM, IMAGE_SIZE, POSITION_DIM, natural_key, write_trajectory

IMAGE_KEY = "{}/image_aux1/encoded"
ACTION_KEY = "{}/action"
POSITION_KEY = "{}/endeffector_pos"
SOURCE_SPLITS = ("train", "test")
MANIFEST = "convert.json"
CHUNK = 8  # records per job: small enough for a smooth progress bar and even load across workers

_STEP_KEY = re.compile(r"^(\d+)/(?:image_aux1/encoded|action|endeffector_pos)$")
_FRAME_BYTES = IMAGE_SIZE * IMAGE_SIZE * 3


# ----------------------------------------------------------------------------------------------------------------
# One record <-> one trajectory


def decode_bair_example(payload: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """frames (T, 64, 64, 3) uint8, actions (T, 4) float32, positions (T, 3) float32 of one BAIR record.

    DataError naming the feature if a step lacks one of the three features or has the wrong size.
    """
    features = tfrecord.parse_example(payload)
    steps = [int(m.group(1)) for m in map(_STEP_KEY.match, features) if m]
    if not steps:
        some = ", ".join(sorted(features)[:5]) or "none"
        raise DataError(f"no BAIR step features ('{IMAGE_KEY.format('i')}', '{ACTION_KEY.format('i')}', "
                        f"'{POSITION_KEY.format('i')}') found; features present: {some}")
    n_steps = max(steps) + 1
    frames = np.empty((n_steps, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    actions = np.empty((n_steps, ACTION_DIM), dtype=np.float32)
    positions = np.empty((n_steps, POSITION_DIM), dtype=np.float32)
    for i in range(n_steps):
        image = _feature(features, IMAGE_KEY.format(i), bytes, 1)[0]
        if len(image) != _FRAME_BYTES:
            hint = " (PNG-encoded? BAIR stores raw pixels)" if image[:4] == b"\x89PNG" else ""
            raise DataError(f"feature '{IMAGE_KEY.format(i)}': {len(image)} bytes, expected {_FRAME_BYTES} "
                            f"(raw {IMAGE_SIZE}x{IMAGE_SIZE}x3 uint8){hint}")
        frames[i] = np.frombuffer(image, dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE, 3)
        actions[i] = _feature(features, ACTION_KEY.format(i), float, ACTION_DIM)
        positions[i] = _feature(features, POSITION_KEY.format(i), float, POSITION_DIM)
    return frames, actions, positions


def _feature(features: dict[str, list], key: str, kind: type, size: int) -> list:
    if key not in features:
        raise DataError(f"feature '{key}' missing")
    values = features[key]
    if len(values) != size:
        raise DataError(f"feature '{key}': {len(values)} values, expected {size}")
    if not isinstance(values[0], kind):
        raise DataError(f"feature '{key}': {type(values[0]).__name__} values, expected {kind.__name__}")
    return values


# ----------------------------------------------------------------------------------------------------------------
# Planning: which record goes where


@dataclass(frozen=True)
class Job:
    """A run of records of one source file, each with the split it goes to."""

    path: str
    group: str
    records: tuple[tuple[tfrecord.RecordSpan, str], ...]


@dataclass
class ConversionReport:
    """What a conversion did. ``written`` counts new trajectories per split."""

    written: dict[str, int] = field(default_factory=lambda: {"train": 0, "validate": 0, "test": 0})
    existing: int = 0
    skipped: list[str] = field(default_factory=list)  # one message per corrupt record or cut file
    seconds: float = 0.0

    @property
    def n_written(self) -> int:
        return sum(self.written.values())


def find_sources(tfrecords_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """The ``*.tfrecords`` files of DIR/train and DIR/test, each in natural name order."""
    base = Path(tfrecords_dir)
    if not base.is_dir():
        raise DataError(f"{base}: folder not found")
    if not any((base / s).is_dir() for s in SOURCE_SPLITS) and (base / "softmotion30_44k").is_dir():
        base = base / "softmotion30_44k"
    sources = {}
    for split in SOURCE_SPLITS:
        folder = base / split
        files = [p for p in folder.glob("*.tfrecords") if p.is_file()] if folder.is_dir() else []
        sources[split] = sorted(files, key=lambda p: natural_key(p.name))
    if not any(sources.values()):
        raise DataError(f"{base}: no *.tfrecords files in {base / 'train'} or {base / 'test'} (expected the "
                        f"extracted softmotion30_44k folder)")
    return sources


def group_name(path: Path) -> str:
    return path.name[: -len(".tfrecords")] if path.name.endswith(".tfrecords") else path.name


def plan(sources: dict[str, list[Path]], validate_count: int, skip_corrupt: bool, check_crc: bool,
         report: ConversionReport) -> list[Job]:
    """Index every file (headers only) and cut the records into jobs with their destination split."""
    jobs: list[Job] = []
    n_train = 0
    to_validate = validate_count
    for split in SOURCE_SPLITS:
        for path in sources[split]:
            spans, error = tfrecord.index_records(path, check_crc)
            if error is not None:
                if not skip_corrupt:
                    raise error
                report.skipped.append(f"{error} (rest of file skipped)")
            dests = []
            for span in spans:
                if split == "train" and to_validate > 0:
                    dests.append((span, "validate"))
                    to_validate -= 1
                else:
                    dests.append((span, split))
            n_train += len(spans) if split == "train" else 0
            for start in range(0, len(dests), CHUNK):
                jobs.append(Job(str(path), group_name(path), tuple(dests[start:start + CHUNK])))
    if validate_count > n_train:
        raise ConfigError(f"--validate_count {validate_count} is more than the {n_train} train records found")
    return jobs


def _check_manifest(out_root: Path, source: Path, validate_count: int) -> None:
    path = out_root / MANIFEST
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable ({e}); remove it to start over") from None
        if previous.get("validate_count") != validate_count:
            raise ConfigError(f"{out_root} was converted with --validate_count {previous.get('validate_count')}; "
                              f"resume with that value or convert into an empty folder")
        return
    out_root.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "bair-tfrecord", "source": str(source.resolve()), "validate_count": validate_count,
                "validate_rule": "first validate_count train records, files in natural name order"}
    atomic_write_json(path, manifest)


# ----------------------------------------------------------------------------------------------------------------
# Converting


def _convert_job(args: tuple[Job, str, bool, bool]) -> ConversionReport:
    """Write the trajectories of one job that are not there yet. Runs in a worker process."""
    job, out_root, skip_corrupt, check_crc = args
    report = ConversionReport()
    with open(job.path, "rb") as f:
        for span, split in job.records:
            group_dir = Path(out_root) / split / job.group
            dest = group_dir / str(span.index)
            if dest.is_dir():
                report.existing += 1
                continue
            partial = group_dir / f".{span.index}.partial"
            if partial.exists():
                shutil.rmtree(partial)
            try:
                payload = tfrecord.read_record(f, span, job.path, check_crc)
                try:
                    frames, actions, positions = decode_bair_example(payload)
                except DataError as e:
                    raise DataError(f"{job.path}: record {span.index}: {e}") from None
            except DataError as e:
                if not skip_corrupt:
                    raise
                report.skipped.append(str(e))
                continue
            write_trajectory(partial, frames, actions, positions)
            os.rename(partial, dest)
            report.written[split] += 1
    return report


def convert(tfrecords_dir: str | os.PathLike, out_root: str | os.PathLike, validate_count: int = 256,
            workers: int = 1, skip_corrupt: bool = False, check_crc: bool = True, progress: bool = True
            ) -> ConversionReport:
    """Convert the BAIR TFRecord release under ``tfrecords_dir`` into the layout under ``out_root``."""
    if validate_count < 0:
        raise ConfigError(f"--validate_count must be >= 0, got {validate_count}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    start = time.perf_counter()
    report = ConversionReport()
    sources = find_sources(tfrecords_dir)
    jobs = plan(sources, validate_count, skip_corrupt, check_crc, report)
    out_root = Path(out_root)
    _check_manifest(out_root, Path(tfrecords_dir), validate_count)
    tasks = [(job, str(out_root), skip_corrupt, check_crc) for job in jobs]
    total = sum(len(job.records) for job in jobs)
    with tqdm(total=total, unit="rec", desc="convert", disable=not progress, dynamic_ncols=True) as bar:
        def gather(part: ConversionReport) -> int:   # one job's report into the whole; the records it went through
            for split, n in part.written.items():
                report.written[split] += n
            report.existing += part.existing
            report.skipped.extend(part.skipped)
            for message in part.skipped:
                bar.write(f"skipped: {message}")
            return part.n_written + part.existing + len(part.skipped)

        run_with_progress(_convert_job, [(task,) for task in tasks], workers, bar, count=gather)
    report.seconds = time.perf_counter() - start
    return report


# ----------------------------------------------------------------------------------------------------------------
# Command line


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert", help="convert the original BAIR TFRecord release (no TensorFlow needed)",
        description="Convert the BAIR robot-pushing TFRecord files (softmotion30_44k/{train,test}/*.tfrecords) "
                    "into ROOT/{train,validate,test}/<group>/<trajectory>/ with frames, actions and positions. "
                    "Resumable: trajectories already written are skipped.")
    p.add_argument("--tfrecords", required=True, metavar="DIR",
                   help="the extracted softmotion30_44k folder (holding train/ and test/), or its parent")
    p.add_argument("--out", required=True, metavar="ROOT", help="data root to write (the --data_root of training)")
    p.add_argument("--validate_count", type=int, default=256, metavar="N",
                   help="the first N train records (files in natural order) form the validate split (default 256)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="processes converting in parallel")
    p.add_argument("--skip_corrupt", action="store_true",
                   help="skip corrupt or truncated records (listed and counted) instead of stopping")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    report = convert(args.tfrecords, args.out, validate_count=args.validate_count, workers=args.workers,
                     skip_corrupt=args.skip_corrupt)
    rate = report.n_written / report.seconds if report.seconds > 0 else 0.0
    per_split = ", ".join(f"{split} {n}" for split, n in report.written.items())
    print(f"wrote {report.n_written} trajectories ({per_split}) to {args.out} in {report.seconds:.1f} s "
          f"({rate:.1f} records/s); {report.existing} already present")
    if report.skipped:
        print(f"skipped {len(report.skipped)} corrupt record(s) or cut file(s):")
        for message in report.skipped:
            print(f"  {message}")
    return 0
