"""Training: ``train(cfg)`` runs the loop; ``main()`` is the thin console script ``cvae-train``.

Per epoch: ``epoch_size`` iterations with a tqdm bar, validation PSNR with the lab protocol on the validate
split (every ``val_every`` epochs), one JSON line in ``metrics.jsonl``, ``last.pt``, ``best.pt`` (by validation
PSNR), the training-curve plot and a prediction grid. Everything is written atomically.
Under ``torchrun`` the same loop trains with DistributedDataParallel; see :mod:`cvae_video.distributed`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from . import config as config_mod
from . import distributed, metrics
from .checkpoint import Checkpoint, Resolved, RunState, load_checkpoint, load_model_state, unwrap
from .config import TrainConfig
from .data.dataset import BadTrajectory, ConditionStats, VideoDataset, WindowSampler, frames_to_float
from .errors import CheckpointError, ConfigError, CvaeError, DataError
from .evaluate import score_split
from .fileio import atomic_write_json, atomic_write_text, remove_stale_temp_files
from .inference import predict_batch, save_pictures, take_batch
from .models.rnn import gaussian_kl
from .models.svg import CVAE
from .runtime import (SeedStream, autocast, choose_precision, derive_seed, grad_scaler, keep_freed_memory,
                      seed_everything)
from .schedules import kl_weight, learning_rate, teacher_forcing_ratio
from .tblog import TrainingLog

KEEP_PICTURES = 5


def resolve_data_root(cfg: TrainConfig) -> Path:
    """The data set to train on: ``data_root``, or the synthetic push world, generated and packed once into a cache
    (``CVAE_VIDEO_CACHE``, default ``~/.cache/cvae_video``)."""
    if cfg.data_root:
        root = Path(cfg.data_root)
        if not root.is_dir():
            raise DataError(f"--data_root {root}: folder not found")
        return root
    from .data import pack, synth
    cache = Path(os.environ.get("CVAE_VIDEO_CACHE", Path.home() / ".cache" / "cvae_video"))
    root = Path(synth.ensure_synth_dataset(cache, n_train=cfg.synth_n_train, seed=cfg.synth_seed))
    pack.pack(root)   # the memory-mapped cache (each split once; skipped when up to date): loading without PNG decoding
    return root


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, 0.999))
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, 0.999))
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.beta1)


class NonFiniteLoss(CvaeError):
    """A loss that is NaN or infinite, beyond what ``skip_nonfinite`` allows."""


def kl_term(out: dict, cfg: TrainConfig) -> torch.Tensor:
    """The KL part of the loss (before beta) from the model's outputs: sum over steps of KL_t, with free bits
    max(KL_t, free_bits). With ``kl_balance`` a in (0, 1) and a learned prior, the two halves are weighted apart
    (KL balancing, Hafner et al. 2021): a KL(sg(q) || p) trains the prior towards the posterior, and
    (1 - a) max(KL(q || sg(p)), free_bits) the posterior towards the prior, so the prior keeps learning while free
    bits leave the posterior alone. a = 0.5 without free bits has the plain KL's value and half its gradient on
    either side."""
    floor = cfg.free_bits
    if cfg.kl_balance and "p" in out:   # a learned prior: the model returns both sides' statistics
        (mu_q, logvar_q), (mu_p, logvar_p) = out["q"], out["p"]
        steps = out["kl_per_step"].shape[0]   # a latent per sequence has its KL shared out over the steps
        share = lambda kl: kl if kl.shape[0] == steps else (kl / steps).expand(steps)
        post = share(gaussian_kl(mu_q, logvar_q, mu_p.detach(), logvar_p.detach()).mean(0))
        post = post.clamp(min=floor) if floor > 0 else post
        prior = share(gaussian_kl(mu_q.detach(), logvar_q.detach(), mu_p, logvar_p).mean(0))
        a = cfg.kl_balance
        return a * prior.sum() + (1 - a) * post.sum()
    return out["kl_per_step"].clamp(min=floor).sum() if floor > 0 else out["kl"]


def train_step(model, optimizer, scaler, batch, cfg: TrainConfig, *, beta: float, tfr: float, device, amp,
               smoothness: float = 0.0, tf_generator: torch.Generator | None = None,
               world: distributed.World = distributed.World()) -> dict:
    """One optimisation step; returns the step's scalar logs (floats), averaged over the ranks of ``world``. The
    teacher-forcing decision comes from ``tf_generator``, or the global torch RNG if None. ``smoothness``: the
    weight of the found points' acceleration (with motion points; see :func:`point_smoothness_weight`).

    A non-finite loss never reaches the model: the step is not taken (the caller stops the run or counts the
    skip), and with ``cfg.skip_nonfinite`` the BatchNorm statistics that its forward pass moved are put back.
    """
    model.train()
    buffers = [b.detach().clone() for b in model.buffers()] if cfg.skip_nonfinite > 0 else None
    x = frames_to_float(batch["frames"].to(device, non_blocking=True))   # (B, T, C, H, W)
    cond = batch["cond"].to(device, non_blocking=True)                    # (B, T, cond_dim)
    if cfg.tf_per_sample:
        teacher_forcing = torch.rand(x.shape[0], generator=tf_generator) < tfr
    else:
        teacher_forcing = bool(torch.rand((), generator=tf_generator) < tfr)
    with amp:
        out = model(x, cond, cfg.n_past, teacher_forcing, point_spread=cfg.point_concentration > 0)
    # recon and kl: sums over steps (see CVAE.forward); free bits: a step's KL below the floor costs nothing
    kl = kl_term(out, cfg)
    loss = out["recon"] + beta * kl + out.get("points", 0.0)   # points: with motion_points, see CVAE.forward
    if smoothness > 0 and "point_accel" in out:
        loss = loss + smoothness * out["point_accel"]
    if "point_spread" in out:
        loss = loss + cfg.point_concentration * out["point_spread"]
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()   # before the check, so that under DDP every rank runs the same collectives
    n_steps = x.shape[1] - 1
    logs = {"loss": loss.item(), "mse": out["recon"].item() / n_steps, "kl": out["kl"].item() / n_steps}
    if "points" in out:   # the point loss and the found points' acceleration per step, with motion_points
        logs["points"] = out["points"].item() / n_steps
        logs["point_accel"] = out["point_accel"].item() / (n_steps - 1)
    if "point_spread" in out:   # per frame
        logs["point_spread"] = out["point_spread"].item() / x.shape[1]
    # the global batch's: a non-finite loss on any rank skips the step on all of them, whose gradients DDP shares
    logs = distributed.average_logs(logs, world)
    if not math.isfinite(logs["loss"]):
        optimizer.zero_grad(set_to_none=True)
        if buffers is not None:
            with torch.no_grad():
                for b, saved in zip(model.buffers(), buffers):
                    b.copy_(saved)
        return logs
    if cfg.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return logs


def collapse_warning(active_units: int | None, step: int, total_steps: int, cfg: TrainConfig) -> str | None:
    """The warning to print when no latent dimension is active on the validate split (active units 0: no posterior
    mean varies across the data, see ``metrics.active_units``), else None. Active units, not the KL, because under
    free bits the posterior's variance drifts from the prior's at no cost, which counts as KL without carrying
    information about the frames. Not during the first tenth of training, while the KL weight may still be rising
    from zero."""
    if active_units is None or active_units > 0 or step < 0.1 * total_steps:
        return None
    hint = ("--free_bits (e.g. 0.5) keeps the KL from being driven to zero" if cfg.free_bits <= 0
            else "a smaller --kl_weight_max may help")
    return (f"no latent dimension is active (active units 0 of {cfg.model.z_dim}): the latent carries nothing; "
            f"the samples of a prediction will barely differ; {hint}")


def _write_records(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _keep_epoch_seconds(records: list[dict], path: Path) -> None:
    """Fill the last checkpointed epoch's ``epoch_seconds`` (written after its checkpoint) from metrics.jsonl."""
    if not records or records[-1].get("epoch_seconds") is not None or not path.is_file():
        return
    for line in path.read_text().splitlines():
        try:
            old = json.loads(line)
        except json.JSONDecodeError:
            continue   # a line cut short by the death of the process that wrote it
        if isinstance(old, dict) and old.get("epoch") == records[-1]["epoch"]:
            records[-1]["epoch_seconds"] = old.get("epoch_seconds")


