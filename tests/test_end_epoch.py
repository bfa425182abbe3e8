"""The steps that close an epoch (train.end_epoch): every rank validates and records; only rank 0 saves, draws and
prints, the collapse warning included."""

import dataclasses
import time

import pytest

from cvae_video import config as config_mod
from cvae_video import train
from helpers import TINY_FLAGS

STATS = {"loss": 1.0, "mse": 0.01, "kl": 0.5, "beta": 1.0, "tfr": 1.0, "lr": 0.002, "skipped_nonfinite": 0}
COLLAPSED = {"val_psnr": 20.0, "val_ssim": 0.5, "val_kl": 0.0, "active_units": 0}   # no latent dimension active
SET_UP = {"config.toml", "data_report.json"}   # what start_run writes


@pytest.fixture
def run(synth_root, tmp_path):
    args = train.build_parser().parse_args(["--data_root", str(synth_root), "--log_dir", str(tmp_path / "run"),
                                            "--niter", "2", "--epoch_size", "1", "--n_pictures", "1",
                                            "--val_sequences", "2", *TINY_FLAGS])
    return train.start_run(config_mod.resolve(args), None, overwrite=False)


def written(run) -> list[str]:
    return sorted(p.name for p in run.log_dir.rglob("*") if p.is_file() and p.name not in SET_UP)


@pytest.mark.parametrize("rank", [0, 1])
def test_every_rank_validates_and_records_and_only_rank_0_saves_draws_and_prints(run, rank, monkeypatch, capsys):
    monkeypatch.setattr(train, "validate", lambda run: dict(COLLAPSED))   # the numbers every rank would agree on
    run.world = dataclasses.replace(run.world, rank=rank, world_size=2)
    run.state.step = run.state.kl_total_steps                           # past the first tenth: a collapse counts
    record = train.end_epoch(run, 0, STATS, 1.0, progress=True, started=time.time())
    out, err = capsys.readouterr()
    assert run.state.records == [record] and run.state.epoch == 0
    assert record["val_psnr"] == run.state.best_val_psnr == COLLAPSED["val_psnr"]
    if rank == 0:
        assert written(run) == ["best.pt", "epoch0000_seq0.png", "last.pt", "metrics.jsonl", "training_curves.png"]
        assert "epoch    1/2" in out
        assert "warning: no latent dimension is active" in err   # the collapse check is reached
        assert record["epoch_seconds"] is not None
    else:
        assert written(run) == [] and out == err == ""
        assert record["epoch_seconds"] is None


def test_validation_every_val_every_epochs_and_at_the_end(run, monkeypatch):
    calls = []
    monkeypatch.setattr(train, "validate", lambda run: calls.append(1) or dict(COLLAPSED))
    run.cfg.val_every, run.cfg.niter = 2, 3
    records = [train.end_epoch(run, epoch, STATS, 1.0, progress=False) for epoch in range(3)]
    assert [r["val_psnr"] for r in records] == [None, 20.0, 20.0] and len(calls) == 2
    assert [r["active_units"] for r in records] == [None, 0, 0]
