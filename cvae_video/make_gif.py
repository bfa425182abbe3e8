"""`cvae-make-gif`: pictures of a checkpoint's predictions for chosen sequences.

For each sequence index: an animated GIF with ground truth, the best sample (by SSIM) and a few random samples
side by side, and a PNG grid with one row of ground truth and one row per sample, one column per time step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from . import metrics
from .checkpoint import inference_model, load_checkpoint
from .data.dataset import ConditionStats, VideoDataset, frames_to_float
from .errors import CvaeError, DataError
from .evaluate import PROTOCOLS
from .runtime import resolve_device


def make_pictures(ckpt_path: str, out_dir: str, indices: list[int], data_root: str = "", split: str = "test",
                  protocol: str = "lab", n_samples: int = 5, n_show: int = 3, seed: int = 0, fps: int = 4,
                  device: str = "", cuda: bool = False) -> list[Path]:
    """Write ``seq{i}.gif`` and ``seq{i}_grid.png`` per index; returns the paths written."""
    from .viz import save_gif, save_prediction_grid
    dev = resolve_device(device, cuda)
    ckpt = load_checkpoint(ckpt_path)
    model = inference_model(ckpt, str(ckpt_path), dev)
    n_past, n_future = PROTOCOLS[protocol]
    root = data_root or ckpt.get("train_config", {}).get("resolved_data_root", "")
    if not root or not Path(root).is_dir():
        raise DataError(f"--data_root {root or '(none)'}: folder not found")
    ds = VideoDataset(root, split, n_past + n_future, stats=ConditionStats.from_dict(ckpt["cond_stats"]))
    bad = [i for i in indices if not 0 <= i < len(ds)]
    if bad:
        raise CvaeError(f"sequence index {bad[0]} out of range: the {split} split has {len(ds)} sequences")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    batch = next(iter(DataLoader(Subset(ds, indices), batch_size=len(indices))))
    x = frames_to_float(batch["frames"].to(dev))                       # (B, T, C, H, W)
    gen = torch.Generator(dev).manual_seed(seed)
    with torch.inference_mode():
        pred = model.predict(x[:, :n_past], batch["cond"].to(dev), n_future, n_samples, "sample", gen).float()
    gt = x[:, n_past:]
    written = []
    for b, idx in enumerate(indices):
        s = metrics.ssim(pred[b], gt[b].expand_as(pred[b])).mean(1)  # (S,) mean SSIM of each sample
        order = [int(s.argmax())] + [i for i in range(n_samples) if i != int(s.argmax())][:max(0, n_show - 1)]
        full = [torch.cat([x[b, :n_past], pred[b, i]], 0).cpu() for i in order]  # past frames are ground truth
        labels = ["ground truth", "best (SSIM)"] + [f"sample {i + 1}" for i in range(len(order) - 1)]
        gif = out / f"seq{idx}.gif"
        save_gif([x[b].cpu()] + full, gif, fps=fps, labels=labels, n_past=n_past)
        grid = out / f"seq{idx}_grid.png"
        save_prediction_grid(x[b].cpu(), pred[b, order].cpu(), grid, n_past, labels=labels)
        written += [gif, grid]
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cvae-make-gif", description="GIFs and grids of a checkpoint's predictions.")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", default="pictures", help="output folder")
    p.add_argument("--indices", type=int, nargs="+", default=[0, 1, 2], help="sequence indices in the split")
    p.add_argument("--data_root", default="")
    p.add_argument("--split", default="test", choices=["train", "validate", "test"])
    p.add_argument("--protocol", default="lab", choices=sorted(PROTOCOLS))
    p.add_argument("--n_samples", type=int, default=5, help="samples drawn; the best by SSIM is shown first")
    p.add_argument("--n_show", type=int, default=3, help="samples shown per sequence")
    p.add_argument("--fps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="")
    p.add_argument("--cuda", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        paths = make_pictures(args.ckpt, args.out, args.indices, args.data_root, args.split, args.protocol,
                              args.n_samples, args.n_show, args.seed, args.fps, args.device, args.cuda)
    except CvaeError as e:
        print(f"cvae-make-gif: error: {e}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