RUN_FILES = ("config.toml", "metrics.jsonl", "last.pt", "best.pt", "training_curves.png", "data_report.json")


def _prepare_log_dir(cfg: TrainConfig, resume: bool, overwrite: bool) -> Path:
    """The run folder, refused if it holds another run (unless resuming or overwriting), without stale temp files."""
    log_dir = Path(cfg.log_dir)
    if resume and overwrite:
        raise ConfigError("continuing a checkpoint and overwriting its run folder contradict each other")
    present = [name for name in RUN_FILES if (log_dir / name).is_file()]
    if present and not (resume or overwrite):
        try:
            old = config_mod.load_toml(log_dir / "config.toml")
            differs = [k for k, v in cfg.flat().items() if old.get(k) != v]
            what = (f"a run with a different config (differs in: {', '.join(differs)})" if differs
                    else "a run with this config")
        except ConfigError:
            what = f"a run ({', '.join(present)})"
        raise ConfigError(f"--log_dir {log_dir} already holds {what}; pass --resume to continue it or "
                          f"--overwrite to start over")
    if overwrite and log_dir.is_dir():
        for name in RUN_FILES:
            (log_dir / name).unlink(missing_ok=True)
        for p in (log_dir / "pictures").glob("epoch*_seq*.png"):
            p.unlink()
    (log_dir / "pictures").mkdir(parents=True, exist_ok=True)
    for folder in (log_dir, log_dir / "pictures"):   # left by a process killed while writing
        remove_stale_temp_files(folder)
    return log_dir


