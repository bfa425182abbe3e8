import os
import platform
import subprocess
import sys

import pytest
import torch

from cvae_video.runtime import autocast
from helpers import TINY_MODEL, tiny_model

CPU = torch.device("cpu")


def inputs(T=6, B=2):
    g = torch.Generator().manual_seed(0)
    return torch.rand(B, T, 3, 64, 64, generator=g), torch.randn(B, T, 7, generator=g)


@pytest.mark.parametrize("backbone", ["dcgan", "vgg"])
def test_bf16_prediction_close_to_fp32(backbone):
    model = tiny_model(backbone=backbone, prior="learned").eval()
    x, cond = inputs()
    preds = {}
    for precision in ("fp32", "bf16"):
        gen = torch.Generator().manual_seed(1)
        with torch.inference_mode(), autocast(CPU, precision):
            preds[precision] = model.predict(x[:, :2], cond, 4, n_samples=3, generator=gen).float()
    assert preds["fp32"].shape == (2, 3, 4, 3, 64, 64)
    error = (preds["bf16"] - preds["fp32"]).abs().mean()
    assert error < 0.02
    # an untrained model's frames vary little, so also compare with that variation: bf16 must keep the picture
    spread = (preds["fp32"] - preds["fp32"].mean()).abs().mean()
    assert spread > 0.005 and error < 0.25 * spread


@pytest.mark.parametrize("backbone", ["dcgan", "vgg"])
def test_batched_encoding_equals_per_frame_calls(backbone):
    model = tiny_model(backbone=backbone).eval()
    x, _ = inputs()
    with torch.no_grad():
        h, skips = model.encode(x)                                  # (B, T, g), [(B, T, c, h, w)]
        per_frame = [model.encoder(x[:, t]) for t in range(x.shape[1])]
    assert torch.allclose(h, torch.stack([f[0] for f in per_frame], 1), atol=1e-5)
    for k, s in enumerate(skips):
        assert torch.allclose(s, torch.stack([f[1][k] for f in per_frame], 1), atol=1e-5)


def test_channels_last_gives_the_same_loss():
    model = tiny_model(backbone="vgg").eval()
    x, cond = inputs()
    with torch.no_grad():
        torch.manual_seed(2)
        ref = model(x, cond, n_past=2)
        model = model.to(memory_format=torch.channels_last)
        torch.manual_seed(2)
        out = model(x, cond, n_past=2)
    assert torch.allclose(out["recon"], ref["recon"], rtol=1e-4)
    assert torch.allclose(out["kl"], ref["kl"], rtol=1e-4)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
@pytest.mark.parametrize("env, expected", [("", "True"), ("system", "False")])
def test_freed_memory_is_kept_unless_opted_out(env, expected):
    """In a fresh process: mallopt succeeds on glibc, and CVAE_VIDEO_MALLOC=system leaves malloc alone."""
    code = "from cvae_video.runtime import keep_freed_memory as k; print(k(), k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "CVAE_VIDEO_MALLOC": env}).stdout.split()
    assert out == [expected, expected]


@pytest.mark.parametrize("backbone", ["dcgan", "vgg"])
def test_every_precision_trains_and_agrees_with_fp32(backbone):
    """One train_step per precision from the same weights: finite logs, an update, a loss close to fp32's; the
    grad scaler is on for fp16 only."""
    from cvae_video.config import TrainConfig
    from cvae_video.models import ModelConfig
    from cvae_video.runtime import grad_scaler
    from cvae_video.train import build_optimizer, train_step
    cfg = TrainConfig(model=ModelConfig(**(TINY_MODEL | {"backbone": backbone})), n_past=2, n_future=3)
    g = torch.Generator().manual_seed(0)
    batch = {"frames": torch.randint(0, 256, (2, 5, 3, 64, 64), dtype=torch.uint8, generator=g),
             "cond": torch.randn(2, 5, 7, generator=g)}
    losses = {}
    for precision in ("fp32", "bf16", "fp16"):
        model = tiny_model(backbone=backbone).to(memory_format=torch.channels_last)
        before = [p.detach().clone() for p in model.parameters()]
        scaler = grad_scaler(CPU, precision)
        assert scaler.is_enabled() == (precision == "fp16")
        optimizer = build_optimizer(cfg, model.parameters())
        torch.manual_seed(1)
        logs = train_step(model, optimizer, scaler, batch, cfg, beta=1.0, tfr=1.0, device=CPU,
                          amp=autocast(CPU, precision))
        assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()), precision
        losses[precision] = logs["mse"]
        for _ in range(30):   # fp16: the scaler skips steps whose gradients overflow while it finds its scale
            if any(not torch.equal(a, b) for a, b in zip(before, model.parameters())):
                break
            train_step(model, optimizer, scaler, batch, cfg, beta=1.0, tfr=1.0, device=CPU,
                       amp=autocast(CPU, precision))
        else:
            raise AssertionError(f"{precision}: no update")
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    assert losses["fp16"] == pytest.approx(losses["fp32"], rel=0.01)
