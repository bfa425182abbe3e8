"""Pictures: training curves, prediction grids, side-by-side GIFs and per-frame metric plots.

Frames are (T, C, H, W) floats in [0, 1], torch tensors or numpy arrays; C is 3 (RGB) or 1 (grey). Every file is
written atomically (a temporary file in the same folder, then ``os.replace``), so a reader such as a dashboard
never sees half a PNG. Plots are drawn on ``matplotlib.figure.Figure`` objects rendered by Agg: no pyplot state,
no GUI, safe in a training process.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from .fileio import atomic_write

# Layout of image grids and GIFs, in output pixels (after upscaling the frames).
GAP = 2  # white space between neighbouring cells
BORDER = 2  # coloured frame around every cell: past (given) vs predicted
HEADER = 16  # strip above the cells holding frame indices (grid) or column captions (GIF)
LABEL_PAD = 6  # space either side of row labels
PAST_COLOR = (46, 160, 67)  # green: ground-truth context frames
FUTURE_COLOR = (214, 39, 40)  # red: predicted frames
NEUTRAL_COLOR = (200, 200, 200)  # border when past/future is unknown
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (40, 40, 40)
DIM = 0.35  # past columns of sample rows show the ground truth faded towards white by this factor

_FONT_SIZE = 11
LINE_STYLES = ("-", "--", "-.", ":")   # one per method in the per-frame plots, cycled


# --------------------------------------------------------------------------------------------------- helpers


def to_uint8_hwc(frames) -> np.ndarray:
    """(..., C, H, W) floats in [0, 1] (tensor or array) -> uint8 (..., H, W, C), clamped and rounded."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().float().numpy()
    arr = np.asarray(frames, dtype=np.float32)
    if arr.ndim < 3:
        raise ValueError(f"expected (..., C, H, W), got shape {arr.shape}")
    arr = np.nan_to_num(arr, nan=0.0)
    arr = np.clip(arr, 0.0, 1.0) * 255.0 + 0.5
    return np.moveaxis(arr.astype(np.uint8), -3, -1)


def _rgb_frames(frames, name: str) -> np.ndarray:
    """A (T, C, H, W) video as uint8 (T, H, W, 3); grey (C = 1) is repeated to RGB."""
    arr = to_uint8_hwc(frames)
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"{name}: expected (T, C, H, W) with C in (1, 3), got {tuple(np.shape(frames))}")
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr


def _upscale(img: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, C) by an integer factor: pixels stay crisp squares."""
    if scale == 1:
        return img
    return img.repeat(scale, axis=-3).repeat(scale, axis=-2)


def _check_scale(scale: int) -> int:
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return int(scale)


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=_FONT_SIZE)  # scalable built-in font (Pillow >= 10.1 with FreeType)
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _draw_centered(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, font) -> None:
    """Text centred in box (x0, y0, x1, y1); cut to fit the width with an ellipsis if it is too long."""
    x0, y0, x1, y1 = box
    width = x1 - x0
    while text and _text_width(draw, text, font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, fill=TEXT_COLOR, font=font, anchor="mm")


def _save_figure(fig: Figure, path) -> Path:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=fig.dpi))


def _boxed(cell: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """(h, w, 3) uint8 -> (h + 2 * BORDER, w + 2 * BORDER, 3) with a coloured frame."""
    out = np.empty((cell.shape[0] + 2 * BORDER, cell.shape[1] + 2 * BORDER, 3), dtype=np.uint8)
    out[:] = color
    out[BORDER:BORDER + cell.shape[0], BORDER:BORDER + cell.shape[1]] = cell
    return out


def _label_width(labels: Sequence[str] | None, font) -> int:
    if not labels:
        return 0
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return max(_text_width(probe, s, font) for s in labels) + 2 * LABEL_PAD


# ------------------------------------------------------------------------------------------ training curves


def _series(records: Sequence[Mapping], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one key, skipping records where it is missing, None or not finite."""
    xs, ys = [], []
    for i, rec in enumerate(records):
        value = rec.get(key)
        epoch = rec.get("epoch", i)
        if value is None or epoch is None:
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            xs.append(float(epoch))
            ys.append(value)
    return xs, ys