class Saved(NamedTuple):
    """A checkpoint of the run: its file, the epoch it ends (zero-based) and the step it ends at."""
    path: Path
    epoch: int
    step: int


def _last_good_text(last_good: Saved | None, step: int) -> str:
    if last_good is None:
        return f"and no checkpoint was written before step {step} (the first epoch had not finished)"
    path, epoch, at = last_good
    return (f"the last good checkpoint is {path} (end of epoch {epoch + 1}, step {at}); "
            f"`cvae-train --resume {path}` continues from it")


def _stop_on_bad_frame(batches, last_good):
    """The batches of ``batches``; a frame found broken only when read stops the run with a message naming the
    file and ``last_good()`` (under DataLoader workers the error arrives wrapped, with its traceback as text)."""
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except DataError as e:
            lines = [line for line in str(e).splitlines() if line.strip()]
            text = re.sub(r"^[\w.]*DataError: ", "", lines[-1]) if lines else repr(e)
            raise DataError(f"{text}; training stopped, {last_good()}") from None
        yield batch


def _keep_rng(device: torch.device):
    """A block that leaves the global RNG where it was: validation and pictures draw random numbers (DataLoader
    seeds), which must not shift the training's stream, or a resumed run would not repeat an uninterrupted one."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


def _open_data(root: Path, cfg: TrainConfig, stats: ConditionStats | None) -> tuple[Dataset, Dataset, dict]:
    """The training and validation sets, every frame checked at start-up, and the report of what was left out:
    bad trajectories stop the run (naming the first bad file) or, with ``on_bad_sample = "skip"``, are left out
    and counted in the report (see :func:`_write_data_report`)."""
    splits = {}
    conditions = cfg.model.condition != "none"   # a model without conditions reads the frames alone
    for split, seq_len in (("train", cfg.n_past + cfg.n_future), ("validate", cfg.n_past + cfg.n_eval)):
        try:
            splits[split] = VideoDataset(root, split, seq_len, stats=stats, check_frames=True,
                                         on_bad_sample=cfg.on_bad_sample, with_conditions=conditions)
        except BadTrajectory as e:
            check = f"cvae-data check --data_root {root}" + ("" if conditions else " --condition none")
            raise BadTrajectory(f"{e} (`{check}` lists every problem; "
                                f"--on_bad_sample skip trains without the bad trajectories)") from None
        if stats is None:
            stats = splits[split].stats
    report = {"on_bad_sample": cfg.on_bad_sample, "data_root": str(root),
              "splits": {split: {"trajectories": len(ds), "skipped": len(ds.skipped),
                                 "problems": {str(t): why for t, why in ds.skipped.items()}}
                         for split, ds in splits.items()}}
    val_ds = splits["validate"]
    if cfg.val_sequences:
        val_ds = Subset(val_ds, range(min(cfg.val_sequences, len(val_ds))))
    return splits["train"], val_ds, report


def _write_data_report(log_dir: Path, report: dict) -> None:
    """data_report.json (the trajectories left out, per split, and why), said on stderr where any were."""
    path = log_dir / "data_report.json"
    atomic_write_json(path, report, indent=1)
    for split, r in report["splits"].items():
        if r["skipped"]:
            first = next(iter(r["problems"].values()))
            print(f"cvae-train: skipped {r['skipped']} of {r['trajectories'] + r['skipped']} {split} trajectories "
                  f"as bad (first: {first}); the list is in {path}", file=sys.stderr)


def _grid_path(log_dir: Path, epoch: int, i: int) -> Path:
    """The prediction grid of validation sequence ``i`` after ``epoch``."""
    return log_dir / "pictures" / f"epoch{epoch:04d}_seq{i}.png"


def _save_pictures(model, val_ds, cfg: TrainConfig, amp, epoch: int, log_dir: Path):
    """The grids of the first ``n_pictures`` validation sequences (``picture_samples`` futures each, the best by
    SSIM first), as ``cvae-make-gif`` draws them; the last ``KEEP_PICTURES`` epochs' grids are kept."""
    n = min(cfg.n_pictures, len(val_ds))
    if n == 0:
        return None
    pred = predict_batch(model, take_batch(val_ds, list(range(n))), n_past=cfg.n_past, n_future=cfg.n_eval,
                         n_samples=cfg.picture_samples, seed=cfg.seed, amp=amp).cpu()
    pictures = log_dir / "pictures"
    for i in range(n):
        save_pictures(pred, i, grid=_grid_path(log_dir, epoch, i), n_show=cfg.picture_samples)
    epochs = sorted({p.name.split("_")[0] for p in pictures.glob("epoch*_seq*.png")})
    for old in epochs[:-KEEP_PICTURES]:
        for p in pictures.glob(f"{old}_seq*.png"):
            p.unlink()
    return pred


