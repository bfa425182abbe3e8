"""Frame-quality metrics on batched video tensors, plus the copy-last-frame baseline, confidence intervals and
the latent's active units.

All metrics take (B, T, C, H, W) tensors with values in [0, 1] and return per-frame values (B, T); reduce over
frames and sequences at the call site. scikit-image is the reference: ``psnr`` equals
``skimage.metrics.peak_signal_noise_ratio(..., data_range=1)`` per channel, averaged over channels, and ``ssim``
equals ``skimage.metrics.structural_similarity(..., channel_axis=-1, data_range=1.0, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False)``; tests check both.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# mse is clamped to this before the log so identical frames give a finite 100 dB instead of inf, which would
# turn every mean it enters into inf.
PSNR_MSE_EPS = 1e-10

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # what skimage passes to its Gaussian filter: radius int(3.5 * 1.5 + 0.5) = 5, an 11-tap window
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two (B, T, C, H, W) tensors and return them in at least float32."""
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() != 5:
        raise ValueError(f"expected (B, T, C, H, W) tensors, got shape {tuple(x.shape)}")
    # half precision loses too much in squared differences and local variances; float64 is kept as it is
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    return x.to(dtype), y.to(dtype)


@torch.no_grad()
def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per frame, (B, T), for images in [0, 1] (peak value 1).

    Per colour channel: mse = mean over H x W of (x - y)^2, psnr = 10 log10(1 / mse); then averaged over the
    channels (the protocol of the SVG and lab evaluations). An mse of 0 (identical frames) is clamped to
    ``PSNR_MSE_EPS``, i.e. 100 dB.
    """
    x, y = _check_pair(x, y)
    mse = (x - y).pow(2).mean(dim=(-2, -1))  # (B, T, C)
    return (-10.0 * torch.log10(mse.clamp_min(PSNR_MSE_EPS))).mean(dim=-1)


def _gaussian_window_1d(sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The normalised 1-d Gaussian that scipy.ndimage.gaussian_filter uses for this sigma and truncate."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return (w / w.sum()).to(dtype=dtype, device=device)


def _valid_filter_matrix(w1: torch.Tensor, n: int) -> torch.Tensor:
    """(n, n - k + 1) for a k-tap window w1: column j holds w1 at rows j .. j + k - 1, so a product with it is the
    'valid' (unpadded) correlation with w1 along that axis."""
    k = w1.numel()
    m = n - k + 1
    out = w1.new_zeros(n, m)
    j = torch.arange(m, device=w1.device)
    for i in range(k):
        out[j + i, j] = w1[i]
    return out


@torch.no_grad()
def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean structural similarity per frame, (B, T), for images in [0, 1] (data range 1).

    Gaussian window (sigma 1.5, 11 taps), K1 = 0.01, K2 = 0.03, population covariances; SSIM per channel, then
    averaged over channels. skimage filters with 'reflect' padding and then crops (11 - 1) // 2 = 5 pixels from
    every border before averaging the SSIM map. The crop equals the filter radius, so every pixel that survives
    it was computed from real pixels only: a 'valid' convolution (no padding) gives exactly the cropped map.
    """
    x, y = _check_pair(x, y)
    B, T, C, H, W = x.shape
    w1 = _gaussian_window_1d(SSIM_SIGMA, SSIM_TRUNCATE, x.dtype, x.device)
    k = w1.numel()
    if H < k or W < k:
        raise ValueError(f"ssim needs frames of at least {k}x{k} pixels, got {H}x{W}")

    # Every channel of every frame is an independent image: fold them into the batch, 1 input channel.
    x = x.reshape(B * T * C, 1, H, W)
    y = y.reshape(B * T * C, 1, H, W)
    # Local variances are differences of nearly equal numbers (E[x^2] - E[x]^2). Subtracting each image's mean
    # first (variances and covariances do not change) keeps float32 close to skimage's float64 result.
    x_shift = x.mean(dim=(-2, -1), keepdim=True)
    y_shift = y.mean(dim=(-2, -1), keepdim=True)
    xc, yc = x - x_shift, y - y_shift

    # Five filtered maps in one separable pass, each direction a product with a banded matrix: on CPUs a matrix
    # product is tens of times faster than a depthwise convolution of five channels with an 11-tap kernel.
    stack = torch.cat([xc, yc, xc * xc, yc * yc, xc * yc], dim=1)  # (N, 5, H, W)
    with torch.autocast(device_type=x.device.type, enabled=False):  # an enclosing autocast would drop to 16 bits
        rows, cols = _valid_filter_matrix(w1, H), _valid_filter_matrix(w1, W)
        filtered = rows.T @ stack @ cols                                   # (N, 5, H - k + 1, W - k + 1)
    mu_xc, mu_yc, e_xx, e_yy, e_xy = filtered.unbind(dim=1)

    var_x = e_xx - mu_xc * mu_xc
    var_y = e_yy - mu_yc * mu_yc
    cov_xy = e_xy - mu_xc * mu_yc
    mu_x = mu_xc + x_shift.view(-1, 1, 1)
    mu_y = mu_yc + y_shift.view(-1, 1, 1)

    c1 = SSIM_K1 ** 2
    c2 = SSIM_K2 ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-2, -1)).view(B, T, C).mean(dim=-1)