def plot_training_curves(records: Sequence[Mapping], path, title: str = "Training curves") -> Path:
    """Plot the per-epoch log of a training run (the lines of metrics.jsonl) to a PNG: see
    :func:`training_curves_figure`."""
    return _save_figure(training_curves_figure(records, title), path)


def training_curves_figure(records: Sequence[Mapping], title: str = "Training curves") -> Figure:
    """The figure of :func:`plot_training_curves`.

    Keys used: epoch, loss, mse, kl, val_kl, points, beta, tfr, val_psnr; any may be missing or None in any record.
    Two panels sharing the epoch axis. Top: loss, MSE and KL on the left axis and validation PSNR (dB) on a
    right axis. KL is usually orders of magnitude above the per-pixel MSE, so the left axis turns logarithmic
    when the positive values span more than two decades; otherwise linear reads more easily. Bottom: the
    teacher-forcing ratio on a fixed 0-1 axis and the KL weight beta, both dashed, beta on a right axis that
    runs from 0 to its own maximum, so its schedule reads the same whether the maximum is 1 or 1e-4.
    """
    records = list(records)
    fig = Figure(figsize=(8.0, 6.5), dpi=110, layout="constrained")
    ax_loss, ax_sched = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    n_epochs = len({r.get("epoch", i) for i, r in enumerate(records)})
    marker = "o" if n_epochs <= 30 else None  # single points must stay visible; dense runs read better as lines

    _loss_panel(ax_loss, records, marker)
    _schedule_panel(ax_sched, records, marker)
    ax_sched.set_xlabel("epoch")
    ax_sched.xaxis.set_major_locator(MaxNLocator(integer=True))
    epochs = [float(r["epoch"]) for r in records if isinstance(r.get("epoch"), (int, float))]
    if epochs and max(epochs) - min(epochs) < 2:  # one or two epochs: keep whole-number ticks around them
        ax_sched.set_xlim(min(epochs) - 1, max(epochs) + 1)
    fig.suptitle(title)
    return fig


def _loss_panel(ax_loss, records: list, marker: str | None) -> None:
    """The training curves' top panel: the loss terms, and validation PSNR on a right axis."""
    handles = []
    loss_values = []
    for key, label, color in (("loss", "loss (total)", "black"), ("mse", "MSE (reconstruction)", "tab:blue"),
                              ("kl", "KL", "tab:orange"), ("val_kl", "KL (validate)", "tab:red"),
                              ("points", "point loss", "tab:purple")):
        xs, ys = _series(records, key)
        if xs:
            handles += ax_loss.plot(xs, ys, color=color, marker=marker, ms=3, lw=1.5, label=label)
            loss_values += ys
    positive = [v for v in loss_values if v > 0]
    if positive and len(positive) == len(loss_values) and max(positive) / min(positive) > 100:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss terms (per-step means)")
    ax_loss.grid(True, which="major", alpha=0.3)

    xs, ys = _series(records, "val_psnr")
    if xs:
        ax_psnr = ax_loss.twinx()
        handles += ax_psnr.plot(xs, ys, color="tab:green", marker="s", ms=4, lw=1.5, label="validation PSNR (dB)")
        ax_psnr.set_ylabel("validation PSNR (dB)", color="tab:green")
        ax_psnr.tick_params(axis="y", colors="tab:green")
    if handles:  # above the panel, in one row: inside it, it would cover the late epochs that matter most
        ax_loss.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(handles),
                       fontsize=8, frameon=False, borderaxespad=0.3)
    else:
        ax_loss.text(0.5, 0.5, "no loss or PSNR values logged", ha="center", va="center",
                     transform=ax_loss.transAxes, color="grey")