@dataclass(kw_only=True)
class RunData:
    """What a run's epochs read: ``train``, this rank's batches of training windows (its sampler a
    :class:`WindowSampler`), and ``val``, this rank's share of the validate split's batches."""
    train: DataLoader
    val: DataLoader

    @property
    def cond_stats(self) -> ConditionStats:
        """The normalisation of the conditions: the training split's, or the continued checkpoint's."""
        return self.train.dataset.stats


@dataclass(kw_only=True)
class Run:
    """The parts of one training run that its epochs share, put together by :func:`start_run`; the properties
    derive the rest from them."""
    cfg: TrainConfig
    world: distributed.World         # this process's rank and device
    resolved: Resolved               # what the run decided at start-up, stored in every checkpoint
    step_model: torch.nn.Module      # what trains: the model under the DDP / torch.compile wrappers, if any
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    data: RunData
    state: RunState                  # what the run has done: what a checkpoint saves and a resume continues
    tb: TrainingLog
    resumed_from: Saved | None = None   # the checkpoint the run continues

    @property
    def device(self) -> torch.device:
        return self.world.device

    @property
    def log_dir(self) -> Path:
        return Path(self.cfg.log_dir)

    @property
    def model(self) -> CVAE:
        """The plain model: what is validated, drawn and saved."""
        return unwrap(self.step_model)

    @property
    def amp(self):
        """The autocast context of every forward pass."""
        return autocast(self.device, self.resolved.precision)

    @property
    def last_good(self) -> Saved | None:
        """The checkpoint a failure can point to: last.pt of the last finished epoch (rank 0 wrote it), or, until
        this process finishes an epoch, the checkpoint the run continues; None before either."""
        state, resumed = self.state, self.resumed_from
        if resumed is not None and state.epoch == resumed.epoch:
            return resumed
        if state.epoch < 0:
            return None
        return Saved(self.log_dir / "last.pt", state.epoch, state.records[-1]["step"])


def run_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The checkpoint at ``path``, if it holds a run to continue; CheckpointError if not."""
    ckpt = load_checkpoint(path)
    if ckpt.state is None:
        raise CheckpointError(f"{path}: cannot resume from it: it holds no run state (only last.pt and best.pt of "
                              f"cvae-train hold a run's full state)")
    return ckpt


def start_run(cfg: TrainConfig, checkpoint: Path | None, overwrite: bool) -> Run:
    """Everything a run needs before its first epoch: the process group, the run folder, the data, the model, its
    precision, then the run's config.toml (with what was decided), the optimizer and the loaders, and, from
    ``checkpoint``, the state to continue."""
    world = distributed.setup(cfg)   # under torchrun: this process's rank and device; else rank 0 of 1
    with distributed.main_first(world):
        log_dir = _prepare_log_dir(cfg, checkpoint is not None, overwrite) if world.is_main else Path(cfg.log_dir)
    ckpt = run_checkpoint(checkpoint) if checkpoint else None
    if ckpt is not None:
        config_mod.check_resume_changes(ckpt.training, cfg, str(checkpoint))
    state = ckpt.state if ckpt is not None else RunState(kl_total_steps=cfg.niter * cfg.epoch_size)
    seed_everything(cfg.seed)
    with distributed.main_first(world, per_machine=True):   # one process per machine makes the synthetic data
        root = resolve_data_root(cfg)
    # the model's input normalisation: a resumed run keeps its own
    train_ds, val_ds, report = _open_data(root, cfg, ckpt.cond_stats if ckpt is not None else None)

    model = CVAE(cfg.model_config(cond_dim=train_ds.conditions[0].shape[1])).to(world.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    resolved = Resolved(str(root), _run_precision(cfg, model, world, ckpt), world.device.type)
    if world.is_main:   # the config once its choices are made, before the run's other files
        atomic_write_text(log_dir / "config.toml", config_mod.to_toml(cfg, asdict(resolved)))
        _write_data_report(log_dir, report)
    optimizer = build_optimizer(cfg, model.parameters())
    scaler = grad_scaler(world.device, resolved.precision)
    step_model = distributed.wrap_model(model, cfg, world)   # sync_bn, DDP (several processes), torch.compile
    if ckpt is not None:
        load_model_state(model, ckpt.weights, str(checkpoint))
        state.restore(optimizer, scaler)
        if world.is_main:   # metrics.jsonl may hold an epoch past last.pt if the process died between the writes
            _keep_epoch_seconds(state.records, log_dir / "metrics.jsonl")
            _write_records(log_dir / "metrics.jsonl", state.records)
        if state.epoch + 1 >= cfg.niter:
            print(f"cvae-train: {checkpoint} already finished epoch {state.epoch + 1} of {cfg.niter}; pass a larger "
                  f"--niter to extend the run", file=sys.stderr)

    return Run(cfg=cfg, world=world, resolved=resolved, step_model=step_model, optimizer=optimizer, scaler=scaler,
               data=_run_data(train_ds, val_ds, cfg, world), state=state,
               tb=TrainingLog(log_dir, cfg.tensorboard, state.step, enabled=world.is_main),
               resumed_from=Saved(checkpoint, state.epoch, state.step) if ckpt is not None else None)


def _run_data(train_ds: VideoDataset, val_ds: Dataset, cfg: TrainConfig, world: distributed.World) -> RunData:
    """This rank's loaders: ``epoch_size`` batches of training windows per epoch, drawn by a :class:`WindowSampler`
    (the ranks take turns in one stream), and its share of the validation set's consecutive batches."""
    sampler = WindowSampler(train_ds.lengths, cfg.n_past + cfg.n_future, cfg.epoch_size * cfg.batch_size, cfg.seed,
                            random_window=cfg.train_window == "random", rank=world.rank, world_size=world.world_size)
    train = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                       num_workers=cfg.num_workers, pin_memory=world.device.type == "cuda",
                       persistent_workers=cfg.num_workers > 0, generator=torch.Generator())
    return RunData(train=train, val=distributed.shard_loader(val_ds, cfg.val_batch_size, world))


