"""Can image points found in the frames, drawn as blobs, carry where the gripper is to the decoder?

An upper bound on what a latent that holds image points could give: the demo's action-free model (compositing
dcgan at quarter width, 2 -> 10 frames, teacher forcing) is trained with, in place of a condition, K image points
found by a small network in every frame *including the one being drawn* (``--points frame``), and once with zeros
in their place (``--points none``) as the control. The points network reads the frame and its change from the
frame before (a spatial soft-argmax over its maps), and the decoder sees the drawn frame's points and the skip
frame's exactly as the action-conditioned demo sees the robot's positions: broadcast beside coordinates and as
Gaussian blobs. It prints the teacher-forced validation PSNR per predicted step of both, the PSNR of copying the
skip frame, and how far the points of one sequence move.

    python scripts/point_probe.py --points frame --steps 600
    python scripts/point_probe.py --points none --steps 600
"""

import argparse
import math

import numpy as np
import torch
from torch import nn

from cvae_video.config import TrainConfig
from cvae_video.data.dataset import VideoDataset, frames_to_float
from cvae_video.models.svg import CVAE, ModelConfig, SpatialSoftmaxPoints
from cvae_video.train import resolve_data_root


class FramePoints(nn.Module):
    """Frames (B, T, C, H, W) -> (B, T, 2K) image points of each frame, from the frame and its change."""

    def __init__(self, k: int, channels: int = 3, width: int = 32):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(2 * channels, width, 4, 2, 1), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, 1, 1), nn.ReLU())
        self.points = SpatialSoftmaxPoints(width, k)
        with torch.no_grad():   # peaked maps from the start, so the points move with what the trunk finds
            self.points.conv.weight.mul_(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        change = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], 1)
        B, T = x.shape[:2]
        return self.points(self.trunk(torch.cat([x, change], 2).flatten(0, 1))).unflatten(0, (B, T))


def _psnr(mse: torch.Tensor) -> list[float]:
    return [round(-10 * math.log10(float(v)), 2) for v in mse]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", choices=("frame", "none"), required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--k", type=int, default=4, help="image points per frame")
    p.add_argument("--data_root", default="", help="default: the built-in push world")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    root = resolve_data_root(TrainConfig(data_root=args.data_root))
    n_past, T = 2, 12
    train, val = (VideoDataset(root, split, T, with_conditions=False) for split in ("train", "validate"))
    K = args.k
    model = CVAE(ModelConfig(backbone="dcgan", width=0.25, output="compose", condition="full", cond_dim=2 * K,
                             spatial_cond=True, keypoints=K, g_dim=128, z_dim=16, rnn_size=128))
    finder = FramePoints(K)
    opt = torch.optim.Adam([*model.parameters(), *finder.parameters()], lr=2e-3)

    def points(x):
        pts = finder(x)
        return pts if args.points == "frame" else torch.zeros_like(pts)

    def frames(ds, idx):
        return torch.stack([frames_to_float(ds[int(i)]["frames"]) for i in idx])

    rng = np.random.default_rng(args.seed)
    for step in range(args.steps):
        x = frames(train, rng.integers(len(train), size=8))
        out = model(x, points(x), n_past)
        loss = out["recon"] + 1e-4 * out["kl"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step}: mse per step {out['recon'].item() / (T - 1):.5f}", flush=True)
    model.eval()
    with torch.no_grad():
        x = frames(val, range(64))
        out = model(x, points(x), n_past)
        print(f"points {args.points}: teacher-forced validation PSNR per predicted step",
              _psnr(out["recon_per_step"][n_past - 1:]))
        print("copying the skip frame:", _psnr(((x[:, n_past:] - x[:, n_past - 1:n_past]) ** 2).mean((0, 2, 3, 4))))
        pts = finder(x[:1])[0].view(T, K, 2)
        print("how far each point of validation sequence 0 moves over its frames (std of x, y):",
              pts.std(0).norm(dim=-1).numpy().round(3).tolist())


if __name__ == "__main__":
    main()
