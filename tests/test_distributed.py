"""Data-parallel training under torchrun: two CPU processes with gloo against one process, on the tiny model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cvae_video import distributed, evaluate, train
from cvae_video.checkpoint import load_checkpoint
from cvae_video.config import TrainConfig
from cvae_video.data.dataset import VideoDataset
from cvae_video.errors import ConfigError
from cvae_video.models import CVAE, ModelConfig, svg
from cvae_video.runtime import seed_everything
from helpers import TINY_FLAGS, TINY_MODEL
from ddp_fixed_noise import fixed_noise

TESTS = Path(__file__).parent
VAL_SEQUENCES, VAL_BATCH = 7, 2     # batches of 2, 2, 2, 1: rank 0 scores 4 sequences, rank 1 scores 3


def torchrun(target: list[str], args: list[str], nproc: int = 2) -> None:
    """Run ``target`` (a script, or ``-m module``) under torchrun with ``nproc`` CPU processes."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *target,
           *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


def flags(root, log_dir, *extra) -> list[str]:
    return ["--data_root", str(root), "--log_dir", str(log_dir), "--seed", "7", "--val_sequences",
            str(VAL_SEQUENCES), "--val_batch_size", str(VAL_BATCH), "--n_pictures", "1", *TINY_FLAGS, *extra]


def float_state(path) -> dict[str, torch.Tensor]:
    raw = torch.load(path, weights_only=True)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in raw["model"]["weights"])
    load_checkpoint(path).build_model()   # rebuilds in a plain single-process model
    return {k: v for k, v in raw["model"]["weights"].items() if v.is_floating_point()}