def training_probe(model: CVAE, cfg: TrainConfig) -> Callable[[str], object]:
    """One forward and backward pass of a copy of ``model`` on a batch like the run's (``batch_size`` random
    sequences of ``n_past + n_future`` frames, teacher-forced as the run's first step would be), at a given
    precision: what ``choose_precision`` times to decide ``auto`` on the CPU. The copy is made on first use."""
    copy_of: list[CVAE] = []
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    T = cfg.n_past + cfg.n_future
    x = torch.rand(cfg.batch_size, T, model.cfg.channels, 64, 64, generator=g).to(device)
    cond = torch.randn(cfg.batch_size, T, model.cfg.cond_dim, generator=g).to(device)
    teacher_forcing = cfg.tfr >= 1.0

    def run(precision: str):
        if not copy_of:
            copy_of.append(copy.deepcopy(model).train())
        probe = copy_of[0]
        with autocast(device, precision):
            out = probe(x, cond, cfg.n_past, teacher_forcing)
        (out["recon"] + out["kl"]).backward()
        probe.zero_grad(set_to_none=True)
    return run


def _run_precision(cfg: TrainConfig, model: CVAE, world: distributed.World, ckpt: Checkpoint | None) -> str:
    """The precision the run trains in: ``cfg.precision``, with ``auto`` decided once for this model and device
    (the same on every rank) and said on stderr. A resumed ``auto`` run keeps the precision it started with,
    unless it continues on another kind of device."""
    saved = ckpt.resolved if ckpt is not None else None
    note = ""
    if cfg.precision == "auto" and saved is not None:
        if saved.device == world.device.type:
            return saved.precision
        note = f"the run trained in {saved.precision} on {saved.device} and now continues on {world.device.type}; "
    steps = cfg.niter * cfg.epoch_size - (ckpt.state.step if ckpt is not None else 0)   # what is left of the run
    choice = choose_precision(cfg.precision, world.device, training_probe(model, cfg), steps=steps)
    choice = distributed.broadcast_object(choice, world)
    if cfg.precision == "auto" and world.is_main:
        print(f"cvae-train: {note}{choice.describe()}", file=sys.stderr)
    return choice.precision


def point_smoothness_weight(cfg: TrainConfig, state: RunState) -> float:
    """The weight of the found points' acceleration at this step: ``point_smoothness``, reached over the first
    ``kl_anneal_ratio`` of training as the KL weight's monotonic schedule is. At full weight from the first step it
    holds points still before they have found anything to follow."""
    if cfg.point_smoothness <= 0:
        return 0.0
    return cfg.point_smoothness * kl_weight(state.step, total_steps=state.kl_total_steps, cyclical=False,
                                            ratio=cfg.kl_anneal_ratio, n_cycles=1)


