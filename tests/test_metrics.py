"""Metrics against scikit-image, the reference implementation, on small random and structured inputs."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from cvae_video import metrics
from cvae_video.metrics import PSNR_MSE_EPS, copy_last_baseline, mean_ci95, psnr, ssim


def _sk_psnr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(B, T, C, H, W) -> (B, T): skimage PSNR per channel, averaged over channels."""
    B, T, C = x.shape[:3]
    return np.array([[np.mean([sk_psnr(x[b, t, c], y[b, t, c], data_range=1.0) for c in range(C)])
                      for t in range(T)] for b in range(B)])


def _sk_ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(B, T, C, H, W) -> (B, T): skimage SSIM with the lab's settings."""
    B, T = x.shape[:2]
    return np.array([[sk_ssim(x[b, t].transpose(1, 2, 0), y[b, t].transpose(1, 2, 0), channel_axis=-1,
                              data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
                      for t in range(T)] for b in range(B)])


def _noisy_pair(shape, noise, seed):
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    y = np.clip(x + noise * rng.standard_normal(shape), 0.0, 1.0)
    return x, y


def _structured_pair(T, C, H, W):
    """Smooth gradients and stripes, the prediction shifted and darkened: large uniform areas, real structure."""
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    base = [0.5 + 0.4 * np.sin(7 * xx + 3 * yy), yy * xx, (xx > 0.5) * 0.8 + 0.1]
    frames = np.stack([np.stack([np.roll(base[c % 3], t, axis=1) for c in range(C)]) for t in range(T)])
    pred = np.roll(frames, 2, axis=-1) * 0.9 + 0.03
    return frames[None], pred[None]


@pytest.mark.parametrize("shape", [(1, 1, 3, 64, 64), (2, 3, 3, 64, 64), (3, 2, 1, 16, 24), (1, 4, 3, 11, 11)])
def test_psnr_and_ssim_match_skimage_on_noise(shape):
    x, y = _noisy_pair(shape, noise=0.1, seed=sum(shape))
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    p, s = psnr(xt, yt), ssim(xt, yt)
    assert p.shape == s.shape == shape[:2]
    np.testing.assert_allclose(p.numpy(), _sk_psnr(x, y), atol=1e-4)
    np.testing.assert_allclose(s.numpy(), _sk_ssim(x, y), atol=1e-5)


def test_psnr_and_ssim_match_skimage_on_structured_frames():
    x, y = _structured_pair(T=3, C=3, H=64, W=48)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    np.testing.assert_allclose(psnr(xt, yt).numpy(), _sk_psnr(x, y), atol=1e-4)
    np.testing.assert_allclose(ssim(xt, yt).numpy(), _sk_ssim(x, y), atol=1e-5)


def test_float64_is_kept_and_matches_exactly():
    x, y = _noisy_pair((2, 2, 3, 32, 32), noise=0.05, seed=1)
    s = ssim(torch.from_numpy(x), torch.from_numpy(y))
    assert s.dtype == torch.float64
    np.testing.assert_allclose(s.numpy(), _sk_ssim(x, y), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    x, y = _noisy_pair((1, 2, 3, 32, 32), noise=0.1, seed=2)
    xh, yh = torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype)
    p, s = psnr(xh, yh), ssim(xh, yh)
    assert p.dtype == s.dtype == torch.float32
    # the reference sees the same rounded pixels, so only the arithmetic precision is tested
    xr, yr = xh.double().numpy(), yh.double().numpy()
    np.testing.assert_allclose(p.numpy(), _sk_psnr(xr, yr), atol=1e-4)
    np.testing.assert_allclose(s.numpy(), _sk_ssim(xr, yr), atol=1e-5)


def test_identical_frames():
    x, _ = _noisy_pair((2, 3, 3, 32, 32), noise=0.0, seed=3)
    xt = torch.from_numpy(x).float()
    torch.testing.assert_close(ssim(xt, xt.clone()), torch.ones(2, 3))
    expected = -10 * math.log10(PSNR_MSE_EPS)
    torch.testing.assert_close(psnr(xt, xt.clone()), torch.full((2, 3), expected))


def test_batch_entries_are_independent():
    x, y = _noisy_pair((3, 2, 3, 32, 32), noise=0.1, seed=4)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    full = ssim(xt, yt)
    torch.testing.assert_close(ssim(xt[1:2, 1:], yt[1:2, 1:]), full[1:2, 1:])


def test_bad_shapes_raise():
    a = torch.rand(1, 2, 3, 32, 32)
    with pytest.raises(ValueError):
        psnr(a, a[:, :1])
    with pytest.raises(ValueError):
        ssim(a[0], a[0])
    with pytest.raises(ValueError):
        ssim(a[..., :8, :8], a[..., :8, :8])  # smaller than the 11x11 window


def test_copy_last_baseline():
    x = torch.arange(2 * 5).float().view(2, 5, 1, 1, 1).expand(2, 5, 3, 4, 4)
    out = copy_last_baseline(x, n_past=2)
    assert out.shape == (2, 3, 3, 4, 4)
    torch.testing.assert_close(out, x[:, 1:2].expand(2, 3, 3, 4, 4))
    assert copy_last_baseline(x, n_past=2, n_future=7).shape == (2, 7, 3, 4, 4)
    with pytest.raises(ValueError):
        copy_last_baseline(x, n_past=0)


def test_mean_ci95_by_hand():
    values = [20.0, 22.0, 23.0, 27.0]
    mean = 23.0
    std = math.sqrt(((-3) ** 2 + (-1) ** 2 + 0 ** 2 + 4 ** 2) / 3)  # ddof = 1
    t_975_3 = 3.182446305284263  # Student's t, 3 degrees of freedom, two-sided 95%
    m, h = mean_ci95(values)
    assert isinstance(m, float) and isinstance(h, float)
    assert m == pytest.approx(mean)
    assert h == pytest.approx(t_975_3 * std / 2.0)


def test_mean_ci95_per_column_and_tensor_input():
    values = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])
    m, h = mean_ci95(values)
    np.testing.assert_allclose(m, [3.0, 10.0])
    np.testing.assert_allclose(h, [4.302652729911275 * 2.0 / math.sqrt(3), 0.0])


