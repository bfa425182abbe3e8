"""cvae-train --tensorboard: the tags and step numbers read back with TensorBoard's own event reader, across a
resume that follows a process killed after its checkpoint."""

import json

import pytest

from cvae_video import train
from cvae_video.errors import ConfigError
from cvae_video.tblog import TrainingLog
from helpers import TINY_FLAGS

pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip install -e \".[tb]\")")


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_steps_and_epochs_are_logged_once_across_a_resume(synth_root, tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    log_dir = tmp_path / "run"
    argv = ["--data_root", str(synth_root), "--log_dir", str(log_dir), "--epoch_size", "2", "--n_pictures", "1",
            "--val_sequences", "2", *TINY_FLAGS, "--tensorboard"]   # after TINY_FLAGS' --tensorboard off
    assert train.main([*argv, "--niter", "1"]) == 0
    stray = SummaryWriter(str(log_dir / "tb"))     # what a process killed after its checkpoint left behind
    stray.add_scalar("train/loss", 99.0, 3)
    stray.close()
    assert train.main(["--resume", str(log_dir), "--niter", "2", "--no_progress"]) == 0

    acc = events(log_dir / "tb")
    scalars = set(acc.Tags()["scalars"])
    assert {f"train/{k}" for k in ("loss", "mse", "kl", "beta", "tfr", "lr")} <= scalars
    assert {"val/psnr", "val/ssim", "val/kl_per_step", "val/active_units"} <= scalars
    assert "val/predictions" in acc.Tags()["images"]
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4] and 99.0 not in [e.value for e in loss]
    records = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    psnr = acc.Scalars("val/psnr")
    assert [e.step for e in psnr] == [r["step"] for r in records] == [2, 4]
    assert [e.value for e in psnr] == pytest.approx([r["val_psnr"] for r in records], rel=1e-6)
    assert [e.value for e in acc.Scalars("val/active_units")] == [r["active_units"] for r in records]


def test_off_and_missing_package(tmp_path, monkeypatch):
    assert TrainingLog(tmp_path, "off").writer is None and not (tmp_path / "tb").exists()
    assert TrainingLog(tmp_path, "on", enabled=False).writer is None       # ranks other than 0
    import cvae_video.tblog as tblog
    monkeypatch.setattr(tblog, "available", lambda: False)
    assert TrainingLog(tmp_path, "auto").writer is None
    with pytest.raises(ConfigError, match="pip install"):
        TrainingLog(tmp_path, "on")


def test_the_video_is_ground_truth_beside_the_first_sample():
    import torch
    from cvae_video.inference import Predictions
    from cvae_video.tblog import side_by_side
    x = torch.rand(2, 5, 3, 8, 8)
    samples = torch.rand(2, 3, 3, 3, 8, 8)                     # (B, S, F = T - n_past, C, H, W)
    video = side_by_side(Predictions(x, samples, n_past=2))
    assert video.shape == (5, 3, 8, 16) and video.dtype == torch.uint8
    assert torch.equal(video[..., :8], (x[0] * 255 + 0.5).to(torch.uint8))
    assert torch.equal(video[2:, ..., 8:], (samples[0, 0] * 255 + 0.5).to(torch.uint8))
    assert torch.equal(video[:2, ..., 8:], video[:2, ..., :8])  # the given frames on both sides
