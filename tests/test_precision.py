import os
import platform
import subprocess
import sys

import pytest
import torch

from cvae_video.runtime import autocast
from conftest import tiny_model

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
