"""Training: ``train(cfg)`` runs the loop; ``main()`` is the thin console script ``cvae-train``.

Per epoch: ``epoch_size`` iterations with a tqdm bar, validation PSNR with the lab protocol on the validate
split (every ``val_every`` epochs), one JSON line in ``metrics.jsonl``, ``last.pt``, ``best.pt`` (by validation
PSNR), the training-curve plot and a prediction grid. Everything is written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from . import config as config_mod
from .checkpoint import atomic_write_bytes, load_checkpoint, load_model_state, rng_state, save_checkpoint, \
    set_rng_state
from .config import TrainConfig
from .data.dataset import VideoDataset, WindowSampler
from .errors import ConfigError, CvaeError, DataError
from .evaluate import frames_to_float, make_loader, score_split
from .models.svg import CVAE
from .runtime import autocast, grad_scaler, resolve_device, seed_everything
from .schedules import kl_weight, teacher_forcing_ratio

KEEP_PICTURES = 5


def resolve_data_root(cfg: TrainConfig) -> Path:
    """The data set to train on: ``data_root``, or the synthetic push world generated once into a cache."""
    if cfg.data_root:
        root = Path(cfg.data_root)
        if not root.is_dir():
            raise DataError(f"--data_root {root}: folder not found")
        return root
    from .data import synth
    cache = Path(os.environ.get("CVAE_VIDEO_CACHE", Path.home() / ".cache" / "cvae_video"))
    return Path(synth.ensure_synth_dataset(cache, n_train=cfg.synth_n_train, seed=cfg.synth_seed))


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, 0.999))
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, 0.999))
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.beta1)


class NonFiniteLoss(CvaeError):
    pass


def train_step(model, optimizer, scaler, batch, cfg: TrainConfig, beta: float, tfr: float, device, amp) -> dict:
    """One optimisation step; returns the step's scalar logs (floats)."""
    model.train()
    x = frames_to_float(batch["frames"].to(device, non_blocking=True))   # (B, T, C, H, W)
    cond = batch["cond"].to(device, non_blocking=True)                    # (B, T, cond_dim)
    if cfg.tf_per_sample:
        teacher_forcing = torch.rand(x.shape[0]) < tfr
    else:
        teacher_forcing = bool(torch.rand(()) < tfr)
    with amp:
        out = model(x, cond, cfg.n_past, teacher_forcing)
    loss = out["recon"] + beta * out["kl"]     # recon and kl: sums over steps (see CVAE.forward)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    n_steps = x.shape[1] - 1
    return {"loss": loss.item(), "mse": out["recon"].item() / n_steps, "kl": out["kl"].item() / n_steps}


