"""Training options that no other test reaches: the optimizers, gradient clipping (through the fp16 scaler's
unscale), the cosine learning rate through the loop, stacked posterior and prior LSTMs, --picture_samples and
--synth_seed. Each test fails when its option stops doing what it says."""

import json

import pytest
import torch
from PIL import Image

from cvae_video import train
from cvae_video.config import TrainConfig
from cvae_video.data import synth
from cvae_video.runtime import autocast, grad_scaler
from cvae_video.schedules import learning_rate
from helpers import TINY_FLAGS, tiny_model

CPU = torch.device("cpu")


def _batch(seed=0, B=2, T=5):
    frames = torch.rand(B, T, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    return {"frames": (frames * 255).to(torch.uint8), "cond": torch.randn(B, T, 7)}


def _one_step(cfg: TrainConfig, precision: str = "fp32", **model_kw):
    model = tiny_model(**model_kw)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = train.build_optimizer(cfg, model.parameters())
    torch.manual_seed(1)
    logs = train.train_step(model, optimizer, grad_scaler(CPU, precision), _batch(), cfg, beta=1e-3, tfr=1.0,
                            device=CPU, amp=autocast(CPU, precision))
    moved = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    return model, optimizer, logs, moved


@pytest.mark.parametrize("name,kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("rmsprop", torch.optim.RMSprop), ("sgd", torch.optim.SGD)])
def test_each_optimizer_takes_a_step(name, kind):
    cfg = TrainConfig(optimizer=name, lr=0.01)
    _, optimizer, logs, moved = _one_step(cfg)
    assert type(optimizer) is kind and optimizer.param_groups[0]["lr"] == 0.01
    assert torch.isfinite(torch.tensor(logs["loss"])) and moved > 10


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gradient_clipping_bounds_the_gradient_that_is_applied(precision):
    """With fp16 the scaler multiplies the gradients by 2^16; clipping must see them unscaled (unscale_ first)."""
    clip = 1e-3
    model, _, _, moved = _one_step(TrainConfig(grad_clip=clip, optimizer="sgd", lr=0.1), precision)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert moved > 10 and norm.item() == pytest.approx(clip, rel=1e-3)
    free, _, _, _ = _one_step(TrainConfig(optimizer="sgd", lr=0.1), precision)
    grads = [p.grad.norm() for p in free.parameters() if p.grad is not None]
    assert torch.linalg.vector_norm(torch.stack(grads)).item() > 10 * clip   # so the clip did cut them


def test_stacked_posterior_and_prior_lstms_train_and_predict():
    model, _, logs, moved = _one_step(TrainConfig(), prior="learned", posterior_rnn_layers=2, prior_rnn_layers=2)
    assert model.posterior.lstm.num_layers == 2 and model.prior.lstm.num_layers == 2
    assert moved > 10 and torch.isfinite(torch.tensor(logs["loss"]))
    x = torch.rand(1, 2, 3, 64, 64)
    assert model.eval().predict(x, torch.zeros(1, 4, 7), 2).shape == (1, 1, 2, 3, 64, 64)


def _train(root, log_dir, *flags):
    assert train.main(["--data_root", str(root), "--log_dir", str(log_dir), *TINY_FLAGS, *flags]) == 0
    return [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_cosine_learning_rate_runs_through_the_loop(synth_root, tmp_path):
    records = _train(synth_root, tmp_path / "run", "--niter", "2", "--epoch_size", "3", "--lr", "0.01",
                     "--lr_schedule", "cosine", "--n_pictures", "0")
    # each epoch's record holds the rate of its last step (steps 2 and 5 of 6)
    assert [r["lr"] for r in records] == pytest.approx(
        [learning_rate(s, total_steps=6, base_lr=0.01, schedule="cosine") for s in (2, 5)])
    assert records[1]["lr"] < 0.5 * 0.01


def test_picture_samples_sets_the_futures_drawn_per_sequence(synth_root, tmp_path):
    heights = {}
    for n in (1, 3):
        log_dir = tmp_path / f"run{n}"
        _train(synth_root, log_dir, "--niter", "1", "--epoch_size", "1", "--n_pictures", "1",
               "--picture_samples", str(n))
        (grid,) = (log_dir / "pictures").glob("epoch*_seq0.png")
        with Image.open(grid) as im:
            heights[n] = im.size[1]
    row = heights[3] - heights[1]
    assert row > 0 and row % 2 == 0 and row // 2 > 64   # two more rows of one 64-pixel frame each and their gaps


def test_synth_seed_chooses_the_built_in_world(tmp_path, monkeypatch):
    asked = []

    def fake_ensure(cache, n_train, seed):
        asked.append(seed)
        raise RuntimeError("stop here")
    monkeypatch.setattr(synth, "ensure_synth_dataset", fake_ensure)
    monkeypatch.setenv("CVAE_VIDEO_CACHE", str(tmp_path))
    for seed in (0, 5):
        with pytest.raises(RuntimeError, match="stop here"):
            train.resolve_data_root(TrainConfig(synth_seed=seed))
    assert asked == [0, 5]