@pytest.mark.slow
def test_two_processes_match_one_process_with_twice_the_batch(synth_root, tmp_path, monkeypatch):
    """Per-rank batch 2 on 2 processes == batch 4 on 1 process, step for step.

    Made comparable: --sync_bn (BatchNorm statistics over the global batch of 4, as in one process), the latents
    fixed (ddp_fixed_noise: random draws fall into processes differently), tfr 0 (no random teacher-forcing
    choice), and SGD rather than Adam (Adam divides by the gradient's magnitude, which blows the rounding noise
    of gradients that should be zero, e.g. biases feeding BatchNorm, up to full-size steps). What remains
    differs only in float32 rounding (summation order, batch 4 vs 2 per convolution, the two-pass BatchNorm
    variance): measured 7e-7 after 3 steps, while the parameters move by up to ~0.7 and without --sync_bn
    the two runs differ by ~0.1. Tolerance 1e-4 sits far from both.
    """
    common = ["--niter", "1", "--epoch_size", "3", "--tfr", "0", "--optimizer", "sgd", "--lr", "0.05", "--sync_bn"]
    two, one = tmp_path / "two", tmp_path / "one"
    torchrun([str(TESTS / "ddp_fixed_noise.py")], flags(synth_root, two, *common, "--batch_size", "2"))
    monkeypatch.setattr(svg, "reparameterize", fixed_noise)
    assert train.main(flags(synth_root, one, *common, "--batch_size", "4")) == 0

    a, b = float_state(one / "last.pt"), float_state(two / "last.pt")
    seed_everything(7)
    init = CVAE(TrainConfig(model=ModelConfig(**TINY_MODEL)).model_config())
    moved = max((a[k] - v).abs().max().item() for k, v in init.state_dict().items() if k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 0.1
    assert diff < 1e-4, f"parameters differ by {diff} (moved by {moved})"
    rec_a, rec_b = (json.loads((d / "metrics.jsonl").read_text().splitlines()[-1]) for d in (one, two))
    assert rec_b["loss"] == pytest.approx(rec_a["loss"], rel=1e-5)   # the logged loss is the global batch's
    assert rec_b["val_psnr"] == pytest.approx(rec_a["val_psnr"], abs=1e-4)


@pytest.fixture(scope="module")
def ddp_run(synth_root, tmp_path_factory):
    """``torchrun -m cvae_video.train`` on 2 processes, random latents and teacher forcing."""
    log_dir = tmp_path_factory.mktemp("ddp") / "run"
    torchrun(["-m", "cvae_video.train"], flags(synth_root, log_dir, "--niter", "1", "--epoch_size", "2",
                                                 "--tfr", "0.5", "--batch_size", "2"))
    return log_dir


@pytest.mark.slow
def test_rank0_writes_a_plain_checkpoint(ddp_run):
    for name in ("config.toml", "metrics.jsonl", "last.pt", "best.pt", "training_curves.png"):
        assert (ddp_run / name).is_file(), name
    assert len(list((ddp_run / "pictures").glob("*.png"))) == 1
    float_state(ddp_run / "last.pt")


@pytest.mark.slow
def test_validation_psnr_is_over_the_whole_split(ddp_run, synth_root):
    """The 2-process validation PSNR and active units (unequal shards: 4 and 3 sequences) equal one process
    scoring the split."""
    ckpt = load_checkpoint(ddp_run / "last.pt")
    model = ckpt.build_model().to(memory_format=torch.channels_last)   # as trained: the same sums
    ds = VideoDataset(synth_root, "validate", 2 + 4, stats=ckpt.cond_stats)
    ds = torch.utils.data.Subset(ds, range(VAL_SEQUENCES))
    scores = evaluate.score_split(model, evaluate.make_loader(ds, VAL_BATCH), n_past=2, n_future=4, seed=7)
    whole = float(scores["psnr"].mean())
    assert ckpt.state.val_psnr == pytest.approx(whole, abs=1e-9)
    rank0_only = float(scores["psnr"][[0, 1, 4, 5]].mean())    # rank 0's batches 0 and 2
    assert abs(rank0_only - whole) > 1e-6
    record = json.loads((ddp_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["active_units"] == evaluate.report(scores)["active_units"]


@pytest.mark.slow
def test_resumes_in_one_process_and_evaluates(ddp_run, synth_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ddp_run, run)
    assert train.main(["--resume", str(run), "--niter", "2", "--no_progress"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and records[-1]["step"] == 4
    for ckpt in (ddp_run / "last.pt", run / "last.pt"):
        out = tmp_path / f"{ckpt.parent.name}.json"
        assert evaluate.main(["--ckpt", str(ckpt), "--data_root", str(synth_root), "--max_sequences", "4",
                              "--json", str(out)]) == 0
        assert json.loads(out.read_text())["psnr"] > 0


# ---- single-process pieces ---------------------------------------------------------------------------------

def test_shards_cover_every_batch_once():
    data = [{"frames": torch.zeros(1), "index": torch.tensor(i)} for i in range(7)]
    seen = []
    for rank in range(3):
        seen += [b["index"].tolist() for b in distributed.shard_loader(data, 2, distributed.World(rank, 3))]
    assert sorted(seen) == [[0, 1], [2, 3], [4, 5], [6]]
    # more ranks than batches: an empty shard scores nothing
    assert len(distributed.shard_loader(data, 2, distributed.World(rank=4, world_size=5))) == 0
    assert distributed.global_mean(np.array([1.0, 2.0]), distributed.World()) == 1.5
    assert distributed.global_sum(np.array([[1.0, 2.0], [3.0, 5.0]]), distributed.World()).tolist() == [4.0, 7.0]
    assert distributed.global_sum(np.zeros((0, 3)), distributed.World()).tolist() == [0.0] * 3   # an empty shard


def test_latents_differ_across_ranks_and_repeat_from_the_seed():
    def draws(rank, world=2, epoch=0):
        torch.manual_seed(123)
        distributed.seed_epoch(5, epoch, distributed.World(rank=rank, world_size=world))
        return torch.rand(4)
    assert torch.equal(draws(0), draws(0)) and torch.equal(draws(1), draws(1))
    assert not torch.equal(draws(0), draws(1))
    assert not torch.equal(draws(0, epoch=0), draws(0, epoch=1))
    torch.manual_seed(123)
    untouched = torch.rand(4)
    assert torch.equal(draws(0, world=1), untouched)   # one process: the RNG is left as it was


def test_sync_batchnorm_cpu_converts_in_place_and_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(5, 5),
                                torch.nn.BatchNorm1d(3))
    ref = torch.nn.BatchNorm2d(4)
    ref.load_state_dict(model[1].state_dict())
    weight = model[1].weight
    assert distributed.convert_sync_batchnorm_cpu(model) is model
    assert isinstance(model[1], distributed.SyncBatchNormCPU) and model[1].weight is weight
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(model[1](x), ref(x))
    assert torch.equal(model[1].running_var, ref.running_var)


def test_setup_refuses_impossible_combinations(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        distributed.setup(TrainConfig(device="cuda"))
    with pytest.raises(ConfigError, match="sync_bn with tf_per_sample"):
        distributed.setup(TrainConfig(sync_bn=True, tf_per_sample=True))
    monkeypatch.delenv("RANK")
    with pytest.raises(ConfigError, match="torchrun"):
        distributed.setup(TrainConfig())
