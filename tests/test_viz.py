"""Every picture function writes a valid image of the expected size; odd inputs are handled or rejected."""

import numpy as np
import pytest
import torch
from PIL import Image

from cvae_video import viz


def _video(T, H=16, W=16, C=3, seed=0):
    return torch.rand(T, C, H, W, generator=torch.Generator().manual_seed(seed))


def _records(n):
    return [dict(epoch=e, loss=1.0 / (e + 1), mse=0.01 / (e + 1), kl=20.0 / (e + 1), beta=min(1.0, e / 3),
                 tfr=max(0.0, 1.0 - 0.1 * e), val_psnr=18.0 + e, points=0.05 / (e + 1)) for e in range(n)]


def _open(path):
    with Image.open(path) as im:
        im.load()
        return im.format, im.size, im.mode, getattr(im, "n_frames", 1), dict(im.info)


def test_to_uint8_hwc_clamps_rounds_and_moves_channels():
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 5, 1, 1).expand(2, 5, 3, 4)  # (..., C=5, H=3, W=4)
    out = viz.to_uint8_hwc(x)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4, 5)
    assert out[0, 0, 0].tolist() == [0, 0, 128, 255, 255]
    np.testing.assert_array_equal(viz.to_uint8_hwc(x.numpy()), out)


@pytest.mark.parametrize("beta_max", [1.0, 1e-4])
@pytest.mark.parametrize("cyclical", [False, True])
def test_kl_weight_schedule_fills_its_axis_whatever_its_scale(beta_max, cyclical):
    """A KL weight of 1e-4 must not draw as a flat line at 0: its axis runs up to its maximum, so monotonic and
    cyclical annealing look different at any scale."""
    betas = [beta_max * ((e % 3) / 2 if cyclical else min(1.0, e / 4)) for e in range(9)]
    fig = viz.training_curves_figure([dict(epoch=e, loss=0.1, beta=b, tfr=1.0) for e, b in enumerate(betas)])
    lines = [(ax, line) for ax in fig.axes for line in ax.get_lines() if line.get_label().startswith("beta")]
    assert len(lines) == 1
    ax, line = lines[0]
    lo, hi = ax.get_ylim()
    assert hi == pytest.approx(1.05 * beta_max) and lo == pytest.approx(-0.05 * beta_max)
    assert list(line.get_ydata()) == pytest.approx(betas)


def test_training_curves_full_run(tmp_path):
    records = _records(12)
    drawn = {line.get_label(): list(line.get_ydata()) for ax in viz.training_curves_figure(records).axes
             for line in ax.get_lines()}
    for key, label in (("loss", "loss (total)"), ("mse", "MSE (reconstruction)"), ("kl", "KL"),
                       ("val_psnr", "validation PSNR (dB)"), ("points", "point loss")):
        assert drawn[label] == pytest.approx([r[key] for r in records]), key
    assert drawn["teacher-forcing ratio (last 0)"] == pytest.approx([r["tfr"] for r in records])
    path = viz.plot_training_curves(records, tmp_path / "curves.png")
    fmt, size, _, _, _ = _open(path)
    assert fmt == "PNG" and size[0] > 300 and size[1] > 300
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left behind


@pytest.mark.parametrize("records", [
    _records(1),
    [dict(epoch=0, loss=0.5)],
    [dict(epoch=1, loss=0.5, mse=None, kl=None, val_psnr=None), dict(epoch=2, loss=0.4, mse=0.01, tfr=0.9),
     dict(epoch=3, kl=float("nan"), beta=0.5, val_psnr=21.0), dict(loss=0.3)],
    [dict(epoch=0, beta=1e-4), dict(epoch=1, beta=1e-4)],
    [],
])
def test_training_curves_with_missing_values_and_one_epoch(tmp_path, records):
    path = viz.plot_training_curves(records, tmp_path / "sub" / "curves.png")
    assert _open(path)[0] == "PNG"


@pytest.mark.parametrize("S,T_s,labels,scale", [(3, 8, ["s1", "s2", "s3"], 2), (2, 10, None, 1),
                                                 (1, 5, ["ground truth", "sample"], 3)])
def test_prediction_grid_size(tmp_path, S, T_s, labels, scale):
    T, H, W, n_past = 10, 16, 12, 2
    samples = torch.stack([_video(T_s, H, W, seed=s + 1) for s in range(S)])
    path = viz.save_prediction_grid(_video(T, H, W), samples, tmp_path / "grid.png", n_past=n_past,
                                    labels=labels, scale=scale)
    fmt, (width, height), mode, _, _ = _open(path)
    cell_w, cell_h = W * scale + 2 * viz.BORDER, H * scale + 2 * viz.BORDER
    assert fmt == "PNG" and mode == "RGB"
    assert height == viz.HEADER + (S + 1) * cell_h + (S + 2) * viz.GAP
    grid_w = T * cell_w + (T + 1) * viz.GAP
    if labels is None:
        assert width == grid_w
    else:
        assert width > grid_w + 2 * viz.LABEL_PAD


