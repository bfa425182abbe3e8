"""`cvae-predict`: a trained model on your own frames and conditions.

    cvae-predict --ckpt runs/demo/best.pt --frames my_frames/ --actions actions.csv --positions positions.csv \\
                 --n_future 10 --n_samples 3 --out predictions/

``--frames``: a folder of images (PNG, JPEG, BMP, GIF; taken in natural name order: 2.png before 10.png) or a video
file (MP4, AVI, MOV, MKV, WebM, GIF). Every frame becomes RGB and is brought to the model's 64x64 by cropping the
centred square and resizing it with Lanczos (antialiased) filtering. The model starts from the last ``n_past``
frames given (the number it was trained with, unless ``--n_past`` says otherwise).

Conditions: ``--actions`` with 4 columns and ``--positions`` with 3 (the BAIR layout: ``actions.csv`` and
``endeffector_positions.csv``), or ``--actions`` alone with all 7 columns (actions then positions). Row t belongs to
frame t of ``--frames``, so the files need one row per given frame and one per predicted frame. Without positions
the model sees the training mean position (it was trained with real ones: expect worse predictions). The rows are
normalised with the statistics stored in the checkpoint, as in training. A model trained with ``--condition none``
takes no condition: it predicts from the frames alone, and needs neither file.

Writes into ``--out``: ``sample{k}/{t}.png`` (the predicted frames, t counting on from the given ones),
``sample{k}.gif`` and ``sample{k}.mp4`` (the given frames, then the predicted ones), for k = 0 .. n_samples - 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .config import add_cuda_flag
from .data import layout
from .errors import CvaeError, DataError
from .fileio import atomic_write
from .inference import open_for_inference, predict_batch
from .runtime import PRECISIONS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v"}


def to_model_size(image: Image.Image, size: int = layout.IMAGE_SIZE) -> np.ndarray:
    """RGB uint8 (size, size, 3): the centred square of ``image``, resized with Lanczos filtering."""
    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS, box=box), dtype=np.uint8)


def read_frames(path: str | os.PathLike, size: int = layout.IMAGE_SIZE) -> np.ndarray:
    """Frames (T, size, size, 3) uint8 from a folder of images or a video file; DataError naming the file."""
    path = Path(path)
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                       key=lambda p: layout.natural_key(p.name))
        if not files:
            raise DataError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        frames = []
        for f in files:
            try:
                with Image.open(f) as im:
                    frames.append(to_model_size(im, size))
            except Exception as e:   # PIL raises several unrelated types for broken files
                raise DataError(f"{f}: not a readable image ({e.__class__.__name__}: {e})") from None
        return np.stack(frames)
    if not path.is_file():
        raise DataError(f"{path}: no such folder or video file")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise DataError(f"{path}: not a folder of images or a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
    import imageio.v3 as iio
    try:
        video = iio.imread(path, index=None)
    except Exception as e:   # imageio's plugins raise their own types
        hint = (" (reading this format needs `pip install imageio-ffmpeg`)"
                if importlib.util.find_spec("imageio_ffmpeg") is None and path.suffix.lower() != ".gif" else "")
        raise DataError(f"{path}: not a readable video ({e.__class__.__name__}: {e}){hint}") from None
    video = np.asarray(video)
    if video.ndim == 3:   # one grey or one colour frame
        video = video[None] if video.shape[-1] in (3, 4) else video[..., None]
    if video.ndim != 4 or len(video) == 0:
        raise DataError(f"{path}: no frames found (array of shape {video.shape})")
    return np.stack([to_model_size(Image.fromarray(f.squeeze(-1) if f.shape[-1] == 1 else f), size)
                     for f in video])


def read_conditions(actions: str | os.PathLike, positions: str | os.PathLike | None, n_rows: int,
                    stats_mean: tuple[float, ...], sees_positions: bool = True) -> np.ndarray:
    """The (rows, 7) conditions, actions then positions, at least ``n_rows`` rows; DataError naming the file.
    Without positions, the training mean stands in (said on stderr where the model ``sees_positions``)."""
    actions = Path(actions)
    n_cols = layout.ACTION_DIM if positions is not None else None
    if n_cols is None:   # either 4 columns (no positions given) or all 7
        first = next((line for line in _lines(actions) if line.strip()), "")
        n_cols = layout.COND_DIM if len(first.split(",")) == layout.COND_DIM else layout.ACTION_DIM
    a = _read_csv(actions, n_cols, n_rows)
    if positions is not None:
        p = _read_csv(Path(positions), layout.POSITION_DIM, n_rows)
        rows = min(len(a), len(p))
        return np.concatenate([a[:rows], p[:rows]], 1)
    if n_cols == layout.COND_DIM:
        return a
    if sees_positions:
        print("cvae-predict: no --positions: the model sees the training mean position (it was trained with real "
              "ones)", file=sys.stderr)
    mean = np.asarray(stats_mean[layout.ACTION_DIM:], np.float32)
    return np.concatenate([a, np.broadcast_to(mean, (len(a), layout.POSITION_DIM))], 1)


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def _read_csv(path: Path, n_cols: int, n_rows: int) -> np.ndarray:
    scan = layout.scan_csv(path, n_cols)
    if scan.problems:
        raise DataError(scan.problems[0].message)
    if scan.n_rows < n_rows:
        raise DataError(f"{path}: {scan.n_rows} rows, but {n_rows} are needed (one per given frame and one per "
                        f"predicted frame)")
    return scan.values


def predict_own(ckpt: str, frames: str, actions: str | None, positions: str | None, n_future: int, out: str,
                n_samples: int = 3, n_past: int | None = None, seed: int = 0, fps: float = 4, device: str = "cpu",
                precision: str = "auto") -> list[Path]:
    """Predict ``n_future`` frames after the given ones, ``n_samples`` times; returns the files written.
    ``actions`` (and ``positions``) may be None only for a model with ``condition = "none"``."""
    if n_future < 1 or n_samples < 1:
        raise CvaeError(f"--n_future and --n_samples must be >= 1, got {n_future} and {n_samples}")
    trained = open_for_inference(ckpt, device=device, precision=precision, n_past=n_past, script="cvae-predict")
    n_past = n_past or trained.n_past
    given = read_frames(frames)
    if len(given) < n_past:
        raise DataError(f"{frames}: {len(given)} frame(s), but the model starts from {n_past} (--n_past)")
    start = len(given) - n_past
    condition = trained.model.cfg.condition
    if condition == "none":   # the model takes no condition: (1, T, 0)
        if actions is not None or positions is not None:
            print("cvae-predict: the model takes no condition (condition = none): --actions and --positions are "
                  "not used", file=sys.stderr)
        cond = torch.zeros(1, n_past + n_future, 0)
    elif actions is None:
        raise CvaeError(f"the model takes conditions (condition = {condition}): --actions is needed, one row per "
                        f"given and per predicted frame (only a model trained with --condition none predicts "
                        f"without)")
    else:
        stats = trained.stats
        rows = read_conditions(actions, positions, len(given) + n_future, stats.mean,
                               sees_positions=condition in ("full", "positions"))
        cond = torch.from_numpy(stats.normalize(rows[start:start + n_past + n_future]))[None]
    batch = {"frames": torch.from_numpy(given[start:]).permute(0, 3, 1, 2)[None],          # (1, n_past, C, H, W)
             "cond": cond, "index": torch.tensor([0])}                                    # one sequence, number 0
    pred = predict_batch(trained.model, batch, n_past=n_past, n_future=n_future, n_samples=n_samples, seed=seed,
                         amp=trained.amp()).cpu().samples[0]                                # (S, F, C, H, W)
    pred = (pred.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    return _write(Path(out), given, pred, fps)


def _write(out: Path, given: np.ndarray, pred: np.ndarray, fps: float) -> list[Path]:
    """``pred`` (S, F, H, W, 3) uint8 as PNGs per sample, and the given frames followed by each sample as GIF/MP4."""
    import imageio.v3 as iio
    written = []
    mp4 = importlib.util.find_spec("imageio_ffmpeg") is not None
    for k, sample in enumerate(pred):
        folder = out / f"sample{k}"
        for j, frame in enumerate(sample):
            written.append(atomic_write(folder / f"{len(given) + j}.png",
                                        lambda f, a=frame: Image.fromarray(a).save(f, format="PNG")))
        video = np.concatenate([given, sample])
        written.append(atomic_write(out / f"sample{k}.gif", lambda f, v=video: iio.imwrite(
            f, v, extension=".gif", duration=1000 / fps, loop=0)))
        if mp4:
            # H.264 wants sides divisible by 16: 64 is; macro_block_size=1 keeps other sizes as they are
            written.append(atomic_write(out / f"sample{k}.mp4", lambda f, v=video: iio.imwrite(
                f, v, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1)))
    if not mp4:
        print("cvae-predict: no MP4 written: `pip install imageio-ffmpeg` adds them", file=sys.stderr)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cvae-predict", description="Predict the future of your own frames with a "
                                "trained model, given the actions (and positions) to come; a model trained with "
                                "--condition none needs neither.")
    p.add_argument("--ckpt", required=True, help="checkpoint file (best.pt / last.pt)")
    p.add_argument("--frames", required=True, help="folder of images, or a video file: the past frames")
    p.add_argument("--actions", default=None, help="CSV, one row per frame (given and predicted): 4 action "
                   "columns, or 7 (actions then positions) without --positions; needed unless the model was trained "
                   "with --condition none")
    p.add_argument("--positions", default=None, help="CSV of end-effector positions, 3 columns, one row per frame "
                   "(not needed with --condition none)")
    p.add_argument("--n_future", type=int, required=True, help="frames to predict")
    p.add_argument("--n_samples", type=int, default=3, help="futures drawn")
    p.add_argument("--n_past", type=int, default=None, help="frames the model starts from (default: as trained)")
    p.add_argument("--out", default="predictions", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=4)
    p.add_argument("--device", default="cpu")
    add_cuda_flag(p, default="cpu")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        paths = predict_own(args.ckpt, args.frames, args.actions, args.positions, args.n_future, args.out,
                            n_samples=args.n_samples, n_past=args.n_past, seed=args.seed, fps=args.fps,
                            device=args.device, precision=args.precision)
    except CvaeError as e:
        print(f"cvae-predict: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
