"""What keeps the latent alive and what tells when it is not: free bits, the collapse warning, the probes."""

import numpy as np
import pytest
import torch

from cvae_video.config import TrainConfig
from cvae_video.models import ModelConfig
from cvae_video.evaluate import ShuffledConditions, derangement
from cvae_video.runtime import autocast, grad_scaler
from cvae_video.train import COLLAPSED_KL, build_optimizer, collapse_warning, train_step
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


def test_collapse_warning():
    cfg = TrainConfig()
    assert collapse_warning(None, 500, 1000, cfg) is None
    assert collapse_warning(COLLAPSED_KL * 2, 500, 1000, cfg) is None
    assert collapse_warning(1e-6, 50, 1000, cfg) is None   # the first tenth: beta may still be ramping up
    text = collapse_warning(1e-6, 500, 1000, cfg)
    assert "collapsed" in text and "1e-06" in text and "--free_bits" in text
    assert "below --free_bits 0.5" in collapse_warning(1e-6, 500, 1000, TrainConfig(free_bits=0.5))


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
