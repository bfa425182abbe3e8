"""`cvae-make-gif`: pictures of a checkpoint's predictions for chosen sequences.

For each sequence index: an animated GIF with ground truth, the best sample (by SSIM) and a few random samples
side by side, and a PNG grid with one row of ground truth and one row per sample, one column per time step.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .config import add_cuda_flag
from .errors import CvaeError
from .evaluate import PROTOCOLS, protocol_frames
from .inference import open_for_inference, predict_batch, save_pictures, take_batch
from .runtime import PRECISIONS


@dataclass
class PictureConfig:
    """What ``cvae-make-gif`` draws (its flags)."""
    indices: list[int] = field(default_factory=lambda: [0, 1, 2])   # sequence indices in the split
    data_root: str = ""              # empty: the data the model was trained on
    split: str = "test"
    protocol: str = "lab"            # how many frames are given and predicted (see cvae_video.evaluate)
    n_samples: int = 5               # futures drawn per sequence; the best by SSIM is shown first
    n_show: int = 3                  # samples shown per sequence
    seed: int = 0
    fps: float = 4
    device: str = "cpu"               # "cpu", "cuda", "cuda:1" (--cuda: "cuda")
    precision: str = "auto"           # auto: bf16 where it is faster (CUDA; CPUs by a start-up probe), else fp32


def make_pictures(ckpt_path: str, out_dir: str, cfg: PictureConfig | None = None) -> list[Path]:
    """Write ``seq{i}.gif`` and ``seq{i}_grid.png`` into ``out_dir`` per index of ``cfg.indices``; returns the
    paths written."""
    cfg = cfg or PictureConfig()
    n_past, n_future = protocol_frames(cfg.protocol)
    trained = open_for_inference(ckpt_path, device=cfg.device, precision=cfg.precision, n_past=n_past,
                                 script="cvae-make-gif")
    ds = trained.open_split(cfg.data_root, cfg.split, n_past + n_future)
    pred = predict_batch(trained.model, take_batch(ds, cfg.indices), n_past=n_past, n_future=n_future,
                         n_samples=cfg.n_samples, seed=cfg.seed, amp=trained.amp()).cpu()
    out = Path(out_dir)
    written = []
    for b, idx in enumerate(cfg.indices):
        written += save_pictures(pred, b, grid=out / f"seq{idx}_grid.png", gif=out / f"seq{idx}.gif",
                                 n_show=cfg.n_show, fps=cfg.fps)
    return written


def build_parser() -> argparse.ArgumentParser:
    d = PictureConfig()
    p = argparse.ArgumentParser(prog="cvae-make-gif", description="GIFs and grids of a checkpoint's predictions.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint file (best.pt / last.pt)")
    p.add_argument("--out", default="pictures", help="output folder")
    p.add_argument("--indices", type=int, nargs="+", default=d.indices, help="sequence indices in the split")
    p.add_argument("--data_root", default=d.data_root, help="data set root (default: the one the model was trained on)")
    p.add_argument("--split", default=d.split, choices=["train", "validate", "test"])
    p.add_argument("--protocol", default=d.protocol, choices=sorted(PROTOCOLS))
    p.add_argument("--n_samples", type=int, default=d.n_samples, help="samples drawn; the best by SSIM is shown first")
    p.add_argument("--n_show", type=int, default=d.n_show, help="samples shown per sequence")
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    add_cuda_flag(p, default=d.device)
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                   help="precision of the prediction (as cvae-eval); auto: bf16 where it is faster here, else fp32")
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    ckpt, out = args.pop("ckpt"), args.pop("out")
    try:
        paths = make_pictures(ckpt, out, PictureConfig(**args))
    except CvaeError as e:
        print(f"cvae-make-gif: error: {e}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
