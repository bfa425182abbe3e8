"""What keeps the latent alive and what tells when it is not: free bits, the collapse warning, the probes."""

import numpy as np
import pytest
import torch

from cvae_video.config import TrainConfig
from cvae_video.models import ModelConfig
from cvae_video.evaluate import ShuffledConditions, derangement
from cvae_video.runtime import autocast, grad_scaler
from cvae_video.train import build_optimizer, collapse_warning, train_step
from helpers import tiny_model

CPU = torch.device("cpu")


def _batch():
    g = torch.Generator().manual_seed(0)
    return {"frames": torch.randint(0, 256, (2, 5, 3, 64, 64), dtype=torch.uint8, generator=g),
            "cond": torch.randn(2, 5, 7, generator=g)}


def _posterior_grads(free_bits: float, beta: float):
    cfg = TrainConfig(free_bits=free_bits, model=ModelConfig(z_dim=4))
    model = tiny_model()
    optimizer = build_optimizer(cfg, model.parameters())
    optimizer.step = lambda *a, **k: None   # keep the gradients, skip the update
    torch.manual_seed(1)
    logs = train_step(model, optimizer, grad_scaler(CPU, "fp32"), _batch(), cfg, beta=beta, tfr=1.0, device=CPU,
                      amp=autocast(CPU, "fp32"))
    return logs, [p.grad.clone() for p in model.posterior.parameters()]


def test_free_bits_make_a_kl_below_the_floor_cost_nothing():
    # a floor far above the KL of an untrained model: the KL term is a constant, its gradient zero
    logs, grads = _posterior_grads(free_bits=100.0, beta=1.0)
    _, grads_no_kl = _posterior_grads(free_bits=100.0, beta=0.0)
    assert logs["loss"] == pytest.approx(logs["mse"] * 4 + 100.0 * 4, rel=1e-5)   # 4 steps
    assert logs["kl"] < 100.0   # the log shows the real KL, not the floor
    for a, b in zip(grads, grads_no_kl):
        assert torch.equal(a, b)
    # without free bits the KL pulls on the posterior
    _, grads_kl = _posterior_grads(free_bits=0.0, beta=1.0)
    assert any(not torch.allclose(a, b) for a, b in zip(grads_kl, grads_no_kl))


def test_collapse_warning_keys_on_active_units():
    cfg = TrainConfig(model=ModelConfig(z_dim=16))
    assert collapse_warning(None, 500, 1000, cfg) is None   # not validated this epoch
    assert collapse_warning(1, 500, 1000, cfg) is None
    assert collapse_warning(0, 50, 1000, cfg) is None   # the first tenth: beta may still be ramping up
    text = collapse_warning(0, 500, 1000, cfg)
    assert "no latent dimension is active (active units 0 of 16)" in text and "--free_bits" in text
    assert "--kl_weight_max" in collapse_warning(0, 500, 1000, TrainConfig(free_bits=0.5))


@pytest.mark.parametrize("n", [2, 3, 10, 257])
def test_derangement_moves_every_sequence_and_is_seeded(n):
    perm = derangement(n, seed=4)
    assert sorted(perm.tolist()) == list(range(n))
    assert (perm != np.arange(n)).all()
    assert np.array_equal(perm, derangement(n, seed=4))
    if n > 3:
        assert not np.array_equal(perm, derangement(n, seed=5))


def test_shuffled_conditions_keep_frames_and_swap_conditions():
    items = [{"frames": torch.full((3, 1, 2, 2), i), "cond": torch.full((3, 7), float(i)), "index": torch.tensor(i)}
             for i in range(5)]
    ds = ShuffledConditions(items, seed=0)
    for i in range(5):
        assert torch.equal(ds[i]["frames"], items[i]["frames"]) and int(ds[i]["index"]) == i
        assert torch.equal(ds[i]["cond"], items[int(ds.perm[i])]["cond"]) and int(ds.perm[i]) != i


def test_active_units_of_a_split_are_those_of_its_posterior_means_in_any_batches():
    from cvae_video.evaluate import make_loader, report, score_split
    model = tiny_model(prior="learned")
    g = torch.Generator().manual_seed(2)
    items = [{"frames": torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8, generator=g),
              "cond": torch.randn(5, 7, generator=g), "index": torch.tensor(i)} for i in range(5)]
    runs = [report(score_split(model, make_loader(items, b), n_past=2, n_future=3)) for b in (2, 5)]
    model.eval()
    with torch.no_grad():   # by hand: the variance over every (sequence, step) of the posterior means
        x = torch.stack([it["frames"] for it in items]).float() / 255
        kl, mu = model.latent_stats(x)
    assert torch.allclose(kl, model.latent_kl(x))
    var = mu.double().flatten(0, 1).var(0, correction=0).numpy()
    for r in runs:
        assert np.allclose(r["latent_variance"], var, rtol=1e-6, atol=1e-12)
        assert r["active_units"] == int((var > 0.01).sum())