def _read_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_records(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    atomic_write_bytes(path, lambda f: f.write(text))


def _prepare_log_dir(cfg: TrainConfig, resume: bool, overwrite: bool) -> Path:
    log_dir = Path(cfg.log_dir)
    saved = log_dir / "config.toml"
    if saved.is_file() and not (resume or overwrite):
        old = config_mod.load_toml(saved)
        differs = [k for k, v in cfg.to_dict().items() if old.get(k) != v]
        what = f"a different config (differs in: {', '.join(differs)})" if differs else "a run with this config"
        raise ConfigError(f"--log_dir {log_dir} already holds {what}; pass --resume to continue it or "
                          f"--overwrite to start over")
    if overwrite and log_dir.is_dir():
        for name in ("metrics.jsonl", "last.pt", "best.pt", "config.toml"):
            (log_dir / name).unlink(missing_ok=True)
    (log_dir / "pictures").mkdir(parents=True, exist_ok=True)
    return log_dir


def _save_pictures(model, val_ds, cfg, device, amp, epoch: int, log_dir: Path) -> None:
    from .viz import save_prediction_grid
    n = min(cfg.n_pictures, len(val_ds))
    if n == 0:
        return
    batch = next(iter(DataLoader(Subset(val_ds, range(n)), batch_size=n)))
    x = frames_to_float(batch["frames"].to(device))
    model.eval()
    gen = torch.Generator(device).manual_seed(cfg.seed)
    with torch.inference_mode(), amp:
        pred = model.predict(x[:, :cfg.n_past], batch["cond"].to(device), cfg.n_eval, 3, "sample", gen).float()
    pictures = log_dir / "pictures"
    for i in range(n):
        save_prediction_grid(x[i].cpu(), pred[i].cpu(), pictures / f"epoch{epoch:04d}_seq{i}.png", cfg.n_past)
    # keep the last KEEP_PICTURES epochs' pictures
    epochs = sorted({p.name.split("_")[0] for p in pictures.glob("epoch*_seq*.png")})
    for old in epochs[:-KEEP_PICTURES]:
        for p in pictures.glob(f"{old}_seq*.png"):
            p.unlink()


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train a model; returns the last metrics record. ``resume`` continues ``cfg.log_dir/last.pt``."""
    device = resolve_device(cfg.device, cfg.cuda)
    log_dir = _prepare_log_dir(cfg, resume, overwrite)
    seed_everything(cfg.seed)
    root = resolve_data_root(cfg)
    seq_len = cfg.n_past + cfg.n_future
    train_ds = VideoDataset(root, "train", seq_len)
    val_ds = VideoDataset(root, "validate", cfg.n_past + cfg.n_eval, stats=train_ds.stats)
    if cfg.val_sequences:
        val_ds = Subset(val_ds, range(min(cfg.val_sequences, len(val_ds))))

    model = CVAE(cfg.model_config(cond_dim=train_ds.conditions[0].shape[1])).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model.parameters())
    scaler = grad_scaler(device, cfg.precision)
    amp = autocast(device, cfg.precision)
    step_model = torch.compile(model) if cfg.compile else model

    start_epoch, step, best = 0, 0, -math.inf
    records = []
    if resume:
        ckpt = load_checkpoint(log_dir / "last.pt")
        load_model_state(model, ckpt["model"], str(log_dir / "last.pt"))
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step, best = ckpt["epoch"] + 1, ckpt["step"], ckpt["best_val_psnr"]
        set_rng_state(ckpt["rng"])
        records = _read_records(log_dir / "metrics.jsonl")[:start_epoch]

    resolved = cfg.to_dict() | {"resolved_data_root": str(root)}
    (log_dir / "config.toml").write_text(config_mod.to_toml(cfg))
    sampler = WindowSampler(train_ds.lengths, seq_len, cfg.epoch_size * cfg.batch_size, cfg.seed,
                            random_window=cfg.train_window == "random")
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0,
                        generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = make_loader(val_ds, max(cfg.batch_size, 32), 0, device)
    total_steps = cfg.niter * cfg.epoch_size
    record = records[-1] if records else {}

    for epoch in range(start_epoch, cfg.niter):
        t0 = time.time()
        sampler.set_epoch(epoch)
        tfr = teacher_forcing_ratio(epoch, cfg.tfr, cfg.tfr_start_decay_epoch, cfg.tfr_decay_step,
                                    cfg.tfr_lower_bound)
        sums = {"loss": 0.0, "mse": 0.0, "kl": 0.0}
        bar = tqdm(loader, total=cfg.epoch_size, desc=f"epoch {epoch + 1}/{cfg.niter}", leave=False,
                   disable=not progress, dynamic_ncols=True)
        for batch in bar:
            beta = kl_weight(step, total_steps, cfg.kl_anneal_cyclical, cfg.kl_anneal_ratio, cfg.kl_anneal_cycle,
                             cfg.kl_weight_max)
            logs = train_step(step_model, optimizer, scaler, batch, cfg, beta, tfr, device, amp)
            if not math.isfinite(logs["loss"]):
                raise NonFiniteLoss(f"non-finite loss {logs['loss']} at step {step} (epoch {epoch}); "
                                    f"the last good checkpoint is {log_dir / 'last.pt'}"
                                    + ("" if (log_dir / "last.pt").exists() else " (none written yet)"))
            step += 1
            for k in sums:
                sums[k] += logs[k]
            bar.set_postfix(loss=f"{logs['loss']:.4f}", mse=f"{logs['mse']:.5f}", kl=f"{logs['kl']:.3f}",
                            beta=f"{beta:.2f}")
        bar.close()

        val_psnr = None
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.niter:
            scores = score_split(model, val_loader, device, cfg.n_past, cfg.n_eval, 1, "sample", cfg.seed, amp)
            val_psnr = float(scores["psnr"].mean())
        record = {"epoch": epoch, "step": step, **{k: v / cfg.epoch_size for k, v in sums.items()},
                  "beta": beta, "tfr": tfr, "lr": optimizer.param_groups[0]["lr"], "val_psnr": val_psnr,
                  "seconds": time.time() - t0}
        records.append(record)
        is_best = val_psnr is not None and val_psnr > best
        if is_best:
            best = val_psnr
        state = {"train_config": resolved, "cond_stats": train_ds.stats.to_dict(), "epoch": epoch, "step": step,
                 "best_val_psnr": best, "val_psnr": val_psnr, "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict(), "rng": rng_state()}
        save_checkpoint(log_dir / "last.pt", model, **state)
        if is_best:
            save_checkpoint(log_dir / "best.pt", model, **state)
        _write_records(log_dir / "metrics.jsonl", records)
        from .viz import plot_training_curves
        plot_training_curves(records, log_dir / "training_curves.png")
        _save_pictures(model, val_ds, cfg, device, amp, epoch, log_dir)
        if progress:
            vp = f"{val_psnr:6.2f}" if val_psnr is not None else "   -  "
            tqdm.write(f"epoch {epoch + 1:4d}/{cfg.niter}  loss {record['loss']:.4f}  mse {record['mse']:.5f}  "
                       f"kl {record['kl']:.4f}  beta {beta:.3f}  tfr {tfr:.2f}  val_psnr {vp}  "
                       f"{record['seconds']:.0f}s")
    return record


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cvae-train", description="Train the action-conditioned SVG video predictor.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    config_mod.add_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --log_dir from its last.pt")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing --log_dir")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_mod.resolve(args)
        train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except CvaeError as e:
        print(f"cvae-train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cvae-train: interrupted; last.pt holds the last finished epoch", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
