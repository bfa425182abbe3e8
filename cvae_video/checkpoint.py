"""Checkpoints: plain dicts of state_dicts, config and counters, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds each fact once, in four parts::

    {"format": "cvae_video.checkpoint/2",
     "model": {"config": ModelConfig, "weights": state_dict, "cond_stats": {"mean", "std"}},
     "training": the TrainConfig less its model (the config as given),
     "resolved": {"data_root", "precision", "device"} (what the run decided at start-up),
     "state": RunState (epoch, step, records, optimizer, scaler, RNG states, ...)}

:func:`load_checkpoint` is the one function that opens a file: it reads it safely, rewrites an older format with
:func:`migrate`, and returns a :class:`Checkpoint` of typed parts. Written with
:func:`cvae_video.fileio.atomic_write`, so a crash never leaves half a file. Wrapper prefixes of
DistributedDataParallel (``module.``) and torch.compile (``_orig_mod.``) never reach the file.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import config as config_mod
from .config import TrainConfig
from .data.dataset import ConditionStats
from .errors import CheckpointError, ConfigError
from .fileio import atomic_write, read_json_lines
from .models.svg import CVAE, ModelConfig

FORMAT = "cvae_video.checkpoint/2"
FORMAT_1 = "cvae_video.checkpoint/1"   # read through migrate()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict:
    """torch, numpy and python RNG states as tensors and plain lists (weights_only-safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
             "python": {"version": py_state[0], "state": list(py_state[1]), "gauss_next": py_state[2]}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Resolved:
    """What a run decided at start-up from its config and its machine: the data set it trained on (``data_root``,
    or the built-in one's cache folder), the precision it trained in (``auto`` decided) and the kind of device
    (``cpu`` or ``cuda``)."""
    data_root: str
    precision: str
    device: str


@dataclass
class RunState:
    """What a checkpoint holds of a run beyond its model, config and decisions: what a resumed run continues.

    ``epoch`` is the last finished epoch (zero-based, -1 before the first), ``step`` the optimizer steps so far,
    ``best_val_psnr`` / ``val_psnr`` the best and the last validation PSNR, ``records`` the metrics line of every
    epoch so far (plain numbers), ``kl_total_steps`` the KL schedule's horizon (the length of the run as first
    started: a resumed run with a larger ``niter`` keeps its schedule), ``skipped_nonfinite_total`` the batches
    skipped for a non-finite loss; ``optimizer``, ``scaler`` and ``rng`` the optimizer's, gradient scaler's and
    random generators' states at the end of ``epoch`` (:meth:`capture`, :meth:`restore`).
    """
    kl_total_steps: int
    epoch: int = -1
    step: int = 0
    best_val_psnr: float = -math.inf
    val_psnr: float | None = None
    skipped_nonfinite_total: int = 0
    records: list[dict] = field(default_factory=list)
    optimizer: dict | None = None
    scaler: dict | None = None
    rng: dict | None = None

    def capture(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        self.optimizer, self.scaler, self.rng = optimizer.state_dict(), scaler.state_dict(), rng_state()

    def restore(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        optimizer.load_state_dict(self.optimizer)
        if self.scaler:   # empty when saved by a disabled scaler (not fp16), which an fp16 run's cannot load
            scaler.load_state_dict(self.scaler)
        set_rng_state(self.rng)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Checkpoint:
    """A checkpoint as typed parts. ``cond_stats``: the normalisation of the conditions the model was trained
    with. ``training``, ``resolved`` and ``state`` are None in a checkpoint of a model alone; those of cvae-train
    hold all three. ``source`` names the file in error messages."""
    model_config: ModelConfig
    weights: dict
    cond_stats: ConditionStats | None = None
    training: TrainConfig | None = None
    resolved: Resolved | None = None
    state: RunState | None = None
    source: str = "checkpoint"

    @classmethod
    def of(cls, model: nn.Module, **parts) -> "Checkpoint":
        """The checkpoint of ``model`` (unwrapped) with ``parts`` (the other fields)."""
        model = unwrap(model)
        return cls(model.cfg, model.state_dict(), **parts)

    def to_dict(self) -> dict:
        """The plain dict that is saved: see the module's docstring."""
        training = None
        if self.training is not None:
            training = self.training.to_dict()
            del training["model"]   # the model's config is in "model"
        return {"format": FORMAT,
                "model": {"config": self.model_config.to_dict(), "weights": self.weights,
                          "cond_stats": self.cond_stats.to_dict() if self.cond_stats is not None else None},
                "training": training,
                "resolved": asdict(self.resolved) if self.resolved is not None else None,
                "state": self.state.to_dict() if self.state is not None else None}

    @classmethod
    def from_dict(cls, d: dict, source: str = "checkpoint") -> "Checkpoint":
        """The checkpoint of a dict of the current format (see :func:`migrate` for older ones); CheckpointError
        naming what is not understood."""
        model = d.get("model")
        if not isinstance(model, dict) or not {"config", "weights"} <= set(model):
            raise CheckpointError(f"{source}: holds no model (its config and weights)")
        try:
            model_config = ModelConfig(**model["config"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: model config not understood ({e})") from None
        stats = model.get("cond_stats")
        ckpt = cls(model_config, model["weights"], ConditionStats.from_dict(stats) if stats is not None else None,
                   source=source)
        if d.get("training") is not None:
            given = {k: getattr(model_config, k) for k in config_mod.MODEL_KEYS}
            try:
                ckpt.training = config_mod.from_dict(d["training"] | {"model": given}, f"{source}: training")
            except ConfigError as e:
                raise CheckpointError(str(e)) from None
        try:
            ckpt.resolved = Resolved(**d["resolved"]) if d.get("resolved") is not None else None
            ckpt.state = RunState(**d["state"]) if d.get("state") is not None else None
        except TypeError as e:
            raise CheckpointError(f"{source}: run state not understood ({e})") from None
        if ckpt.state is not None and any(p is None for p in (ckpt.training, ckpt.resolved, ckpt.cond_stats)):
            raise CheckpointError(f"{source}: holds a run state without the run's config, decisions and statistics")
        return ckpt

    def build_model(self) -> CVAE:
        """The model of ``model_config`` with the checkpoint's weights (on the CPU, in training mode)."""
        model = CVAE(self.model_config)
        load_model_state(model, self.weights, self.source)
        return model

    def save(self, path: str | os.PathLike) -> None:
        atomic_write(path, lambda f: torch.save(self.to_dict(), f))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> Checkpoint:
    """Open a checkpoint: read it safely (tensors and plain containers only, never arbitrary pickled objects),
    bring an older format to the current one (:func:`migrate`) and parse it into a :class:`Checkpoint`."""
    path = Path(path)
    return Checkpoint.from_dict(migrate(_read(path, map_location), path), str(path))


def _read(path: Path, map_location) -> dict:
    """The dict saved in ``path``; CheckpointError if it is missing, refused or not a cvae_video checkpoint."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # "pickle protocol N" notes from the safe unpickler
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load: the file holds pickled objects other than tensors and "
                              f"plain values ({_refusal_detail(e)}); unpickling them could run arbitrary code, "
                              f"and a cvae_video checkpoint never holds any. Do not load this file unless you "
                              f"trust where it came from") from None
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e.__class__.__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    found = ckpt.get("format") if isinstance(ckpt, dict) else None
    if not (isinstance(found, str) and found.startswith(FORMAT.split("/")[0] + "/")):
        raise CheckpointError(f"{path}: not a cvae_video checkpoint (format "
                              f"{found if isinstance(ckpt, dict) else type(ckpt).__name__!r}, expected {FORMAT!r})")
    return ckpt


def migrate(ckpt: dict, path: str | os.PathLike | None = None) -> dict:
    """``ckpt``, a checkpoint's dict of any format this version reads, in the current format (one of the current
    format as it is). ``path``: the file it came from (see :func:`_from_format_1`). CheckpointError for another
    version's format."""
    found = ckpt.get("format")
    if found == FORMAT:
        return ckpt
    if found == FORMAT_1:
        return _from_format_1(ckpt, Path(path) if path is not None else None)
    raise CheckpointError(f"{path or 'checkpoint'}: written by another version of cvae_video (format {found!r}; "
                          f"this version reads {FORMAT!r} and {FORMAT_1!r})")


_RUN_STATE_1 = ("epoch", "step", "best_val_psnr", "optimizer", "scaler", "rng")   # what format 1 resumed from


def _from_format_1(old: dict, path: Path | None) -> dict:
    """Format 1: ``model_config`` and ``model`` (the weights), ``cond_stats``, the run state at the top level, and
    ``train_config``: the config with the model's keys again (under ``"model"``, or in the earliest versions at the
    top level, with ``cuda`` beside ``device``) and the run's decisions (``resolved_data_root``; from the version
    that added ``precision = "auto"`` on, ``resolved_precision`` and ``resolved_device``: before it, the precision
    asked for was the one trained in). The earliest versions' state lacked ``kl_total_steps`` (the saved run's
    length stands in), ``skipped_nonfinite_total`` (0) and ``records`` (the lines of the ``metrics.jsonl`` beside
    ``path`` up to its epoch). Config keys this version does not know are dropped."""
    new = {"format": FORMAT, "model": {"config": old.get("model_config"), "weights": old.get("model"),
                                       "cond_stats": old.get("cond_stats")},
           "training": None, "resolved": None, "state": None}
    saved = old.get("train_config")
    if saved is None:   # a model alone
        return new
    flat = config_mod.flatten({k: v for k, v in saved.items() if not k.startswith("resolved_")})
    new["training"] = {k: v for k, v in flat.items() if k in config_mod.TRAIN_KEYS}
    new["resolved"] = {"data_root": saved.get("resolved_data_root", ""),
                       "precision": saved.get("resolved_precision", flat.get("precision", "fp32")),
                       "device": saved.get("resolved_device", torch.device(flat.get("device", "cpu")).type)}
    if "cond_stats" not in old or any(k not in old for k in _RUN_STATE_1):
        return new
    state = {f.name: old[f.name] for f in fields(RunState) if f.name in old}
    state.setdefault("kl_total_steps", flat.get("niter", TrainConfig.niter) * flat.get("epoch_size",
                                                                                        TrainConfig.epoch_size))
    if "records" not in state:
        beside = read_json_lines(path.parent / "metrics.jsonl") if path is not None else []
        state["records"] = beside[:state["epoch"] + 1]
    new["state"] = state
    return new


def _refusal_detail(e: Exception) -> str:
    """The line of torch's weights-only refusal that says what was refused (e.g. ``GLOBAL posix.system``)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return next((line.rstrip(".") for line in lines if "GLOBAL" in line or "Unsupported" in line),
                "not a plain value")


def load_model_state(model: nn.Module, state: dict, source: str = "checkpoint") -> None:
    """load_state_dict with an error that names the mismatched entries and their sizes."""
    own = unwrap(model).state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("size mismatch in " + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))
        if missing:
            parts.append(f"missing {len(missing)} entries (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} entries (e.g. {unexpected[0]})")
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(parts))
    unwrap(model).load_state_dict(state)