def train_one_epoch(run: Run, epoch: int, progress: bool) -> dict:
    """The ``epoch_size`` optimizer steps of ``epoch``; returns the epoch's training numbers: mean loss, mse and
    kl (and with ``motion_points`` the point loss and the found points' acceleration per step, ``points`` and
    ``point_accel``) over the batches that counted, the last step's beta, the epoch's tfr, and the batches skipped."""
    cfg, state = run.cfg, run.state
    run.data.train.sampler.set_epoch(epoch)
    # the loader draws its workers' seeds from its generator: a function of (seed, epoch), as resume needs
    run.data.train.generator.manual_seed(derive_seed(cfg.seed, SeedStream.LOADER, epoch, run.world.rank))
    distributed.seed_epoch(cfg.seed, epoch, run.world)
    tf_generator = distributed.teacher_forcing_generator(cfg, epoch, run.world)
    tfr = teacher_forcing_ratio(epoch, tfr=cfg.tfr, start_decay_epoch=cfg.tfr_start_decay_epoch,
                                decay_step=cfg.tfr_decay_step, lower_bound=cfg.tfr_lower_bound)
    points = ("points", "point_accel") if run.model.motion_points is not None else ()
    points += ("point_spread",) if points and cfg.point_concentration > 0 else ()
    sums = {"loss": 0.0, "mse": 0.0, "kl": 0.0, **dict.fromkeys(points, 0.0)}
    n_good = skipped = 0
    beta = None   # the last step's; an epoch always has epoch_size >= 1 steps
    bar = tqdm(run.data.train, total=cfg.epoch_size, desc=f"epoch {epoch + 1}/{cfg.niter}", leave=False,
               disable=not progress, dynamic_ncols=True)
    for batch in _stop_on_bad_frame(bar, lambda: _last_good_text(run.last_good, state.step)):
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(state.step, total_steps=state.kl_total_steps, base_lr=cfg.lr,
                                        schedule=cfg.lr_schedule)
        beta = kl_weight(state.step, total_steps=state.kl_total_steps, cyclical=cfg.kl_anneal_cyclical,
                         ratio=cfg.kl_anneal_ratio, n_cycles=cfg.kl_anneal_cycle, max_weight=cfg.kl_weight_max)
        logs = train_step(run.step_model, run.optimizer, run.scaler, batch, cfg, beta=beta, tfr=tfr,
                          device=run.device, amp=run.amp, smoothness=point_smoothness_weight(cfg, state),
                          tf_generator=tf_generator, world=run.world)
        state.step += 1
        if not math.isfinite(logs["loss"]):
            _count_nonfinite(run, logs["loss"], epoch)
            skipped += 1
            continue
        run.tb.step(state.step, logs, beta, tfr, run.optimizer.param_groups[0]["lr"])
        n_good += 1
        for k in sums:
            sums[k] += logs[k]
        bar.set_postfix(loss=f"{logs['loss']:.4f}", mse=f"{logs['mse']:.5f}", kl=f"{logs['kl']:.3f}",
                        beta=f"{beta:.3g}")
    bar.close()
    return {**{k: v / n_good if n_good else None for k, v in sums.items()}, "beta": beta, "tfr": tfr,
            "lr": run.optimizer.param_groups[0]["lr"], "skipped_nonfinite": skipped}


def _count_nonfinite(run: Run, loss: float, epoch: int) -> None:
    """Count a batch whose loss was not finite (its step was not taken); stop the run past ``skip_nonfinite``."""
    cfg, state = run.cfg, run.state
    state.skipped_nonfinite_total += 1
    where = f"step {state.step - 1} (epoch {epoch + 1}/{cfg.niter})"
    if state.skipped_nonfinite_total > cfg.skip_nonfinite:
        limit = (f"; more than --skip_nonfinite {cfg.skip_nonfinite} such batches in this run" if cfg.skip_nonfinite
                 else " (--skip_nonfinite N skips up to N such batches)")
        raise NonFiniteLoss(f"non-finite loss ({loss}) at {where}{limit}; training stopped, "
                            f"{_last_good_text(run.last_good, state.step - 1)}")
    print(f"cvae-train: non-finite loss ({loss}) at {where}: batch skipped "
          f"({state.skipped_nonfinite_total} of --skip_nonfinite {cfg.skip_nonfinite})", file=sys.stderr)


def validate(run: Run) -> dict:
    """``val_psnr``, ``val_ssim``, ``val_kl`` (KL per step) and ``active_units`` of the model on the validate
    split, over every process's share of it."""
    cfg = run.cfg
    distributed.broadcast_buffers(run.model, run.world)   # every rank scores the model that rank 0 saves
    with _keep_rng(run.device):
        scores = score_split(run.model, run.data.val, n_past=cfg.n_past, n_future=cfg.n_eval, n_samples=1,
                             seed=cfg.seed, amp=run.amp)
    world = run.world
    out = {f"val_{k}": distributed.global_mean(scores[k], world) for k in ("psnr", "ssim", "kl")}
    sums = {k: distributed.global_sum(scores[k], world) for k in ("latent_sum", "latent_sumsq", "latent_steps")}
    variance = metrics.latent_variance(sums["latent_sum"], sums["latent_sumsq"], float(sums["latent_steps"]))
    return out | {"active_units": metrics.active_units(variance)}


VAL_KEYS = ("val_psnr", "val_ssim", "val_kl", "active_units")