def _schedule_panel(ax_sched, records: list, marker: str | None) -> None:
    """The training curves' bottom panel: the teacher-forcing ratio, and the KL weight beta on a right axis."""
    sched_handles = []
    xs, ys = _series(records, "tfr")
    if xs:
        sched_handles += ax_sched.plot(xs, ys, color="tab:brown", ls="--", marker=marker, ms=3, lw=1.5,
                                       label=f"teacher-forcing ratio (last {ys[-1]:.3g})")
    ax_sched.set_ylim(-0.05, 1.05)
    ax_sched.set_ylabel("teacher forcing")
    xs, ys = _series(records, "beta")
    if xs:   # on its own axis up to its maximum: a KL weight of 1e-4 must not draw as a flat line at 0
        ax_beta = ax_sched.twinx()
        top = max(ys) if max(ys) > 0 else 1.0
        sched_handles += ax_beta.plot(xs, ys, color="tab:purple", ls="--", marker=marker, ms=3, lw=1.5,
                                      label=f"beta, KL weight (right axis; last {ys[-1]:.3g})")
        ax_beta.set_ylim(-0.05 * top, 1.05 * top)
        ax_beta.set_ylabel("beta", color="tab:purple")
        ax_beta.tick_params(axis="y", colors="tab:purple")
        ax_beta.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax_sched.grid(True, alpha=0.3)
    if sched_handles:
        ax_sched.legend(handles=sched_handles, loc="best", fontsize=8, framealpha=0.85)
    else:
        ax_sched.text(0.5, 0.5, "no schedule values logged", ha="center", va="center",
                      transform=ax_sched.transAxes, color="grey")


# ---------------------------------------------------------------------------------------------- image grids


def _grid_inputs(gt, samples, n_past: int, labels):
    """:func:`save_prediction_grid`'s inputs checked and as uint8 pictures: gt (T, H, W, 3), samples
    (S, T', H, W, 3), and the S + 1 row labels (or None)."""
    gt_img = _rgb_frames(gt, "gt")  # (T, H, W, 3)
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu()
    if np.ndim(samples) == 4:
        samples = samples[None]
    if np.ndim(samples) != 5:
        raise ValueError(f"samples: expected (S, T', C, H, W), got shape {tuple(np.shape(samples))}")
    smp_img = np.stack([_rgb_frames(s, "samples") for s in samples])  # (S, T', H, W, 3)
    T, H, W = gt_img.shape[:3]
    S, T_s = smp_img.shape[:2]
    if smp_img.shape[2:4] != (H, W):
        raise ValueError(f"samples are {smp_img.shape[2]}x{smp_img.shape[3]} pixels, gt is {H}x{W}")
    if T_s > T:
        raise ValueError(f"samples have {T_s} frames, more than the {T} ground-truth frames")
    if not 0 <= n_past <= T:
        raise ValueError(f"n_past must be in [0, {T}], got {n_past}")
    if labels is not None:
        labels = list(labels)
        if len(labels) == S:
            labels = ["ground truth"] + labels
        if len(labels) != S + 1:
            raise ValueError(f"labels: expected {S} or {S + 1} names, got {len(labels)}")
    return gt_img, smp_img, labels


