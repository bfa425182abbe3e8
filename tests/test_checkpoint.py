"""The checkpoint format: each fact once, typed parts from the one opening function, and every older layout read
through migrate() (the model predicts the same, the run's config, decisions and state are those it was saved with)."""

import json

import pytest
import torch

from cvae_video import config as config_mod
from cvae_video.checkpoint import FORMAT, Checkpoint, Resolved, RunState, load_checkpoint, migrate, rng_state
from cvae_video.data.dataset import ConditionStats
from cvae_video.errors import CheckpointError
from cvae_video.inference import predict_batch
from cvae_video.models import ModelConfig
from helpers import EARLIEST_STATE_LACKS, TINY_MODEL, format_1, tiny_model

RECORDS = [{"epoch": 0, "step": 5, "val_psnr": 20.0}, {"epoch": 1, "step": 10, "val_psnr": 20.5}]


def a_run(tmp_path, precision: str = "auto", decided: str = "bf16") -> tuple[Checkpoint, torch.nn.Module]:
    """The checkpoint of a tiny model at the end of epoch 1 of a 3-epoch run of 5 steps each that asked for
    ``precision`` and trained in ``decided``, and the model."""
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters())
    training = config_mod.TrainConfig(model=ModelConfig(**TINY_MODEL), precision=precision, niter=3, epoch_size=5,
                                      data_root=str(tmp_path / "data"), log_dir=str(tmp_path))
    state = RunState(kl_total_steps=15, epoch=1, step=10, best_val_psnr=20.5, val_psnr=20.5, records=RECORDS,
                     optimizer=optimizer.state_dict(), scaler={}, rng=rng_state())
    stats = ConditionStats(tuple(float(i) for i in range(7)), (2.0,) * 7)
    return Checkpoint.of(model, cond_stats=stats, training=training,
                         resolved=Resolved(str(tmp_path), decided, "cpu"), state=state), model


def predictions(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    batch = {"frames": torch.randint(0, 256, (2, 4, 3, 64, 64), generator=g, dtype=torch.uint8),
             "cond": torch.randn(2, 4, 7, generator=g), "index": torch.tensor([3, 4])}
    return predict_batch(model, batch, n_past=2, n_future=2, n_samples=2, seed=1).samples


def assert_same_run(got: Checkpoint, want: Checkpoint) -> None:
    assert got.model_config == want.model_config and got.training == want.training
    assert got.resolved == want.resolved and got.cond_stats == want.cond_stats
    plain = lambda s: {k: v for k, v in s.to_dict().items() if k not in ("rng", "optimizer")}   # noqa: E731
    assert plain(got.state) == plain(want.state)
    assert torch.equal(got.state.rng["torch"], want.state.rng["torch"])
    assert got.state.optimizer["param_groups"] == want.state.optimizer["param_groups"]


def test_a_checkpoint_holds_each_fact_once_and_loads_weights_only(tmp_path):
    ckpt, model = a_run(tmp_path)
    ckpt.save(tmp_path / "last.pt")
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(raw) == {"format", "model", "training", "resolved", "state"} and raw["format"] == FORMAT
    assert set(raw["model"]) == {"config", "weights", "cond_stats"}
    assert not set(raw["training"]) & set(config_mod.MODEL_KEYS) and "model" not in raw["training"]
    assert not any(k.startswith("resolved") for k in raw["training"])
    assert raw["resolved"] == {"data_root": str(tmp_path), "precision": "bf16", "device": "cpu"}
    got = load_checkpoint(tmp_path / "last.pt")
    assert_same_run(got, ckpt)
    assert got.source == str(tmp_path / "last.pt") and isinstance(got.training, config_mod.TrainConfig)
    assert torch.equal(predictions(got.build_model()), predictions(model))


@pytest.mark.parametrize("earliest", [False, True], ids=["format_1", "format_1_earliest"])
def test_a_format_1_run_checkpoint_migrates(tmp_path, earliest):
    """Format 1 held the model's config twice and the run's decisions inside its config; its earliest versions
    had every config key at one level (``cuda`` beside ``device``), decided only the data root (the precision
    was the one asked for), and saved no records (they are in the metrics.jsonl beside it), KL horizon (the
    run's length) or skip count (0)."""
    ckpt, model = a_run(tmp_path, *(("fp32", "fp32") if earliest else ("auto", "bf16")))
    old = format_1(ckpt, earliest=earliest)
    old["train_config"]["a_key_since_removed"] = 1   # config keys this version does not know are dropped
    assert earliest == all(k not in old for k in EARLIEST_STATE_LACKS) and "model_config" in old
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS + [{"epoch": 2}]))
    torch.save(old, tmp_path / "last.pt")
    got = load_checkpoint(tmp_path / "last.pt")
    assert_same_run(got, ckpt)
    assert torch.equal(predictions(got.build_model()), predictions(model))
    assert migrate(old, tmp_path / "last.pt")["format"] == FORMAT


def test_a_format_1_checkpoint_of_a_model_alone_migrates(tmp_path):
    model = tiny_model(condition="none", cond_dim=0)
    torch.save(format_1(Checkpoint.of(model)), tmp_path / "model.pt")
    got = load_checkpoint(tmp_path / "model.pt")
    assert got.model_config == model.cfg
    assert (got.cond_stats, got.training, got.resolved, got.state) == (None, None, None, None)
    assert torch.equal(predictions(got.build_model()), predictions(model))


def test_formats_of_other_versions_and_broken_parts_are_named(tmp_path):
    ckpt, _ = a_run(tmp_path)
    torch.save(dict(ckpt.to_dict(), format="cvae_video.checkpoint/3"), tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="written by another version of cvae_video .*checkpoint/3"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({"format": "something/1"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a cvae_video checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    broken = ckpt.to_dict()
    broken["training"]["lr"] = "fast"
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"broken.pt: training: key 'lr' must be float"):
        load_checkpoint(tmp_path / "broken.pt")
    alone = dict(ckpt.to_dict(), training=None)
    torch.save(alone, tmp_path / "alone.pt")
    with pytest.raises(CheckpointError, match="a run state without the run's config"):
        load_checkpoint(tmp_path / "alone.pt")
