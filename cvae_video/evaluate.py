"""Evaluation: predict futures for a split and score them against the ground truth.

Protocols:
- ``lab``: the first 12 frames, 2 past -> 10 predicted; PSNR/SSIM averaged over predicted frames and sequences.
- ``svg``: 2 past -> 28 predicted (30-frame sequences), N samples per sequence; the best sample per sequence by
  SSIM (and separately by PSNR), averaged over sequences, with a 95% confidence interval.

Every report has the copy-last-frame baseline and the model with z fixed at the prior mean beside the model.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from . import config as config_mod, metrics
from .errors import CvaeError, DataError
from .fileio import atomic_write_json, atomic_write_text
from .inference import Trained, open_for_inference, predict_batch
from .runtime import PRECISIONS, keep_freed_memory

PROTOCOLS = {"lab": (2, 10), "svg": (2, 28)}


def protocol_frames(protocol: str) -> tuple[int, int]:
    """(n_past, n_future) of a protocol's name; an unknown name is a CvaeError that lists the known ones."""
    if protocol not in PROTOCOLS:
        raise CvaeError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]
METRIC_KEYS = ("psnr", "ssim", "lpips")   # lpips only with --lpips


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of range(n) that moves every index (one cycle through a random order); n >= 2."""
    if n < 2:
        raise CvaeError(f"shuffling conditions between sequences needs at least 2 sequences, got {n}")
    order = np.random.default_rng([seed, 0x5C0D]).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)
    return perm


class ShuffledConditions(Dataset):
    """The items of ``dataset`` with the conditions (actions, positions) of another item: item i gets those of
    item ``derangement(n, seed)[i]``. Scoring a model on it measures how much its predictions follow the
    conditions: a model that ignores them scores as on ``dataset``."""

    def __init__(self, dataset, seed: int = 0):
        self.dataset, self.perm = dataset, derangement(len(dataset), seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i])
        other = self.dataset[int(self.perm[i])]["cond"]
        if len(other) < len(item["cond"]):
            raise DataError(f"sequence {self.perm[i]} has {len(other)} condition rows, sequence {i} needs "
                            f"{len(item['cond'])}")
        item["cond"] = other[:len(item["cond"])]
        return item


@torch.inference_mode()
def score_split(model, loader, *, n_past: int, n_future: int, n_samples: int = 1, z_mode: str = "sample",
                seed: int = 0, amp=None, progress: bool = False, with_kl: bool = True,
                lpips=None) -> dict[str, np.ndarray]:
    """Per-frame PSNR/SSIM (and, given an :class:`~cvae_video.perceptual.LPIPS`, LPIPS) of every sequence of
    ``loader``, predicted by :func:`~cvae_video.inference.predict_batch` on the model's device.

    Returns arrays: ``psnr``/``ssim`` (N, S, F) of the model's samples, ``base_psnr``/``base_ssim`` (N, F) of
    copy-last-frame, ``diversity`` (N, F), the standard deviation across the samples averaged over pixels (zero
    for one sample), and with ``with_kl``: ``kl`` (N,), the KL between posterior and prior per step on the
    sequence's ground truth (:meth:`CVAE.latent_kl`, steps 1 .. n_past + n_future - 1), and, from the same pass,
    the sums over those steps of the posterior means and of their squares, ``latent_sum``/``latent_sumsq``
    (N, z_dim), with ``latent_steps`` (N,) the steps summed: sums of any shares of the split add up to those of
    the whole split, whose variances :func:`latent_summary` thresholds (active units).

    Deterministic given ``seed``: each batch draws its latents as ``predict_batch`` seeds them, from (seed, index
    of the batch's first sequence), so a batch scores the same whichever batches ran before it or in other
    processes (``distributed.shard_loader``).
    """
    amp = amp or nullcontext()
    out = {"psnr": [], "ssim": [], "base_psnr": [], "base_ssim": [], "diversity": [], "kl": [], "latent_sum": [],
           "latent_sumsq": [], "latent_steps": [], "lpips": [], "base_lpips": []}
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        p = predict_batch(model, batch, n_past=n_past, n_future=n_future, n_samples=n_samples, z_mode=z_mode,
                          seed=seed, amp=amp)
        x, pred = p.x, p.samples                                    # (B, T, C, H, W), (B, S, F, C, H, W)
        gt = x[:, n_past:]                                          # (B, F, C, H, W)
        if with_kl:   # depends on the frames alone: a pass that changes only z or the conditions skips it
            with amp:
                kl, mu_q = model.latent_stats(x, n_past)            # (B, T-1), (B, T-1, z)
            mu_q = mu_q.double()
            out["kl"].append(kl.mean(1).cpu())                               # (B,)
            out["latent_sum"].append(mu_q.sum(1).cpu())                      # (B, z)
            out["latent_sumsq"].append(mu_q.square().sum(1).cpu())
            out["latent_steps"].append(torch.full((x.shape[0],), mu_q.shape[1], dtype=torch.float64))
        out["diversity"].append(metrics.sample_spread(pred).mean((2, 3, 4)).cpu())   # (B, F)
        pred = pred.flatten(0, 1)
        gt_rep = gt.repeat_interleave(n_samples, 0)
        B = x.shape[0]
        out["psnr"].append(metrics.psnr(pred, gt_rep).unflatten(0, (B, n_samples)).cpu())
        out["ssim"].append(metrics.ssim(pred, gt_rep).unflatten(0, (B, n_samples)).cpu())
        base = metrics.copy_last_baseline(x, n_past)
        out["base_psnr"].append(metrics.psnr(base, gt).cpu())
        out["base_ssim"].append(metrics.ssim(base, gt).cpu())
        if lpips is not None:
            out["lpips"].append(lpips(pred, gt_rep).unflatten(0, (B, n_samples)))
            out["base_lpips"].append(lpips(base, gt))
    if not out["psnr"]:   # an empty loader (a process's share of a small split)
        return _no_scores(model.cfg.z_dim, n_samples, n_future, with_kl, lpips is not None)
    return {k: torch.cat(v).numpy().astype(np.float64) for k, v in out.items() if v}


def _no_scores(z_dim: int, n_samples: int, n_future: int, with_kl: bool, with_lpips: bool) -> dict[str, np.ndarray]:
    """What :func:`score_split` returns for no sequences: each array with zero rows."""
    return {"psnr": np.zeros((0, n_samples, n_future)), "ssim": np.zeros((0, n_samples, n_future)),
            "base_psnr": np.zeros((0, n_future)), "base_ssim": np.zeros((0, n_future)),
            "diversity": np.zeros((0, n_future)),
            **({"kl": np.zeros(0), "latent_sum": np.zeros((0, z_dim)), "latent_sumsq": np.zeros((0, z_dim)),
                "latent_steps": np.zeros(0)} if with_kl else {}),
            **({"lpips": np.zeros((0, n_samples, n_future)), "base_lpips": np.zeros((0, n_future))}
               if with_lpips else {})}


def latent_summary(total: np.ndarray, total_sq: np.ndarray, count: float) -> dict:
    """The active units of the posterior means whose per-dimension sums over ``count`` (sequence, step) pairs are
    ``total`` and ``total_sq`` (z_dim,), see ``score_split``: ``active_units``, ``active_units_threshold`` and the
    per-dimension ``latent_variance``."""
    variance = metrics.latent_variance(total, total_sq, count)
    return {"active_units": metrics.active_units(variance), "active_units_threshold": metrics.ACTIVE_UNITS_THRESHOLD,
            "latent_variance": variance.tolist()}


def summarize(per_frame: np.ndarray) -> dict:
    """(N, F) per-sequence, per-frame values -> mean, 95% CI over sequences, per-frame means."""
    per_seq = per_frame.mean(1)
    mean, ci = metrics.mean_ci95(per_seq)
    return {"mean": float(mean), "ci95": float(ci), "per_frame": per_frame.mean(0).tolist()}


def report(scores: dict[str, np.ndarray], mean_scores: dict[str, np.ndarray] | None = None,
           shuffled_scores: dict[str, np.ndarray] | None = None, shuffled_note: str | None = None) -> dict:
    """All numbers of an evaluation: model mean-of-N, best-of-N (by SSIM, by PSNR, by LPIPS when scored),
    baselines; with ``mean_scores`` the model at the latents' means, with ``shuffled_scores`` the model given other
    sequences' conditions (mean of its N samples), or with ``shuffled_note`` instead why that was not scored
    (``model_shuffled_condition`` and ``shuffled_condition_drop`` are then None, ``shuffled_condition_note`` says
    why); the KL per step, the active units (when ``scores`` has the latent sums) and the samples' diversity."""
    keys = [k for k in METRIC_KEYS if k in scores]                  # each (N, S, F)
    N, S, F = scores["psnr"].shape
    rows = np.arange(N)

    def sample(index: np.ndarray) -> dict:   # every metric of one chosen sample per sequence
        return {k: scores[k][rows, index] for k in keys}
    methods = {"model_mean_of_n": {k: scores[k].mean(1) for k in keys},
               "model_best_ssim": sample(scores["ssim"].mean(2).argmax(1)),
               "model_best_psnr": sample(scores["psnr"].mean(2).argmax(1))}
    if "lpips" in keys:   # lower is better
        methods["model_best_lpips"] = sample(scores["lpips"].mean(2).argmin(1))
    methods["baseline_copy_last"] = {k: scores[f"base_{k}"] for k in keys}
    if mean_scores is not None:
        methods["model_prior_mean"] = {k: mean_scores[k][:, 0] for k in keys}
    if shuffled_scores is not None:
        methods["model_shuffled_condition"] = {k: shuffled_scores[k].mean(1) for k in keys}
    elif shuffled_note is not None:
        methods["model_shuffled_condition"] = None
    out = {}
    for name, values in methods.items():
        out[name] = None if values is None else {}
        for k, v in (values or {}).items():
            s = summarize(v)
            out[name] |= {k: s["mean"], f"{k}_ci95": s["ci95"], f"{k}_per_frame": s["per_frame"]}
    main = out["model_mean_of_n"]
    div = summarize(scores["diversity"])
    result = {"psnr": main["psnr"], "ssim": main["ssim"], "psnr_per_frame": main["psnr_per_frame"],
              "ssim_per_frame": main["ssim_per_frame"], "n_sequences": int(N), "n_samples": int(S),
              "n_future": int(F), "methods": out, "baseline_copy_last": out["baseline_copy_last"],
              "kl_per_step": float(scores["kl"].mean()),
              "diversity": div["mean"], "diversity_per_frame": div["per_frame"],
              "best_psnr_minus_mean": out["model_best_psnr"]["psnr"] - main["psnr"]}
    if "latent_sum" in scores:
        result |= latent_summary(scores["latent_sum"].sum(0), scores["latent_sumsq"].sum(0),
                                 scores["latent_steps"].sum())
    if "lpips" in keys:
        result |= {"lpips": main["lpips"], "lpips_per_frame": main["lpips_per_frame"]}
    if shuffled_scores is not None:
        result["shuffled_condition_drop"] = main["psnr"] - out["model_shuffled_condition"]["psnr"]
    elif shuffled_note is not None:
        result |= {"shuffled_condition_drop": None, "shuffled_condition_note": shuffled_note}
    return result


def make_loader(dataset, batch_size: int, num_workers: int = 0, device: torch.device | None = None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device is not None and device.type == "cuda")


@dataclass
class EvalConfig:
    """What ``cvae-eval`` evaluates and how (its flags)."""
    data_root: str = ""              # empty: the data the model was trained on
    split: str = "test"
    protocol: str = "lab"            # see PROTOCOLS; n_past / n_future override its frame counts
    n_past: int | None = None
    n_future: int | None = None
    n_samples: int = 1               # futures drawn per sequence
    batch_size: int = 32
    max_sequences: int = 0           # 0: every sequence of the split
    seed: int = 0
    device: str = "cpu"              # "cpu", "cuda", "cuda:1" (--cuda: "cuda")
    precision: str = "auto"         # auto: bf16 where it is faster (CUDA; CPUs by a start-up probe), else fp32
    num_workers: int = 0
    channels_last: bool | None = None   # the model's memory format; None: as it was trained
    compile: bool = False            # torch.compile the prediction (worth it for long evaluations on a GPU)
    lpips: bool = False              # also LPIPS (AlexNet, v0.1): see cvae_video.perceptual
    lpips_weights: str = ""          # torchvision's AlexNet file (default: torch's hub cache)

    def frames(self) -> tuple[int, int]:
        """(n_past, n_future): the protocol's, unless overridden."""
        p_past, p_future = protocol_frames(self.protocol)
        return self.n_past or p_past, self.n_future or p_future


def _open_eval_split(trained: Trained, cfg: EvalConfig, n_past: int, n_future: int):
    try:
        ds = trained.open_split(cfg.data_root, cfg.split, n_past + n_future)
    except DataError as e:
        if cfg.protocol == "svg" and "frames, but sequences of" in str(e):
            raise DataError(f"the svg protocol predicts {n_past} -> {n_future} frames and needs sequences of "
                            f"{n_past + n_future} frames: {e}") from None
        raise
    return Subset(ds, range(min(cfg.max_sequences, len(ds)))) if cfg.max_sequences else ds


def shuffled_not_applicable(condition: str, n_sequences: int) -> str | None:
    """Why the model given other sequences' conditions cannot be scored, or None if it can."""
    if condition == "none":
        return "the model takes no condition (condition = none)"
    if n_sequences < 2:
        return f"shuffling conditions between sequences needs at least 2 sequences, the split has {n_sequences}"
    return None


def evaluate(ckpt_path: str, cfg: EvalConfig | None = None, progress: bool = True) -> dict:
    """Evaluate a checkpoint on a split; returns the report dict (see :func:`report`): the model's samples, the
    model at the latents' means, and the model given other sequences' conditions with the same draws of z (unless
    the model takes no condition or the split has a single sequence: see ``shuffled_not_applicable``)."""
    cfg = cfg or EvalConfig()
    n_past, n_future = cfg.frames()
    if cfg.n_samples < 1:
        raise CvaeError(f"--n_samples must be >= 1, got {cfg.n_samples}")
    trained = open_for_inference(ckpt_path, device=cfg.device, precision=cfg.precision,
                                 channels_last=cfg.channels_last, n_past=n_past, script="cvae-eval")
    model = trained.model
    ds = _open_eval_split(trained, cfg, n_past, n_future)
    amp = trained.amp()   # decides auto, timing the model as it is
    if cfg.compile:   # an instance attribute: predict_batch calls model.predict
        model.predict = torch.compile(model.predict)

    lpips = None
    if cfg.lpips:
        from .perceptual import LPIPS
        lpips = LPIPS(trained.device, cfg.lpips_weights or None)

    def score(dataset, n_samples: int, z_mode: str, with_kl: bool) -> dict[str, np.ndarray]:
        loader = make_loader(dataset, cfg.batch_size, cfg.num_workers, trained.device)
        return score_split(model, loader, n_past=n_past, n_future=n_future, n_samples=n_samples, z_mode=z_mode,
                           seed=cfg.seed, amp=amp, progress=progress, with_kl=with_kl, lpips=lpips)

    scores = score(ds, cfg.n_samples, "sample", with_kl=True)
    mean_scores = score(ds, 1, "mean", with_kl=False)
    shuffled_scores, note = None, shuffled_not_applicable(model.cfg.condition, len(ds))
    if note is None:
        shuffled_scores = score(ShuffledConditions(ds, cfg.seed), cfg.n_samples, "sample", with_kl=False)
    result = report(scores, mean_scores, shuffled_scores, note)
    result.update({"checkpoint": str(ckpt_path), "data_root": str(trained.data_root(cfg.data_root)),
                   "split": cfg.split, "protocol": cfg.protocol, "n_past": n_past, "seed": cfg.seed,
                   "precision": trained.precision, **_trained_when(trained)})
    return result


def _trained_when(trained: Trained) -> dict:
    """The epoch and step of training the checkpoint was saved at (None for a checkpoint of a model alone)."""
    state = trained.checkpoint.state
    return {"epoch": state.epoch if state is not None else None, "step": state.step if state is not None else None}


def format_table(result: dict) -> str:
    lines = [f"{result['split']} split, {result['n_sequences']} sequences, {result['n_past']} -> "
             f"{result['n_future']} frames, {result['n_samples']} sample(s) per sequence, {result['precision']}",
             f"{'method':<26}{'PSNR':>8}{'±95%':>7}{'SSIM':>9}{'±95%':>8}"
             + (f"{'LPIPS':>9}{'±95%':>8}" if "lpips" in result else "")]
    for name, m in result["methods"].items():
        if m is None:
            continue
        lines.append(f"{name:<26}{m['psnr']:8.2f}{m['psnr_ci95']:7.2f}{m['ssim']:9.4f}{m['ssim_ci95']:8.4f}"
                     + (f"{m['lpips']:9.4f}{m['lpips_ci95']:8.4f}" if "lpips" in m else ""))
    lines.append(f"KL per step {result['kl_per_step']:.4g} nats; best of {result['n_samples']} by PSNR minus "
                 f"mean {result['best_psnr_minus_mean']:+.2f} dB; sample diversity (std over samples, mean over "
                 f"pixels) {result['diversity']:.4f}")
    if "active_units" in result:
        lines.append(f"active units {result['active_units']} of {len(result['latent_variance'])} (latent "
                     f"dimensions whose posterior mean varies over the split with variance > "
                     f"{result['active_units_threshold']:g})")
    if result.get("shuffled_condition_drop") is not None:
        lines.append(f"other sequences' conditions cost {result['shuffled_condition_drop']:.2f} dB")
    elif "shuffled_condition_note" in result:
        lines.append(f"model_shuffled_condition not scored: {result['shuffled_condition_note']}")
    return "\n".join(lines)


def write_per_frame_csv(result: dict, path: str | Path) -> None:
    methods = {name: m for name, m in result["methods"].items() if m is not None}
    text = io.StringIO(newline="")
    w = csv.writer(text)
    keys = [k for k in METRIC_KEYS if k in result]
    w.writerow(["frame"] + [f"{m}_{k}" for m in methods for k in keys])
    for i in range(result["n_future"]):
        w.writerow([result["n_past"] + i] + [f"{methods[m][k + '_per_frame'][i]:.6f}" for m in methods for k in keys])
    atomic_write_text(path, text.getvalue())


def build_parser() -> argparse.ArgumentParser:
    d = EvalConfig()
    p = argparse.ArgumentParser(prog="cvae-eval", description="Evaluate a cvae_video checkpoint.")
    p.add_argument("--ckpt", required=True, help="checkpoint file (best.pt / last.pt)")
    p.add_argument("--data_root", default=d.data_root,
                   help="data set root (default: the one the model was trained on)")
    p.add_argument("--split", default=d.split, choices=["train", "validate", "test"])
    p.add_argument("--protocol", default=d.protocol, choices=sorted(PROTOCOLS))
    p.add_argument("--n_past", type=int, default=d.n_past, help="override the protocol's past frames")
    p.add_argument("--n_future", type=int, default=d.n_future, help="override the protocol's predicted frames")
    p.add_argument("--n_samples", type=int, default=d.n_samples, help="futures drawn per sequence")
    p.add_argument("--batch_size", type=int, default=d.batch_size)
    p.add_argument("--max_sequences", type=int, default=d.max_sequences,
                   help="evaluate only the first N sequences (0: all)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    config_mod.add_cuda_flag(p, default=d.device)
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                   help="auto: bf16 where it is faster on this device (CUDA; a CPU by a start-up probe), else fp32")
    p.add_argument("--num_workers", type=int, default=d.num_workers)
    p.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=d.channels_last,
                   help="channels-last memory format (default: as the model was trained)")
    p.add_argument("--compile", action="store_true", help="torch.compile the prediction")
    p.add_argument("--lpips", action="store_true", help="also LPIPS (AlexNet, v0.1; needs the lpips package and "
                   "torchvision's AlexNet weights, see --lpips_weights)")
    p.add_argument("--lpips_weights", default=d.lpips_weights, metavar="PATH",
                   help="torchvision's alexnet-owt-7be5be79.pth (default: torch's hub cache); nothing is downloaded")
    p.add_argument("--json", help="write all numbers to this JSON file")
    p.add_argument("--csv", help="write per-frame PSNR/SSIM of every method to this CSV file")
    p.add_argument("--plot", help="write a PSNR/SSIM-per-frame plot to this PNG file")
    return p


OUTPUT_FLAGS = ("ckpt", "json", "csv", "plot")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()   # process-wide (glibc malloc): the console script's decision, not the library's
    cfg = EvalConfig(**{k: v for k, v in vars(args).items() if k not in OUTPUT_FLAGS})
    try:
        result = evaluate(args.ckpt, cfg)
    except CvaeError as e:
        print(f"cvae-eval: error: {e}", file=sys.stderr)
        return 1
    print(format_table(result))
    if args.json:
        atomic_write_json(args.json, result)
    if args.csv:
        write_per_frame_csv(result, args.csv)
    if args.plot:
        from .viz import plot_per_frame
        m = result["methods"]
        plot_per_frame({name: np.asarray(v["psnr_per_frame"]) for name, v in m.items() if v is not None}, args.plot,
                       ylabel="PSNR (dB)", n_past=result["n_past"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