def save_prediction_grid(gt, samples, path, n_past: int, labels: Sequence[str] | None = None,
                         scale: int = 2) -> Path:
    """PNG grid: one row of ground truth, then one row per sample; one column per time step.

    gt: (T, C, H, W). samples: (S, T', C, H, W) with T' <= T, aligned to the end of gt: either the future frames
    only (T' = T - n_past) or the whole sequence. Sample rows show the ground truth faded in the past columns (the
    context every sample saw; a sample's own frames there are not drawn). Cells have a green border in past
    columns and a red one in predicted columns; the header holds zero-based frame indices.
    labels: S + 1 row names (ground truth first) or S (then "ground truth" is prepended); drawn at the left.
    Frames are upscaled ``scale`` times with nearest neighbour.

    Size: width = label width + T * (W * scale + 2 * BORDER) + (T + 1) * GAP,
          height = HEADER + (S + 1) * (H * scale + 2 * BORDER) + (S + 2) * GAP.
    """
    scale = _check_scale(scale)
    gt_img, smp_img, labels = _grid_inputs(gt, samples, n_past, labels)
    T, H, W = gt_img.shape[:3]
    S, T_s = smp_img.shape[:2]

    font = _font()
    offset = T - T_s  # sample frame j belongs to time step offset + j
    faded = (gt_img.astype(np.float32) * DIM + 255.0 * (1.0 - DIM) + 0.5).astype(np.uint8)
    blank = np.full((H, W, 3), 255, dtype=np.uint8)

    cell_h, cell_w = H * scale + 2 * BORDER, W * scale + 2 * BORDER
    label_w = _label_width(labels, font)
    width = label_w + T * cell_w + (T + 1) * GAP
    height = HEADER + (S + 1) * cell_h + (S + 2) * GAP
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)

    for row in range(S + 1):
        y = HEADER + GAP + row * (cell_h + GAP)
        for t in range(T):
            if row == 0:
                frame = gt_img[t]
            elif t < n_past:
                frame = faded[t]
            elif t >= offset:
                frame = smp_img[row - 1, t - offset]
            else:
                frame = blank  # no sample frame for this future step
            x = label_w + GAP + t * (cell_w + GAP)
            color = PAST_COLOR if t < n_past else FUTURE_COLOR
            canvas[y:y + cell_h, x:x + cell_w] = _boxed(_upscale(frame, scale), color)

    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for t in range(T):
        x = label_w + GAP + t * (cell_w + GAP)
        _draw_centered(draw, (x, 0, x + cell_w, HEADER), f"t={t}", font)
    for row, text in enumerate(labels or []):
        y = HEADER + GAP + row * (cell_h + GAP)
        draw.text((LABEL_PAD, y + cell_h / 2), text, fill=TEXT_COLOR, font=font, anchor="lm")
    return atomic_write(path, lambda f: img.save(f, format="PNG"))


def save_gif(columns: Sequence, path, fps: float = 4, labels: Sequence[str] | None = None, scale: int = 2,
             n_past: int | None = None) -> Path:
    """Animated GIF (looping forever) of several videos side by side, e.g. ground truth | prediction | sample 2.

    columns: videos (T, C, H, W) in [0, 1], all with the same T, H and W (ValueError otherwise).
    labels: one caption per column, drawn above it. n_past: if given, frames t < n_past get a green border
    (given context) and later frames a red one (predicted); otherwise the border is grey.
    Frame size: width = len(columns) * (W * scale + 2 * BORDER) + (len(columns) + 1) * GAP,
                height = H * scale + 2 * BORDER + 2 * GAP (+ HEADER with labels).
    Pillow merges consecutive identical frames into one longer frame, so the file can hold fewer frames than T
    (the playing time stays T / fps).
    """
    scale = _check_scale(scale)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    videos = [_rgb_frames(v, f"columns[{i}]") for i, v in enumerate(columns)]
    if not videos:
        raise ValueError("save_gif needs at least one video")
    shapes = {v.shape for v in videos}
    if len({v.shape[0] for v in videos}) != 1:
        raise ValueError(f"all videos must have the same number of frames, got {[v.shape[0] for v in videos]}")
    if len(shapes) != 1:
        raise ValueError(f"all videos must have the same frame size, got {sorted(s[1:3] for s in shapes)}")
    if labels is not None and len(labels) != len(videos):
        raise ValueError(f"labels: expected {len(videos)} captions, got {len(labels)}")
    T, H, W = videos[0].shape[:3]

    font = _font()
    cell_h, cell_w = H * scale + 2 * BORDER, W * scale + 2 * BORDER
    header = HEADER if labels else 0
    width = len(videos) * cell_w + (len(videos) + 1) * GAP
    height = header + cell_h + 2 * GAP

    # Captions do not change over time: draw them once and copy the strip into every frame.
    base = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(base)
    for i, text in enumerate(labels or []):
        x = GAP + i * (cell_w + GAP)
        _draw_centered(draw, (x, 0, x + cell_w, header), str(text), font)
    base_arr = np.asarray(base)

    frames = []
    for t in range(T):
        if n_past is None:
            color = NEUTRAL_COLOR
        else:
            color = PAST_COLOR if t < n_past else FUTURE_COLOR
        canvas = base_arr.copy()
        y = header + GAP
        for i, video in enumerate(videos):
            x = GAP + i * (cell_w + GAP)
            canvas[y:y + cell_h, x:x + cell_w] = _boxed(_upscale(video[t], scale), color)
        frames.append(Image.fromarray(canvas))

    duration = max(1, round(1000.0 / fps))  # milliseconds per frame
    return atomic_write(path, lambda f: frames[0].save(
        f, format="GIF", save_all=True, append_images=frames[1:], duration=duration, loop=0))


