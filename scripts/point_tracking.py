"""Do a model's motion points follow the arm? For each of the K points it finds in the test frames: R^2 of a
linear fit of its (x, y) from the end-effector position (read from the data set's CSVs, which an action-free
model never sees), how far it moves over a sequence (standard deviation over the frames, in the [-1, 1] image
coordinates, mean over sequences) and how much it jumps (mean |p_{t+1} - 2 p_t + p_{t-1}|); and the point loss
per step with z at the posterior's mean. A point that follows the gripper has R^2 near 1 and a jump much smaller
than its motion; one that hops between things moves as much but jumps more than it moves.

    python scripts/point_tracking.py --ckpt runs/demo_action_free/last.pt [--sequences 128]
"""

import argparse
from unittest import mock

import torch

import cvae_video.models.svg as svg
from cvae_video.data.dataset import VideoDataset, frames_to_float
from cvae_video.inference import open_for_inference, take_batch


def point_tracking(model, frames: torch.Tensor, positions: torch.Tensor, first: int = 0
                   ) -> tuple[list[dict], float]:
    """Per point {r2_x, r2_y, motion, jump} for frames (B, T, C, H, W) in [0, 1] and end-effector positions
    (B, T, P), over the frames from ``first`` on; and the point loss per step with z at the posterior's mean
    (teacher-forced, every frame)."""
    with torch.no_grad():
        h, _ = model.encode(frames)
        K = model.cfg.motion_points
        pts = model.points_of(h).float().unflatten(-1, (K, 2))[:, first:]   # (B, T - first, K, 2)
        with mock.patch.object(svg, "reparameterize", lambda mu, logvar, generator=None: mu):
            out = model(frames, None, n_past=2, teacher_forcing=True)
    positions = positions[:, first:]
    X = torch.cat([positions.flatten(0, 1), torch.ones(positions.shape[0] * positions.shape[1], 1)], 1).double()
    rows = []
    for k in range(K):
        Y = pts[:, :, k].flatten(0, 1).double()
        residual = Y - X @ torch.linalg.lstsq(X, Y).solution
        r2 = 1 - residual.var(0) / Y.var(0).clamp_min(1e-12)
        jump = (pts[:, 2:, k] - 2 * pts[:, 1:-1, k] + pts[:, :-2, k]).abs().mean().item()
        rows.append({"r2_x": r2[0].item(), "r2_y": r2[1].item(), "motion": pts[:, :, k].std(1).mean().item(),
                     "jump": jump})
    return rows, out["points"].item() / (frames.shape[1] - 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data_root", default="", help="default: the data set the model was trained on")
    p.add_argument("--sequences", type=int, default=128)
    p.add_argument("--first_frame", type=int, default=0,
                   help="measure from this frame on (1: leave out the first frame, which has no change to read)")
    args = p.parse_args()
    trained = open_for_inference(args.ckpt)
    if trained.model.motion_points is None:
        raise SystemExit(f"{args.ckpt}: the model has no motion points (--motion_points)")
    ds = VideoDataset(trained.data_root(args.data_root), "test", 12, stats=None, with_conditions=True)
    batch = take_batch(ds, list(range(min(args.sequences, len(ds)))))
    positions = batch["cond"][..., svg.ACTION_DIM:].float()
    rows, loss = point_tracking(trained.model, frames_to_float(batch["frames"]), positions, args.first_frame)
    print(f"{args.ckpt}: point loss per step {loss:.4f} (z at the posterior's mean)")
    for k, r in enumerate(rows):
        print(f"  point {k}: R^2 from the arm {r['r2_x']:.2f} (x) {r['r2_y']:.2f} (y), motion {r['motion']:.3f}, "
              f"jump {r['jump']:.3f}")


if __name__ == "__main__":
    main()
