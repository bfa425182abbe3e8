from functools import partial

import pytest

from cvae_video.schedules import kl_weight, teacher_forcing_ratio


def test_teacher_forcing_holds_then_decays_to_lower_bound():
    f = lambda e: teacher_forcing_ratio(e, tfr=1.0, start_decay_epoch=10, decay_step=0.1, lower_bound=0.25)
    assert [f(e) for e in (0, 5, 10)] == [1.0, 1.0, 1.0]
    assert f(11) == pytest.approx(0.9)
    assert f(13) == pytest.approx(0.7)
    assert f(17) == pytest.approx(0.3)
    assert f(18) == pytest.approx(0.25)
    assert f(1000) == pytest.approx(0.25)


def test_teacher_forcing_without_decay_is_constant():
    assert teacher_forcing_ratio(50, tfr=0.5, start_decay_epoch=0, decay_step=0.0, lower_bound=0.0) == 0.5


def test_monotonic_kl_rises_over_ratio_then_stays():
    f = lambda s: kl_weight(s, total_steps=1000, cyclical=False, ratio=0.2, n_cycles=4, max_weight=1.0)
    assert f(0) == 0.0
    assert f(100) == pytest.approx(0.5)
    assert f(200) == pytest.approx(1.0)
    assert f(999) == pytest.approx(1.0)
    assert kl_weight(100, total_steps=1000, cyclical=False, ratio=0.2, n_cycles=4, max_weight=1e-4) == pytest.approx(0.5e-4)


def test_cyclical_kl_restarts_every_cycle():
    f = lambda s: kl_weight(s, total_steps=1000, cyclical=True, ratio=0.5, n_cycles=4, max_weight=2.0)
    # cycles of 250 steps; rise over the first 125 of each
    assert f(0) == 0.0
    assert f(50) == pytest.approx(0.8)
    assert f(125) == pytest.approx(2.0)
    assert f(249) == pytest.approx(2.0)
    assert f(250) == 0.0
    assert f(300) == pytest.approx(0.8)
    assert f(875) == pytest.approx(2.0)


def test_schedules_at_their_edges():
    # a lower bound above the starting ratio never raises teacher forcing
    assert teacher_forcing_ratio(30, tfr=0.2, start_decay_epoch=0, decay_step=0.1, lower_bound=0.5) == 0.2
    # cycles that do not divide the run: each restarts at its own (fractional) boundary
    f = lambda s: kl_weight(s, total_steps=1000, cyclical=True, ratio=1.0, n_cycles=3)
    assert f(333) == pytest.approx(333 / (1000 / 3)) and f(334) == pytest.approx(1 / (1000 / 3), abs=1e-3)
    # the weight is reached exactly at the end of the rise, and a zero maximum switches the KL term off
    monotonic = partial(kl_weight, total_steps=1000, cyclical=False, ratio=0.5, n_cycles=1)
    assert monotonic(500) == 1.0 and monotonic(499) < 1.0
    assert monotonic(700, max_weight=0.0) == 0.0


def test_learning_rate_schedules():
    from cvae_video.schedules import learning_rate
    assert learning_rate(500, total_steps=1000, base_lr=0.002) == 0.002
    assert learning_rate(0, total_steps=1000, base_lr=0.002, schedule="cosine") == pytest.approx(0.002)
    assert learning_rate(500, total_steps=1000, base_lr=0.002, schedule="cosine") == pytest.approx(0.002 * (0.05 + 0.95 * 0.5))
    assert learning_rate(1000, total_steps=1000, base_lr=0.002, schedule="cosine") == pytest.approx(0.002 * 0.05)
    with pytest.raises(ValueError):
        learning_rate(0, total_steps=10, base_lr=0.1, schedule="linear")