def test_prediction_grid_content(tmp_path):
    """Ground-truth row shows gt; sample rows show faded gt in the past and the samples in the future."""
    T, H, W, n_past = 4, 12, 12, 2
    gt = torch.zeros(T, 3, H, W)
    samples = torch.ones(1, T - n_past, 3, H, W)
    with Image.open(viz.save_prediction_grid(gt, samples, tmp_path / "g.png", n_past=n_past, scale=1)) as im:
        arr = np.asarray(im.convert("RGB"))

    def centre(row, t):
        y = viz.HEADER + viz.GAP + row * (H + 2 * viz.BORDER + viz.GAP) + viz.BORDER + H // 2
        x = viz.GAP + t * (W + 2 * viz.BORDER + viz.GAP) + viz.BORDER + W // 2
        return arr[y, x].tolist()

    assert centre(0, 0) == centre(0, 3) == [0, 0, 0]
    assert 100 < centre(1, 0)[0] < 255  # faded black: light grey
    assert centre(1, 3) == [255, 255, 255]


def test_prediction_grid_accepts_numpy_grey_and_full_length_samples(tmp_path):
    gt = np.random.default_rng(0).random((6, 1, 16, 16))
    samples = np.random.default_rng(1).random((2, 6, 1, 16, 16))
    assert _open(viz.save_prediction_grid(gt, samples, tmp_path / "g.png", n_past=3))[2] == "RGB"


def test_prediction_grid_rejects_bad_inputs(tmp_path):
    gt = _video(6)
    with pytest.raises(ValueError):
        viz.save_prediction_grid(gt, torch.rand(2, 7, 3, 16, 16), tmp_path / "g.png", n_past=2)  # too long
    with pytest.raises(ValueError):
        viz.save_prediction_grid(gt, torch.rand(2, 4, 3, 8, 8), tmp_path / "g.png", n_past=2)  # wrong size
    with pytest.raises(ValueError):
        viz.save_prediction_grid(gt, torch.rand(2, 4, 3, 16, 16), tmp_path / "g.png", n_past=2, labels=["a"])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("labels,n_past", [(["ground truth", "prediction", "sample 2"], 2), (None, None)])
def test_gif_frames_and_size(tmp_path, labels, n_past):
    T, H, W, scale = 6, 16, 20, 2
    columns = [_video(T, H, W, seed=i) for i in range(3)]
    path = viz.save_gif(columns, tmp_path / "a.gif", fps=5, labels=labels, scale=scale, n_past=n_past)
    fmt, (width, height), _, n_frames, info = _open(path)
    assert fmt == "GIF"
    assert n_frames == T  # random frames: no two consecutive ones are identical, so none are merged
    assert info["loop"] == 0 and info["duration"] == 200
    assert width == 3 * (W * scale + 2 * viz.BORDER) + 4 * viz.GAP
    assert height == (viz.HEADER if labels else 0) + H * scale + 2 * viz.BORDER + 2 * viz.GAP


def test_gif_past_and_future_borders(tmp_path):
    path = viz.save_gif([_video(4)], tmp_path / "a.gif", n_past=2, scale=1)
    corners = []
    with Image.open(path) as im:
        for t in range(4):
            im.seek(t)
            corners.append(im.convert("RGB").getpixel((viz.GAP, viz.GAP)))

    def close(a, b):  # GIF palettes round colours slightly
        return max(abs(p - q) for p, q in zip(a, b)) <= 8

    assert close(corners[0], viz.PAST_COLOR) and close(corners[1], viz.PAST_COLOR)
    assert close(corners[2], viz.FUTURE_COLOR) and close(corners[3], viz.FUTURE_COLOR)


def test_gif_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="same number of frames"):
        viz.save_gif([_video(5), _video(6)], tmp_path / "a.gif")
    with pytest.raises(ValueError):
        viz.save_gif([_video(5), _video(5)], tmp_path / "a.gif", labels=["only one"])
    with pytest.raises(ValueError):
        viz.save_gif([], tmp_path / "a.gif")
    assert not list(tmp_path.iterdir())


def test_per_frame_plot(tmp_path):
    curves = {
        "model mean": torch.rand(5, 10) * 5 + 22,  # per-sequence values: mean with a confidence band
        "model best-of-N": np.linspace(28, 24, 10),
        "copy last": [22.0] * 10,
    }
    fig = viz.per_frame_figure(curves, ylabel="PSNR (dB)", n_past=2)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == list(curves)
    assert list(lines["model mean"].get_xdata()) == list(range(2, 12))          # frames after the given ones
    assert list(lines["model mean"].get_ydata()) == pytest.approx(curves["model mean"].double().mean(0).tolist())
    assert list(lines["copy last"].get_ydata()) == curves["copy last"]
    assert len(ax.collections) == 1                                             # one band: the per-sequence curve
    path = viz.plot_per_frame(curves, tmp_path / "psnr.png", ylabel="PSNR (dB)", n_past=2)
    assert _open(path)[0] == "PNG"
    path = viz.plot_per_frame({"one frame": [0.8]}, tmp_path / "ssim.png", ylabel="SSIM", n_past=1)
    assert _open(path)[0] == "PNG"
