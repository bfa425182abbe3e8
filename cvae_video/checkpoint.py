"""Checkpoints: plain dicts of state_dicts, config and counters, loadable with ``torch.load(weights_only=True)``.

Written with :func:`cvae_video.fileio.atomic_write`, so a crash never leaves half a file.
Wrapper prefixes of DistributedDataParallel (``module.``) and torch.compile (``_orig_mod.``) never reach the file.
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError
from .fileio import atomic_write
from .models.svg import CVAE, ModelConfig

FORMAT = "cvae_video.checkpoint/1"


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


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra) -> None:
    """Save the unwrapped model's state_dict, its config, and ``extra`` (plain values, tensors, state_dicts)."""
    model = unwrap(model)
    payload = {"format": FORMAT, "model_config": model.cfg.to_dict(), "model": model.state_dict(), **extra}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint safely: tensors and plain containers only, never arbitrary pickled objects."""
    path = Path(path)
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
    if isinstance(found, str) and found.startswith(FORMAT.split("/")[0] + "/") and found != FORMAT:
        raise CheckpointError(f"{path}: written by another version of cvae_video (format {found!r}; this version "
                              f"reads {FORMAT!r})")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cvae_video checkpoint (format "
                              f"{ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r}, "
                              f"expected {FORMAT!r})")
    return ckpt


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


def model_from_checkpoint(ckpt: dict, source: str = "checkpoint") -> CVAE:
    """Rebuild the model from the config stored in the checkpoint and load its weights."""
    try:
        cfg = ModelConfig(**ckpt["model_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: model config not understood ({e})") from None
    model = CVAE(cfg)
    load_model_state(model, ckpt["model"], source)
    return model


def inference_model(ckpt: dict, source: str, device: torch.device, channels_last: bool | None = None) -> CVAE:
    """``model_from_checkpoint`` on ``device``, in eval mode and in the memory format it was trained in (or
    channels-last as ``channels_last`` says)."""
    model = model_from_checkpoint(ckpt, source).to(device).eval()
    if ckpt.get("train_config", {}).get("channels_last", False) if channels_last is None else channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