def end_epoch(run: Run, epoch: int, stats: dict, seconds: float, progress: bool, started: float | None = None
              ) -> dict:
    """Close an epoch: validate (every ``val_every`` epochs and at the end), record the epoch and the best
    validation PSNR so far, and on rank 0 save the checkpoints, draw, write TensorBoard, warn if the latent has
    collapsed and print the epoch's line. Returns the record.

    ``seconds`` are the epoch's training steps; the record's ``epoch_seconds`` is its whole wall time from
    ``started`` (a ``time.time()``), validation and everything written included. It is known only once the
    checkpoints are written, so metrics.jsonl is written again with it, and the next checkpoint carries it."""
    due = (epoch + 1) % run.cfg.val_every == 0 or epoch + 1 == run.cfg.niter
    val = validate(run) if due else dict.fromkeys(VAL_KEYS)
    record = _record_epoch(run.state, epoch, stats, val, seconds)
    is_best = _track_best(run.state, val["val_psnr"])
    if run.world.is_main:   # only rank 0 writes checkpoints, logs and pictures, and prints
        _save_epoch(run, is_best)
        pred = _draw_epoch(run, epoch)
        run.tb.epoch(run.state.step, record, _grid_path(run.log_dir, epoch, 0), pred)
        _warn_if_collapsed(run, val["active_units"])
        if started is not None:
            _write_epoch_seconds(run, record, time.time() - started)
        if progress:
            tqdm.write(_epoch_line(record, run.cfg.niter))
    return record


def _record_epoch(state: RunState, epoch: int, stats: dict, val: dict, seconds: float) -> dict:
    """The epoch's metrics line, added to the state's records with the epoch and its validation PSNR."""
    record = {"epoch": epoch, "step": state.step, **{k: stats[k] for k in ("loss", "mse", "kl", "beta", "tfr", "lr")},
              **{k: stats[k] for k in ("points", "point_accel", "point_spread") if k in stats},
              **val, "skipped_nonfinite": stats["skipped_nonfinite"],
              "seconds": seconds, "epoch_seconds": None}
    state.records.append(record)   # plain numbers only: nothing grows with the run but this list of floats
    state.epoch, state.val_psnr = epoch, val["val_psnr"]
    return record


def _track_best(state: RunState, val_psnr: float | None) -> bool:
    """Whether ``val_psnr`` beats the state's best so far, which it then becomes."""
    is_best = val_psnr is not None and val_psnr > state.best_val_psnr
    if is_best:
        state.best_val_psnr = val_psnr
    return is_best


def _save_epoch(run: Run, is_best: bool) -> None:
    """metrics.jsonl, best.pt (when ``is_best``) and last.pt, in that order."""
    state = run.state
    state.capture(run.optimizer, run.scaler)
    saved = Checkpoint.of(run.model, cond_stats=run.data.cond_stats, training=run.cfg, resolved=run.resolved,
                          state=state)
    # last.pt last: it is what a resume starts from, and a resumed epoch rewrites the other two identically
    _write_records(run.log_dir / "metrics.jsonl", state.records)
    if is_best:
        saved.save(run.log_dir / "best.pt")
    saved.save(run.log_dir / "last.pt")


def _draw_epoch(run: Run, epoch: int):
    """The training curves and the epoch's prediction grids; returns the predictions drawn (None without any)."""
    from .viz import plot_training_curves
    plot_training_curves(run.state.records, run.log_dir / "training_curves.png")
    with _keep_rng(run.device):
        return _save_pictures(run.model, run.data.val.dataset, run.cfg, run.amp, epoch, run.log_dir)


def _warn_if_collapsed(run: Run, active_units: int | None) -> None:
    """Say on stderr when no latent dimension is active (see :func:`collapse_warning`)."""
    warning = collapse_warning(active_units, run.state.step, run.state.kl_total_steps, run.cfg)
    if warning:
        tqdm.write(f"cvae-train: warning: {warning}", file=sys.stderr)


def _write_epoch_seconds(run: Run, record: dict, seconds: float) -> None:
    """The epoch's whole wall time into its record, and metrics.jsonl written again with it."""
    record["epoch_seconds"] = seconds
    _write_records(run.log_dir / "metrics.jsonl", run.state.records)


def _epoch_line(record: dict, niter: int) -> str:
    vp = f"{record['val_psnr']:6.2f}" if record["val_psnr"] is not None else "   -  "
    loss = (f"loss {record['loss']:.4f}  mse {record['mse']:.5f}  kl {record['kl']:.4f}"
            if record["loss"] is not None else "loss    -  ")
    skipped = f"skipped {record['skipped_nonfinite']}  " if record["skipped_nonfinite"] else ""
    return (f"epoch {record['epoch'] + 1:4d}/{niter}  {loss}  beta {record['beta']:.3g}  tfr {record['tfr']:.2f}  "
            f"val_psnr {vp}  {skipped}{record['seconds']:.0f}s" +
            (f" (epoch {record['epoch_seconds']:.0f}s)" if record.get("epoch_seconds") is not None else ""))