def sample_spread(pred: torch.Tensor) -> torch.Tensor:
    """The standard deviation across samples (dim 1, population form) of pred (B, S, ...): (B, ...), zeros for one
    sample. Written out: ``Tensor.std`` over a dimension that is not the last is several times slower on CPUs."""
    if pred.shape[1] == 1:
        return pred.new_zeros(pred.shape[:1] + pred.shape[2:])
    return (pred - pred.mean(1, keepdim=True)).square().mean(1).sqrt()


def copy_last_baseline(x: torch.Tensor, n_past: int, n_future: int | None = None) -> torch.Tensor:
    """The copy-last-frame prediction: frame ``n_past - 1`` (zero-based) repeated for every future step.

    ``x`` is (B, T, C, H, W); returns (B, n_future, C, H, W), by default ``n_future = T - n_past`` so the result
    lines up with ``x[:, n_past:]``.
    """
    if x.dim() != 5:
        raise ValueError(f"expected (B, T, C, H, W), got shape {tuple(x.shape)}")
    T = x.shape[1]
    if not 1 <= n_past <= T:
        raise ValueError(f"n_past must be in [1, {T}], got {n_past}")
    if n_future is None:
        n_future = T - n_past
    if n_future < 0:
        raise ValueError(f"n_future must be >= 0, got {n_future}")
    return x[:, n_past - 1:n_past].repeat(1, n_future, 1, 1, 1)


def _t_quantile_975(dof: int) -> float:
    """t_{0.975, dof}, the two-sided 95% quantile of Student's t distribution."""
    from scipy.stats import t as student_t  # scipy comes with scikit-image; imported here because it is slow

    return float(student_t.ppf(0.975, dof))


def mean_ci95(values) -> tuple:
    """Mean and 95% confidence half-width over the first axis (sequences).

    half_width = t_{0.975, n-1} * std(ddof=1) / sqrt(n), Student's t for a small number of sequences.
    ``values`` is a sequence, numpy array or tensor of shape (n,) or (n, ...). A 1-d input gives two Python
    floats, a higher-dimensional one two numpy arrays of shape values.shape[1:] (e.g. a per-frame interval).
    With n == 1 the spread is unknown and the half-width is nan. n == 0 is a ValueError.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    n = arr.shape[0]
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = arr.mean(axis=0)
    if n == 1:
        half = np.full_like(mean, math.nan)
    else:
        half = _t_quantile_975(n - 1) * arr.std(axis=0, ddof=1) / math.sqrt(n)
    if arr.ndim == 1:
        return float(mean), float(half)
    return mean, half


# A latent dimension counts as active when its posterior mean varies across the data by more than this
# (variance; Burda, Grosse & Salakhutdinov 2016).
ACTIVE_UNITS_THRESHOLD = 0.01


def latent_variance(total, total_sq, count) -> np.ndarray:
    """The variance of each latent dimension's values over ``count`` samples, from their sum ``total`` (z_dim,)
    and sum of squares ``total_sq`` (z_dim,), in float64: what :func:`active_units` thresholds. Sums travel well:
    per batch, per process, per split, they just add up. ``count`` 0 gives NaN."""
    total, total_sq = np.asarray(total, np.float64), np.asarray(total_sq, np.float64)
    if count == 0:
        return np.full(total.shape, math.nan)
    mean = total / count
    return np.maximum(total_sq / count - mean * mean, 0.0)   # rounding must not make a variance negative


def active_units(variance, threshold: float = ACTIVE_UNITS_THRESHOLD) -> int:
    """How many latent dimensions are active: those whose posterior mean's variance over the data (sequences and
    steps; see :func:`latent_variance`) exceeds ``threshold``. Zero means the latent carries nothing."""
    return int((np.asarray(variance, np.float64) > threshold).sum())
