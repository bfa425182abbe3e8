"""Helpers the tests share (imported as ``helpers``; fixtures live in conftest.py)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cvae_video import config as config_mod
from cvae_video.checkpoint import FORMAT_1, Checkpoint
from cvae_video.data import layout
from cvae_video.models import CVAE, ModelConfig

# Small enough to train a few steps in a second on a 2-core CPU.
TINY_MODEL = dict(backbone="dcgan", width=0.125, g_dim=16, z_dim=4, rnn_size=16)
TINY_FLAGS = ["--backbone", "dcgan", "--width", "0.125", "--g_dim", "16", "--z_dim", "4", "--rnn_size", "16",
              "--batch_size", "4", "--num_workers", "0", "--n_future", "4", "--n_eval", "4", "--no_progress",
              "--precision", "fp32",   # fixed, so that runs compare exactly (auto decides by timing)
              "--tensorboard", "off"]  # test_tensorboard.py turns it on


def tiny_model(**kw) -> CVAE:
    torch.manual_seed(0)
    return CVAE(ModelConfig(**(TINY_MODEL | kw)))


def write_small_synth(root, seq_len: int, n_train: int, n_validate: int, n_test: int, seed: int):
    """A small push-world data set at ``root`` with ``seq_len``-frame trajectories; returns ``root``."""
    from cvae_video.data import synth
    synth.write_dataset(root, n_train=n_train, n_validate=n_validate, n_test=n_test, seed=seed,
                        cfg=synth.SynthConfig(seq_len=seq_len), progress=False)
    return root


def fresh_copy(clean_root, tmp_path):
    """A copy of a clean data set in ``tmp_path``, for a test to break."""
    return shutil.copytree(clean_root, tmp_path / "data")


def breakable_data(name: str, seq_len: int, n_train: int, n_validate: int, n_test: int, seed: int):
    """Two fixtures for a test module that breaks data on purpose: ``clean_root``, a small data set made once per
    module, and ``root``, a fresh copy of it for each test. Use as ``clean_root, root = breakable_data(...)``."""
    @pytest.fixture(scope="module")
    def clean_root(tmp_path_factory):
        return write_small_synth(tmp_path_factory.mktemp(name) / "data", seq_len, n_train, n_validate, n_test, seed)

    @pytest.fixture
    def root(clean_root, tmp_path):
        return fresh_copy(clean_root, tmp_path)
    return clean_root, root


def read_trajectory(traj_dir: Path, n_frames: int | None = None, size: int = layout.IMAGE_SIZE
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and conditions (T, 7) float32 of one trajectory (its first ``n_frames``)."""
    traj_dir = Path(traj_dir)
    total = layout.count_frames(traj_dir)
    cond = layout.read_conditions(traj_dir, total)
    n = total if n_frames is None else n_frames
    if n > total:
        raise AssertionError(f"{traj_dir}: has {total} frames, need {n}")
    frames = np.stack([layout.read_frame(traj_dir / f"{t}.png", size) for t in range(n)])
    return frames, cond[:n]


def edit_line(path: Path, line: int, text: str | None) -> None:
    """Replace line ``line`` (1-based) of a text file with ``text``, or delete it with None."""
    lines = path.read_text().splitlines()
    if text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


# what the state of format 1 lacked in its earliest versions
EARLIEST_STATE_LACKS = ("kl_total_steps", "records", "skipped_nonfinite_total")


def format_1(ckpt: Checkpoint, *, earliest: bool = False) -> dict:
    """``ckpt`` as checkpoint format 1 held it: ``model_config``, the weights as ``model``, and with a run's parts
    ``cond_stats``, the run state at the top level and ``train_config``, the config with the model's keys under
    ``"model"`` and the run's decisions as ``resolved_*`` keys. ``earliest``: as its first versions wrote it, every
    config key at one level with ``cuda`` beside an empty ``device``, only the data root decided, and a state
    without ``EARLIEST_STATE_LACKS``."""
    old = {"format": FORMAT_1, "model_config": ckpt.model_config.to_dict(), "model": ckpt.weights}
    if ckpt.training is None:
        return old
    r = ckpt.resolved
    if earliest:
        saved = config_mod.flatten(ckpt.training.to_dict()) | {"device": "", "cuda": r.device == "cuda",
                                                              "resolved_data_root": r.data_root}
    else:
        saved = ckpt.training.to_dict() | {"resolved_data_root": r.data_root, "resolved_precision": r.precision,
                                           "resolved_device": r.device}
    old |= {"train_config": saved, "cond_stats": ckpt.cond_stats.to_dict()}
    if ckpt.state is not None:
        old |= {k: v for k, v in ckpt.state.to_dict().items() if not (earliest and k in EARLIEST_STATE_LACKS)}
    return old