# ------------------------------------------------------------------------------------------ per-frame plots


def plot_per_frame(curves: Mapping[str, object], path, ylabel: str, n_past: int,
                   title: str | None = None) -> Path:
    """A metric (PSNR, SSIM) against the predicted frame for several methods, e.g. model mean, best-of-N, copy last
    (:func:`per_frame_figure`), written to ``path`` as PNG."""
    return _save_figure(per_frame_figure(curves, ylabel, n_past, title), path)


def per_frame_figure(curves: Mapping[str, object], ylabel: str, n_past: int, title: str | None = None) -> Figure:
    """The figure of :func:`plot_per_frame`. Each curve is (n_future,) values for frames n_past, n_past + 1, ...
    (zero-based frame index on the x axis), or (n_sequences, n_future) per-sequence values: then the mean is drawn
    with its 95% confidence band."""
    from .metrics import mean_ci95

    fig = Figure(figsize=(7.0, 4.2), dpi=110, layout="constrained")
    ax = fig.subplots()
    for i, (name, values) in enumerate(curves.items()):
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().double().numpy()
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 2 and arr.shape[0] > 1:
            mean, half = mean_ci95(arr)
        elif arr.ndim in (1, 2):
            mean, half = arr.reshape(-1, arr.shape[-1])[0], None
        else:
            raise ValueError(f"curve {name!r}: expected (n_future,) or (n_sequences, n_future), got {arr.shape}")
        frames = np.arange(n_past, n_past + mean.shape[0])
        (line,) = ax.plot(frames, mean, ls=LINE_STYLES[i % len(LINE_STYLES)], marker="o", ms=3.5, lw=1.6, label=name)
        if half is not None:
            ax.fill_between(frames, mean - half, mean + half, color=line.get_color(), alpha=0.15, lw=0)
    given = {0: "", 1: "; frame 0 given"}.get(n_past, f"; frames 0-{n_past - 1} given")
    ax.set_xlabel(f"frame index (zero-based{given})")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize=9, framealpha=0.85)
    ax.set_title(title or f"{ylabel} per predicted frame")
    return fig


def plot_eval_per_frame(methods: Mapping[str, Mapping], path, n_past: int, title: str | None = None) -> Path:
    """PSNR and SSIM per predicted frame, side by side, for the methods of an evaluation report.

    ``methods`` maps a method name to a dict with ``psnr_per_frame`` and ``ssim_per_frame`` lists.
    """
    fig = Figure(figsize=(11.0, 4.0), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, label in zip(axes, ("psnr_per_frame", "ssim_per_frame"), ("PSNR (dB)", "SSIM")):
        for i, (name, m) in enumerate(methods.items()):
            values = np.asarray(m[key], dtype=np.float64)
            frames = np.arange(n_past, n_past + len(values))
            ax.plot(frames, values, ls=LINE_STYLES[i % len(LINE_STYLES)], marker="o", ms=3.5, lw=1.6, label=name)
        ax.set_xlabel("frame index (zero-based)")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, framealpha=0.85)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)


def plot_runs(runs: Mapping[str, Sequence[Mapping]], path, title: str = "") -> Path:
    """Validation PSNR and training MSE against epoch for several runs (one line per run)."""
    fig = Figure(figsize=(11.0, 3.8), dpi=100, layout="constrained")
    axes = fig.subplots(1, 2)
    for name, records in runs.items():
        for ax, key in zip(axes, ("val_psnr", "mse")):
            xs, ys = _series(records, key)
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, lw=1.5, label=name)
    axes[0].set_ylabel("validation PSNR (dB)")
    axes[1].set_ylabel("training MSE per step")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)
