"""The model options that change how the latent reaches the frames: spatial_state, decoder_z, frame_keypoints,
posterior_input, posterior_logvar_init, frame_feedback, and the KL balance of the loss."""

from unittest import mock

import pytest
import torch

from cvae_video.config import TrainConfig
from cvae_video.errors import ConfigError
from cvae_video.models import ModelConfig, svg
from cvae_video.train import kl_term
from helpers import tiny_model


def _frames(seed=0, B=2, T=5):
    return torch.rand(B, T, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_spatial_state_draws_what_the_predictor_says():
    model = tiny_model(condition="none", output="compose", spatial_state=3, keypoints=2).eval()
    assert model.decoder.cond_channels == 6 and model.decoder.map_channels == 4
    x = _frames()
    want = model.predict(x[:, :2], None, 2, z_mode="mean")
    with torch.no_grad():
        model.state_head.bias.add_(0.5)
    assert not torch.allclose(model.predict(x[:, :2], None, 2, z_mode="mean"), want)
    with pytest.raises(ValueError, match="spatial_state"):
        ModelConfig(spatial_state=2, spatial_cond=True)
    with pytest.raises(ValueError, match="keypoints"):
        ModelConfig(keypoints=2)


def test_decoder_z_reaches_the_drawn_state_without_the_predictor():
    """With the predictor's z inputs cut, the samples differ only where z reaches the state head directly."""
    x = _frames()
    for decoder_z in (False, True):
        model = tiny_model(condition="none", output="compose", spatial_state=3, keypoints=2,
                           decoder_z=decoder_z).eval()
        h_dim, z_dim = model.cfg.g_dim, model.cfg.z_dim
        with torch.no_grad():
            model.predictor.embed.weight[:, h_dim:h_dim + z_dim] = 0
        a, b = (model.predict(x[:, :2], None, 2, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
        assert torch.equal(a, b) != decoder_z
    assert model.state_head.in_features == h_dim + z_dim
    with pytest.raises(ValueError, match="decoder_z.*spatial_state"):
        ModelConfig(decoder_z=True)


def test_spatial_softmax_points_find_a_peak():
    points = svg.SpatialSoftmaxPoints(channels=1, n=1)
    with torch.no_grad():
        points.conv.weight.fill_(100.0)
        points.conv.bias.zero_()
    f = torch.zeros(1, 1, 32, 32)
    f[0, 0, 8, 24] = 1.0                         # row 8, column 24
    r = torch.linspace(-1, 1, 32)
    assert torch.allclose(points(f), torch.stack([r[24], r[8]])[None], atol=1e-4)   # (x, y)


def test_frame_keypoints_extend_what_the_recurrent_parts_read():
    model = tiny_model(frame_keypoints=3)
    assert model.predictor.embed.in_features == 16 + 6 + 4 + 7
    assert model.posterior.embed.in_features == 16 + 6
    h, _ = model.encode(_frames())
    assert h.shape[-1] == 22 and h[..., 16:].abs().max() <= 1


def test_posterior_reads_the_change_from_the_last_frame():
    model = tiny_model(posterior_input="change")
    h = torch.randn(2, 4, 16)
    inp = model._posterior_input(h)
    assert torch.equal(inp[..., :16], h[:, 1:]) and torch.equal(inp[..., 16:], h[:, 1:] - h[:, :-1])
    assert model.posterior.embed.in_features == 32


def test_posterior_logvar_init():
    assert torch.all(tiny_model(posterior_logvar_init=-4.0).posterior.logvar.bias == -4.0)


def test_without_frame_feedback_predicted_frames_are_never_encoded():
    model = tiny_model(frame_feedback=False)
    x, cond = _frames(T=6), torch.randn(2, 6, 7)
    # teacher forcing makes no difference: no frame after the given ones reaches the predictor
    torch.manual_seed(3)
    a = model(x, cond, 2, True)["x_hat"]
    torch.manual_seed(3)
    b = model(x, cond, 2, False)["x_hat"]
    assert torch.equal(a, b)
    feedback = tiny_model()
    torch.manual_seed(3)
    c = feedback(x, cond, 2, True)["x_hat"]
    torch.manual_seed(3)
    assert not torch.allclose(c, feedback(x, cond, 2, False)["x_hat"])
    # prediction encodes the given frames once, in one call
    calls = []
    model.eval()
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    model.predict(x[:, :2], cond, 4, n_samples=3)
    assert calls == [2 * 2]
    with pytest.raises(ValueError, match="frame_feedback"):
        ModelConfig(frame_feedback=False, prior="learned")


def test_kl_balance_weights_the_prior_and_the_posterior_apart():
    x, cond = _frames(T=4), torch.randn(2, 4, 7)
    model = tiny_model(prior="learned")
    torch.manual_seed(0)
    out = model(x, cond, 2)
    assert torch.allclose(kl_term(out, TrainConfig(kl_balance=0.5)), out["kl"], rtol=1e-5)   # the same value
    plain = torch.autograd.grad(out["kl"], [model.prior.mu.weight, model.posterior.mu.weight], retain_graph=True)
    half = torch.autograd.grad(kl_term(out, TrainConfig(kl_balance=0.5)),
                               [model.prior.mu.weight, model.posterior.mu.weight], retain_graph=True)
    bal = torch.autograd.grad(kl_term(out, TrainConfig(kl_balance=0.8)),
                              [model.prior.mu.weight, model.posterior.mu.weight], retain_graph=True)
    assert torch.allclose(half[0], 0.5 * plain[0], atol=1e-7) and torch.allclose(half[1], 0.5 * plain[1], atol=1e-7)
    assert torch.allclose(bal[0], 0.8 * plain[0], atol=1e-7) and torch.allclose(bal[1], 0.2 * plain[1], atol=1e-7)
    # free bits above the KL: the posterior feels no KL, the prior still learns to match it
    floor = float(out["kl_per_step"].detach().max()) + 1.0
    fb = torch.autograd.grad(kl_term(out, TrainConfig(kl_balance=0.8, free_bits=floor)),
                             [model.prior.mu.weight, model.posterior.mu.weight], retain_graph=True, allow_unused=True)
    assert fb[0].abs().sum() > 0 and (fb[1] is None or fb[1].abs().sum() == 0)
    # without the balance, free bits above the KL stop both
    (g,) = torch.autograd.grad(kl_term(out, TrainConfig(free_bits=floor)), model.prior.mu.weight,
                               allow_unused=True, retain_graph=True)
    assert g is None or g.abs().sum() == 0


def _motion_points_model(**kw):
    return tiny_model(condition="none", output="compose", motion_points=2, **kw)


def test_motion_points_are_read_from_the_frame_and_its_change():
    model = _motion_points_model()
    assert model.posterior.embed.in_features == 16 + 4 and model.decoder.map_channels == 4
    x = _frames(T=4)
    finder = model.motion_points
    a = finder(x[:, 1], x[:, 1])
    assert torch.equal(a, finder(x[:, 1], None))                 # no change: as if it had no frame before it
    assert not torch.allclose(a, finder(x[:, 1], x[:, 0]))       # the change moves them
    frame_only = _motion_points_model(motion_points_change=False).motion_points
    assert torch.equal(frame_only(x[:, 1], x[:, 0]), frame_only(x[:, 1], None))   # the frame alone
    h, _ = model.encode(x)
    assert torch.allclose(model.points_of(h[:, 2]), finder(x[:, 2], x[:, 1]), atol=1e-6)
    assert torch.allclose(model.points_of(h[:, 0]), finder(x[:, 0], None), atol=1e-6)
    for bad in ({"spatial_state": 2}, {"keypoints": 2, "spatial_cond": True, "condition": "full"},
                {"frame_feedback": False}):
        with pytest.raises(ValueError, match="motion_points"):
            ModelConfig(motion_points=2, output="compose", **({"condition": "none"} | bad))


def test_the_change_finder_puts_its_point_between_where_a_square_was_and_where_it_is():
    model = tiny_model(condition="none", output="compose", motion_points=1, motion_points_finder="change")
    assert isinstance(model.motion_points, svg.ChangePoint) and not list(model.motion_points.parameters())
    assert model.decoder.map_channels == 2
    before, x = torch.full((2, 2, 3, 64, 64), 0.3).unbind(1)
    before, x = before.clone(), x.clone()
    before[0, :, 8:16, 8:16] = 1.0      # in sequence 0 a square moves right by 16 pixels; sequence 1 stays still
    x[0, :, 8:16, 24:32] = 1.0
    point = model.motion_points(x, before)
    cols = torch.linspace(-1, 1, 64)
    middle = (cols[8:16].mean().item() + cols[24:32].mean().item()) / 2
    assert point[0].tolist() == pytest.approx([middle, cols[8:16].mean().item()], abs=1e-4)
    assert point[1].tolist() == [0.0, 0.0]                      # no change: the centre
    assert torch.equal(model.motion_points(x, None), torch.zeros(2, 2))
    h, _ = model.encode(torch.stack([before, x], 1))
    assert torch.allclose(model.points_of(h[:, 1]), point, atol=1e-6)
    with pytest.raises(ValueError, match="motion_points = 1"):
        ModelConfig(motion_points=2, output="compose", condition="none", motion_points_finder="change")
    with pytest.raises(ValueError, match="motion_points_finder must be one of"):
        ModelConfig(motion_points=1, output="compose", condition="none", motion_points_finder="sift")


def test_motion_points_train_by_the_found_points_and_predict_by_their_own():
    """Training draws the ground truth's points (the point head only meets the point loss); prediction draws the
    points it predicts, which start as the previous frame's."""
    model = _motion_points_model()
    x = _frames(T=5)
    torch.manual_seed(1)
    before = model(x, None, 2)
    h, _ = model.encode(x)
    g, z = torch.randn(2, 16), torch.randn(2, model.cfg.z_dim)
    assert torch.equal(model.step_points(h[:, 1], g, z), model.points_of(h[:, 1]).float())   # zero step at first
    h_prev = h[:, 1].detach().requires_grad_()
    model.step_points(h_prev, g, z).sum().backward()   # the point loss does not teach points that stand still
    assert h_prev.grad is None or not h_prev.grad.any()
    model.eval()
    want = model.predict(x[:, :2], None, 2, z_mode="mean")
    with torch.no_grad():
        model.point_head.bias.fill_(0.3)
    assert not torch.allclose(model.predict(x[:, :2], None, 2, z_mode="mean"), want)
    model.train()
    torch.manual_seed(1)
    after = model(x, None, 2)
    assert torch.equal(after["x_hat"], before["x_hat"])          # teacher-forced drawing: the found points
    assert after["points"] > before["points"] + 0.3 ** 2 * 4 * 0.5   # each step's points are now 0.3 off
    own = model(x, None, 2, teacher_forcing=False)["points"]
    assert own.requires_grad and own > 0


def test_draw_predicted_points_trains_on_what_prediction_draws():
    """With draw_predicted_points the teacher-forced frames are drawn at the predicted points, so the image loss
    reaches the point head (and through it z), as prediction would draw them."""
    model = _motion_points_model(draw_predicted_points=1.0)
    x = _frames(T=5)
    torch.manual_seed(1)
    before = model(x, None, 2)["x_hat"]
    with torch.no_grad():
        model.point_head.bias.fill_(0.3)
    torch.manual_seed(1)
    out = model(x, None, 2)
    assert not torch.allclose(out["x_hat"], before)
    out["recon"].backward()
    assert model.point_head.weight.grad.abs().sum() > 0
    for bad in ({}, {"motion_points": 2, "output": "compose", "condition": "none"}):
        with pytest.raises(ValueError, match="draw_predicted_points"):
            ModelConfig(draw_predicted_points=1.5 if bad else 1.0, **bad)
    half, found = _motion_points_model(draw_predicted_points=0.5), _motion_points_model()   # the same weights
    with torch.no_grad():
        for m in (half, found):
            m.point_head.bias.fill_(0.3)
    with mock.patch.object(svg, "reparameterize", lambda mu, logvar, generator=None: mu):
        want = found(x, None, 2)["x_hat"]
        drew_found = []
        for seed in range(8):   # about half the batches draw the found points, as the global RNG decides
            torch.manual_seed(seed)
            drew_found.append(torch.equal(half(x, None, 2)["x_hat"], want))
    assert 0 < sum(drew_found) < 8


def test_without_finder_from_drawn_frame_the_finder_learns_only_from_the_skip_frame_and_the_predictor():
    x = _frames(T=5)
    grads = {}
    for flag in (True, False):
        model = _motion_points_model(finder_from_drawn_frame=flag)
        torch.manual_seed(1)
        out = model(x, None, 2)
        assert flag or torch.equal(out["x_hat"], grads[True][0])   # the same frames, another gradient
        out["recon"].backward()
        grads[flag] = out["x_hat"].detach(), model.motion_points.points.conv.weight.grad.clone()
    assert not torch.allclose(grads[True][1], grads[False][1]) and grads[False][1].abs().sum() > 0
    with pytest.raises(ValueError, match="finder_from_drawn_frame"):
        ModelConfig(finder_from_drawn_frame=False)


def test_the_training_loss_includes_the_point_loss():
    from cvae_video.runtime import autocast, grad_scaler
    from cvae_video.train import build_optimizer, train_step
    cfg = TrainConfig(model=ModelConfig(condition="none", output="compose", motion_points=2))
    model = _motion_points_model()
    with torch.no_grad():
        model.point_head.bias.fill_(0.5)   # a clear point error
    batch = {"frames": (_frames(T=5) * 255).to(torch.uint8), "cond": torch.zeros(2, 5, 0)}
    optimizer = build_optimizer(cfg, model.parameters())
    optimizer.step = lambda *a, **k: None
    torch.manual_seed(1)
    logs = train_step(model, optimizer, grad_scaler(torch.device("cpu"), "fp32"), batch, cfg, beta=0.0, tfr=1.0,
                      device=torch.device("cpu"), amp=autocast(torch.device("cpu"), "fp32"))
    assert logs["loss"] > logs["mse"] * 4 + 0.2   # 4 steps, each with its points 0.5 off
    assert logs["points"] > 0.2 and logs["loss"] == pytest.approx(4 * (logs["mse"] + logs["points"]))   # per step
    assert model.point_head.weight.grad.abs().sum() > 0


def test_the_found_points_acceleration_is_their_second_difference():
    model = _motion_points_model()
    B, L, K = 3, 6, model.cfg.motion_points
    h = torch.zeros(B, L, model.cfg.g_dim + 2 * K)
    t = torch.arange(L, dtype=torch.float32)
    h[..., -2 * K:] = (0.1 * t[:, None] - 0.3) * torch.linspace(-1, 1, 2 * K)   # steady motion: no acceleration
    assert model.point_acceleration(h).item() == pytest.approx(0.0, abs=1e-10)
    h[:, 3, -1] += 0.4   # one coordinate jumps at frame 3 and back: second differences 0.4, -0.8, 0.4 around it
    assert model.point_acceleration(h).item() == pytest.approx(6 * 0.4 ** 2 / (2 * K))
    x = _frames(T=5)
    out = model(x, None, 2)
    assert out["point_accel"].item() == pytest.approx(model.point_acceleration(model.encode(x)[0]).item())


def _one_finder_step(**train):
    """One training step of the same two-point model from the same numbers, under TrainConfig(**train): the step's
    logs, the finder's gradient and the model. ``smoothness`` is passed to the step as the loop passes it."""
    from cvae_video.runtime import autocast, grad_scaler
    from cvae_video.train import build_optimizer, train_step
    batch = {"frames": (_frames(T=5) * 255).to(torch.uint8), "cond": torch.zeros(2, 5, 0)}
    cfg = TrainConfig(model=ModelConfig(condition="none", output="compose", motion_points=2), **train)
    torch.manual_seed(0)
    model = _motion_points_model()
    optimizer = build_optimizer(cfg, model.parameters())
    optimizer.step = lambda *a, **k: None
    torch.manual_seed(1)
    cpu = torch.device("cpu")
    logs = train_step(model, optimizer, grad_scaler(cpu, "fp32"), batch, cfg, beta=0.0, tfr=1.0, device=cpu,
                      amp=autocast(cpu, "fp32"), smoothness=train.get("point_smoothness", 0.0))
    return logs, model.motion_points.points.conv.weight.grad.clone(), model


def test_point_smoothness_adds_the_weighted_acceleration_and_teaches_the_finder():
    (plain, g0, _), (smooth, g2, _) = (_one_finder_step(point_smoothness=w) for w in (0.0, 2.0))
    assert plain["point_accel"] == smooth["point_accel"] > 0   # logged per step (3 of the 4 steps have one)
    assert smooth["loss"] == pytest.approx(plain["loss"] + 2.0 * 3 * plain["point_accel"])
    assert not torch.allclose(g0, g2)
    with pytest.raises(ConfigError, match="point_smoothness"):
        TrainConfig(point_smoothness=-1.0).validate()


def test_the_point_smoothness_weight_rises_with_the_kl_weight():
    from cvae_video.train import RunState, point_smoothness_weight
    cfg = TrainConfig(point_smoothness=0.03, kl_anneal_ratio=0.5, kl_anneal_cyclical=True, kl_weight_max=0.0)
    weight = lambda step: point_smoothness_weight(cfg, RunState(kl_total_steps=1000, step=step))
    assert weight(0) == 0.0 and weight(250) == pytest.approx(0.015)
    assert weight(500) == weight(999) == pytest.approx(0.03)   # monotonic, whatever the KL's cycles or maximum
    assert point_smoothness_weight(TrainConfig(), RunState(kl_total_steps=1000, step=600)) == 0.0


def test_a_map_with_one_peak_spreads_less_than_one_with_two():
    from cvae_video.models.svg import SpatialSoftmaxPoints
    finder = SpatialSoftmaxPoints(1, 1)
    with torch.no_grad():   # the map is the feature itself, sharpened
        finder.conv.weight.fill_(50.0)
        finder.conv.bias.zero_()
    f = torch.zeros(2, 1, 16, 16)
    f[0, 0, 8, 3] = 1.0                        # one peak
    f[1, 0, 8, 3] = f[1, 0, 8, 12] = 1.0       # two peaks on one row
    points, spread = finder.points_and_spread(f)
    assert torch.equal(points, finder(f))
    xs = torch.linspace(-1, 1, 16)
    assert points[0, 0].item() == pytest.approx(xs[3].item(), abs=1e-4)
    assert points[1, 0].item() == pytest.approx(((xs[3] + xs[12]) / 2).item(), abs=1e-4)   # between the two
    assert spread[0].item() == pytest.approx(0.0, abs=1e-4)
    assert spread[1].item() == pytest.approx(((xs[12] - xs[3]) / 2).item() ** 2, rel=1e-3)


def test_point_concentration_adds_the_weighted_spread():
    (plain, g0, _), (conc, g3, model) = (_one_finder_step(point_concentration=w) for w in (0.0, 3.0))
    assert "point_spread" not in plain and conc["point_spread"] > 0   # logged per frame, only when weighted
    x = (_frames(T=5) * 255).to(torch.uint8).float() / 255
    assert conc["point_spread"] == pytest.approx(model.point_spread(x).item() / 5, rel=1e-5)
    assert conc["loss"] == pytest.approx(plain["loss"] + 3.0 * 5 * conc["point_spread"], rel=1e-5)
    assert not torch.allclose(g0, g3)
    with pytest.raises(ConfigError, match="point_concentration"):
        TrainConfig(point_concentration=-0.1).validate()


@pytest.mark.parametrize("prior", ["fixed", "learned"])
def test_a_sequence_latent_is_one_draw_for_every_step(prior):
    model = tiny_model(condition="none", latent="sequence", prior=prior, motion_points=2, output="compose")
    x = _frames(T=6)
    out = model(x, None, n_past=2)
    kl_t = out["kl_per_step"]
    assert kl_t.shape == (5,) and torch.allclose(kl_t, kl_t[:1].expand(5))   # the sequence's KL, shared out
    assert torch.allclose(out["kl"], kl_t.sum())
    if prior == "learned":   # the balanced loss shares out the same KL
        cfg = TrainConfig(free_bits=0.0, kl_balance=0.5)
        assert torch.allclose(kl_term(out, cfg), out["kl"])
    model.eval()
    kl, mu = model.latent_stats(x, n_past=2)
    assert kl.shape == (2, 5) and mu.shape == (2, 5, model.cfg.z_dim)
    assert torch.allclose(mu, mu[:, :1].expand_as(mu))
    # every step of a sample sees the same z: record what the predictor receives
    seen = []
    hook = model.predictor.register_forward_hook(lambda m, args, _: seen.append(args[0]))
    model.predict(x[:, :2], None, 3, n_samples=2, generator=torch.Generator().manual_seed(0))
    hook.remove()
    h_dim = model.cfg.g_dim + 2 * model.cfg.motion_points
    zs = torch.cat([s.reshape(4, -1, s.shape[-1])[..., h_dim:h_dim + model.cfg.z_dim] for s in seen], 1)
    assert zs.shape[1] == 4                              # one warm-up step and three predicted steps
    assert torch.allclose(zs, zs[:, :1].expand_as(zs))   # the same z at every step ...
    assert not torch.allclose(zs[0], zs[1])              # ... and another for the other sample
    with pytest.raises(ValueError, match="latent"):
        ModelConfig(latent="frame")


def test_shift_by_points_moves_what_is_at_a_point_to_where_it_goes():
    frame = torch.zeros(1, 3, 32, 32)
    frame[0, :, 8, 4] = 1.0                                   # row 8, column 4
    r = torch.linspace(-1, 1, 32)
    src = torch.stack([r[4], r[8], r[0], r[0]])               # point 0 at the bright pixel, point 1 anywhere
    now = torch.stack([r[20], r[12], r[0], r[0]])             # point 0 moved to row 12, column 20; point 1 still
    moved = svg.shift_by_points(frame, torch.cat([now, src])[None])
    assert moved.shape == (1, 2, 3, 32, 32)
    assert moved[0, 0, :, 12, 20].min() > 0.99 and moved[0, 0].sum() < 3.01    # the pixel, moved, not smeared
    assert torch.allclose(moved[0, 1], frame[0], atol=1e-6)                     # a point that stays: no move


def test_point_warp_mixes_moved_skip_frames_into_the_output():
    model = tiny_model(condition="none", output="compose", motion_points=2, point_warp=True).eval()
    x = _frames(T=5)
    want = model.predict(x[:, :2], None, 2, z_mode="mean")
    moves = []
    real = svg.shift_by_points

    def dark(frame, c):   # the moved copies, recorded, and replaced by black frames
        moves.append(c.chunk(2, -1)[0] - c.chunk(2, -1)[1])
        return torch.zeros_like(real(frame, c))

    with mock.patch.object(svg, "shift_by_points", dark):
        darker = model.predict(x[:, :2], None, 2, z_mode="mean")
    assert (darker < want - 1e-4).any() and not (darker > want + 1e-4).any()   # the copies are in the mixture
    with torch.no_grad():   # the points predicted to move: the copies move by what the model predicts
        model.point_head.bias.fill_(0.25)
    with mock.patch.object(svg, "shift_by_points", dark):
        model.predict(x[:, :2], None, 1, z_mode="mean")
    assert torch.allclose(moves[-1], torch.full_like(moves[-1], 0.25), atol=1e-5)
    out = model(x, None, n_past=2)
    assert out["x_hat"].shape == (2, 4, 3, 64, 64) and torch.isfinite(out["recon"])
    with pytest.raises(ValueError, match="point_warp"):
        ModelConfig(point_warp=True, output="compose")
    with pytest.raises(ValueError, match="point_warp"):
        ModelConfig(point_warp=True, motion_points=2, output="direct")


def test_point_tracking_tells_a_point_that_follows_the_arm_from_one_that_hops():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "scripts" / "point_tracking.py"
    spec = importlib.util.spec_from_file_location("point_tracking", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    model = _motion_points_model().eval()
    B, T = 4, 5
    g = torch.Generator().manual_seed(0)
    positions = torch.randn(B, T, 3, generator=g)
    follows = positions[..., :2] @ torch.tensor([[0.3, 0.1], [-0.2, 0.4]]) + 0.1   # affine in the arm's position
    hops = torch.randn(B, T, 2, generator=g)
    found = torch.cat([follows, hops], -1)
    encode = model.encode

    def encode_with_these_points(x):   # the frames' encodings, with the points above in place of those found
        h, skips = encode(x)
        return torch.cat([h[..., :-found.shape[-1]], found.to(h.dtype)], -1), skips
    with mock.patch.object(model, "encode", encode_with_these_points):
        rows, loss = script.point_tracking(model, _frames(B=B, T=T), positions)
    assert rows[0]["r2_x"] > 0.999 and rows[0]["r2_y"] > 0.999
    assert rows[1]["r2_x"] < 0.9 and rows[1]["jump"] > rows[1]["motion"]
    assert loss > 0
    found[:, 0, :2] = 0.0   # the first frame's point at the centre, as a finder of the change puts it
    with mock.patch.object(model, "encode", encode_with_these_points):
        rows, _ = script.point_tracking(model, _frames(B=B, T=T), positions)
        later, _ = script.point_tracking(model, _frames(B=B, T=T), positions, first=1)
    assert rows[0]["r2_x"] < 0.99 and later[0]["r2_x"] > 0.999 and later[0]["r2_y"] > 0.999