def test_mean_ci95_edge_cases():
    m, h = mean_ci95([5.0])
    assert m == 5.0 and math.isnan(h)
    with pytest.raises(ValueError):
        mean_ci95([])


def test_ssim_ignores_an_enclosing_autocast():
    x, y = _noisy_pair((1, 2, 3, 32, 32), noise=0.1, seed=5)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        s = ssim(xt, yt)
    assert s.dtype == torch.float32
    np.testing.assert_allclose(s.numpy(), _sk_ssim(x, y), atol=1e-5)


def test_active_units_count_the_dimensions_whose_mean_varies():
    rng = np.random.default_rng(0)
    mu = np.stack([rng.normal(0, 1.0, 500), rng.normal(3, 0.5, 500), np.full(500, 2.0),
                   rng.normal(0, 0.05, 500)], 1)        # two dims vary, one is constant, one barely moves
    var = metrics.latent_variance(mu.sum(0), (mu ** 2).sum(0), len(mu))
    assert np.allclose(var, mu.var(0), atol=1e-12) and var[2] == 0.0
    assert metrics.active_units(var) == 2 and metrics.ACTIVE_UNITS_THRESHOLD == 0.01
    assert metrics.active_units(var, threshold=1e-3) == 3
    # sums of pieces (batches, processes) give the variance of the whole
    parts = np.array_split(mu, 7)
    total = sum(p.sum(0) for p in parts), sum((p ** 2).sum(0) for p in parts)
    assert np.allclose(metrics.latent_variance(*total, len(mu)), var, atol=1e-12)
    assert np.isnan(metrics.latent_variance(np.zeros(3), np.zeros(3), 0)).all()


def test_sample_spread_is_the_population_std_across_samples():
    torch.manual_seed(0)
    pred = torch.rand(3, 5, 2, 3, 8, 8)
    assert torch.allclose(metrics.sample_spread(pred), pred.std(1, correction=0), atol=1e-6)
    one = metrics.sample_spread(pred[:, :1])
    assert one.shape == (3, 2, 3, 8, 8) and not one.any()