def train(cfg: TrainConfig, checkpoint: str | os.PathLike | None = None, overwrite: bool = False,
          progress: bool = True, stop_after_epoch: int | None = None) -> dict:
    """Train a model; returns the last metrics record.

    ``checkpoint``: continue that checkpoint's run (model, optimizer, epoch, step, schedules, RNG states and best
    PSNR), so that on the CPU the run repeats an uninterrupted one bit for bit; the run folder is ``cfg.log_dir``.
    A larger ``cfg.niter`` extends the run; the KL schedule keeps the length of the run as first started.
    ``overwrite``: start over in a ``log_dir`` that holds another run. ``stop_after_epoch``: return after that
    (zero-based) epoch as if the process had been stopped there; tests use it to compare an interrupted and resumed
    run with a straight one under the same config.
    """
    run = start_run(cfg, Path(checkpoint) if checkpoint is not None else None, overwrite)
    progress = progress and run.world.is_main
    record = run.state.records[-1] if run.state.records else {}
    last = cfg.niter if stop_after_epoch is None else min(cfg.niter, stop_after_epoch + 1)
    for epoch in range(run.state.epoch + 1, last):
        t0 = time.time()
        stats = train_one_epoch(run, epoch, progress)
        record = end_epoch(run, epoch, stats, time.time() - t0, progress, started=t0)
    run.tb.close()
    distributed.barrier(run.world)   # no rank returns before rank 0's files are written
    return record


def build_parser() -> argparse.ArgumentParser:
    # no ArgumentDefaultsHelpFormatter: config flags default to None (= not given) and name their real default
    p = config_mod.ArgumentParser(prog="cvae-train", description="Train the action-conditioned SVG video predictor.")
    config_mod.add_arguments(p)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="LOG_DIR|CKPT",
                   help="continue a run from its last.pt: the run in --log_dir, the run folder LOG_DIR, or the "
                        "checkpoint CKPT. The run's saved config.toml is the base that --config and flags "
                        f"override; only {', '.join(config_mod.RESUME_MAY_CHANGE)} may change")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing --log_dir")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def resume_config(args: argparse.Namespace) -> tuple[TrainConfig, Path | None]:
    """The config and checkpoint of ``--resume [LOG_DIR | CKPT]``: defaults < the run's saved config (its
    config.toml, else the checkpoint's) < --config file < flags given. The run stays in its folder. The checkpoint
    is None for a run that stopped in its first epoch (a config.toml but no last.pt yet): it starts over there."""
    if args.resume is True:
        from_file = config_mod.load_toml(args.config).get("log_dir") if args.config else None
        log_dir = Path(args.log_dir or from_file or TrainConfig.log_dir)
        ckpt = log_dir / "last.pt"
    else:
        target = Path(args.resume)
        if not target.exists():
            raise ConfigError(f"--resume {target}: no such run folder or checkpoint")
        log_dir, ckpt = (target, target / "last.pt") if target.is_dir() else (target.parent, target)
        if args.log_dir and Path(args.log_dir).resolve() != log_dir.resolve():
            raise ConfigError(f"--resume {target} continues the run in {log_dir}, but --log_dir names "
                              f"{args.log_dir}; give only one of them")
    if (log_dir / "config.toml").is_file():
        base = config_mod.load_toml(log_dir / "config.toml")
    elif ckpt.is_file():
        base = run_checkpoint(ckpt).training.to_dict()
    else:
        raise ConfigError(f"--resume: nothing to resume in {log_dir} (neither config.toml nor last.pt)")
    cfg = config_mod.resolve(args, base)
    cfg.log_dir = str(log_dir)
    if ckpt.is_file():
        return cfg, ckpt
    if ckpt.name == "last.pt":
        print(f"cvae-train: {log_dir} has no last.pt yet (it stopped in its first epoch); starting from epoch 1",
              file=sys.stderr)
        return cfg, None
    raise ConfigError(f"--resume: {ckpt} not found; nothing to resume")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()   # process-wide (glibc malloc): the console script's decision, not the library's
    cfg = None
    try:
        if args.resume is not False and args.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pass one of them")
        if args.resume is False:
            cfg, checkpoint, overwrite = config_mod.resolve(args), None, args.overwrite
        else:   # a run without a last.pt yet starts over in its own folder
            cfg, checkpoint = resume_config(args)
            overwrite = checkpoint is None
        train(cfg, checkpoint, overwrite=overwrite, progress=not args.no_progress)
    except CvaeError as e:
        print(f"cvae-train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        where = f" {cfg.log_dir}" if cfg else ""
        print(f"cvae-train: interrupted; last.pt holds the last finished epoch (`cvae-train --resume{where}` "
              f"continues)", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
