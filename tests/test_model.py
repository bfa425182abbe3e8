import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from cvae_video.models.backbones import build_backbone
from cvae_video.models.rnn import gaussian_kl, reparameterize
from cvae_video.models.svg import ModelConfig, _frames
from helpers import tiny_model


def test_kl_matches_closed_form_and_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(5, 7, generator=g) for _ in range(4))
    ours = gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    ref = kl_divergence(Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp())).sum(-1)
    assert torch.allclose(ours, ref, atol=1e-5)
    # against N(0, 1): 0.5 * sum(mu^2 + var - logvar - 1)
    closed = 0.5 * (mu_q ** 2 + lv_q.exp() - lv_q - 1).sum(-1)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, torch.zeros_like(mu_q), torch.zeros_like(lv_q)), closed,
                          atol=1e-5)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, mu_q, lv_q), torch.zeros(5), atol=1e-6)


def test_reparameterization_statistics():
    mu = torch.tensor([1.0, -2.0, 0.5]).expand(200_000, 3)
    logvar = torch.tensor([0.0, 2.0, -2.0]).expand(200_000, 3)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), mu[0], atol=0.02)
    assert torch.allclose(z.std(0), (0.5 * logvar[0]).exp(), rtol=0.02)


@pytest.mark.parametrize("prior", ["fixed", "learned"])
@pytest.mark.parametrize("backbone", ["dcgan", "vgg"])
@pytest.mark.parametrize("output", ["direct", "compose"])
def test_shapes(prior, backbone, output):
    model = tiny_model(prior=prior, backbone=backbone, output=output)
    x, cond = torch.rand(2, 5, 3, 64, 64), torch.randn(2, 5, 7)
    for tf in (True, False, torch.tensor([True, False])):
        out = model(x, cond, n_past=2, teacher_forcing=tf)
        assert out["x_hat"].shape == (2, 4, 3, 64, 64)
        assert out["recon_per_step"].shape == out["kl_per_step"].shape == (4,)
        assert out["recon"].dim() == 0 and torch.isfinite(out["recon"] + out["kl"])
    model.eval()
    pred = model.predict(x[:, :2], cond, n_future=3, n_samples=4)
    assert pred.shape == (2, 4, 3, 3, 64, 64)
    assert 0 <= pred.min() and pred.max() <= 1


@pytest.mark.parametrize("prior", ["fixed", "learned"])
@pytest.mark.parametrize("teacher_forcing", [True, False])
@pytest.mark.parametrize("last_frame_skip", [False, True])
@pytest.mark.parametrize("output", ["direct", "compose"])
@pytest.mark.parametrize("spatial", [{}, {"spatial_cond": True}, {"spatial_cond": True, "keypoints": 2},
                                     {"motion_kernels": 2}])
def test_every_parameter_gets_a_gradient(prior, teacher_forcing, last_frame_skip, output, spatial):
    if spatial.get("motion_kernels") and output != "compose":
        pytest.skip("motion kernels go with the compose output")
    model = tiny_model(prior=prior, last_frame_skip=last_frame_skip, output=output, **spatial)
    x, cond = torch.rand(3, 5, 3, 64, 64), torch.randn(3, 5, 7)
    out = model(x, cond, n_past=2, teacher_forcing=teacher_forcing)
    (out["recon"] + out["kl"]).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_tiny_model_overfits_one_batch():
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    # smooth frames (8x8 noise upsampled): fittable by a tiny decoder
    x = torch.nn.functional.interpolate(torch.rand(8, 3, 8, 8, generator=g), size=64, mode="bilinear")
    x, cond = x.view(2, 4, 3, 64, 64), torch.randn(2, 4, 7, generator=g)
    losses = []
    for _ in range(150):
        out = model(x, cond, n_past=2)
        loss = out["recon"] + 1e-3 * out["kl"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.35 * losses[0], (losses[0], losses[-1])


def test_sequence_and_stepwise_teacher_forcing_agree_in_eval_mode():
    """The batched teacher-forced path equals the step-by-step path with every sample teacher-forced."""
    model = tiny_model(prior="learned").eval()
    x, cond = torch.rand(2, 6, 3, 64, 64), torch.randn(2, 6, 7)
    torch.manual_seed(5)
    a = model(x, cond, 2, True)
    torch.manual_seed(5)
    # a per-sample mask with one sample off forces the stepwise path; compare the teacher-forced sample
    b = model(x, cond, 2, torch.tensor([True, False]))
    assert torch.allclose(a["x_hat"][0], b["x_hat"][0], atol=1e-5)
    assert not torch.equal(a["x_hat"][1, 2:], b["x_hat"][1, 2:])  # that sample saw its own predictions


def test_prediction_is_reproducible_and_mean_mode_is_deterministic():
    model = tiny_model(prior="learned").eval()
    x, cond = torch.rand(2, 2, 3, 64, 64), torch.randn(2, 6, 7)
    p1 = model.predict(x, cond, 4, n_samples=3, generator=torch.Generator().manual_seed(3))
    p2 = model.predict(x, cond, 4, n_samples=3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(p1, p2)
    assert not torch.equal(p1[:, 0], p1[:, 1])  # samples differ
    m1 = model.predict(x, cond, 4, n_samples=2, z_mode="mean", generator=torch.Generator().manual_seed(1))
    m2 = model.predict(x, cond, 4, n_samples=2, z_mode="mean", generator=torch.Generator().manual_seed(7))
    assert torch.equal(m1, m2)   # another seed: the mean mode draws nothing
    assert torch.equal(m1[:, 0], m1[:, 1])


def _ignore_condition(model):
    """Make ``model`` blind to its condition: zero the predictor's input weights for it."""
    with torch.no_grad():
        model.predictor.embed.weight[:, -model.cfg.cond_dim:] = 0
    return model


@pytest.mark.parametrize("spatial_cond", [False, True])
def test_condition_changes_the_prediction(spatial_cond):
    model = tiny_model(spatial_cond=spatial_cond).eval()
    x, cond = torch.rand(1, 2, 3, 64, 64), torch.randn(1, 5, 7)
    a = model.predict(x, cond, 3, z_mode="mean", generator=torch.Generator().manual_seed(0))
    b = model.predict(x, cond + 3.0, 3, z_mode="mean", generator=torch.Generator().manual_seed(1))
    assert (a - b).abs().max() > 1e-6   # an untrained model: small, but far above rounding (0 when blind)
    if not spatial_cond:   # the check itself: a model blind to its condition predicts the same
        blind = _ignore_condition(model)
        a = blind.predict(x, cond, 3, z_mode="mean", generator=torch.Generator().manual_seed(0))
        b = blind.predict(x, cond + 3.0, 3, z_mode="mean", generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b)


@pytest.mark.parametrize("prior", ["fixed", "learned"])
def test_mean_mode_ignores_the_generator_in_the_warm_up_too(prior):
    model = tiny_model(prior=prior).eval()
    with torch.no_grad():   # a wide posterior: sampled warm-up latents would move the prediction
        model.posterior.logvar.bias.fill_(4.0)
    x, cond = torch.rand(2, 3, 3, 64, 64), torch.randn(2, 6, 7)
    a = model.predict(x, cond, 3, z_mode="mean", generator=torch.Generator().manual_seed(0))
    b = model.predict(x, cond, 3, z_mode="mean", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    s = model.predict(x, cond, 3, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a[:, 0], s[:, 0])


@pytest.mark.parametrize("prior", ["fixed", "learned"])
def test_latent_kl_matches_the_training_forward(prior):
    model = tiny_model(prior=prior).eval()
    x, cond = torch.rand(3, 5, 3, 64, 64), torch.randn(3, 5, 7)
    kl = model.latent_kl(x)
    assert kl.shape == (3, 4) and (kl >= 0).all()
    assert torch.allclose(kl.mean(0), model(x, cond, 2, True)["kl_per_step"], atol=1e-5)


@pytest.mark.parametrize("backbone", ["dcgan", "vgg"])
@pytest.mark.parametrize("n_maps", [0, 3])
def test_spatial_condition_terms_equal_the_concatenated_maps(backbone, n_maps):
    """The coordinate and condition channels' part computed without maps: same output and gradients as
    convolving the broadcast maps (and the per-frame condition maps), in training mode. In float64: the two
    sums differ only by rounding, which BatchNorm's backward amplifies in float32."""
    torch.manual_seed(0)
    encoder, decoder = build_backbone(backbone, g_dim=16, width=0.25, cond_channels=5, map_channels=n_maps)
    encoder, decoder = encoder.double(), decoder.double()
    _, skips = encoder(torch.rand(6, 3, 64, 64, dtype=torch.float64))
    skips = [s.detach() for s in skips]
    h = torch.randn(6, 16, dtype=torch.float64)
    c = torch.randn(6, 5, requires_grad=True, dtype=torch.float64)
    base = torch.rand(6, n_maps, 64, 64, dtype=torch.float64)
    maps = (lambda size: torch.nn.functional.interpolate(base, size=size, mode="area")) if n_maps else None
    inputs = [c, *decoder.parameters()]
    weights = torch.rand(6, 3, 64, 64, dtype=torch.float64)
    ours, plain = decoder(h, skips, c, maps), decoder.forward_concat(h, skips, c, maps)
    assert torch.allclose(ours, plain, atol=1e-12)
    for a, b in zip(torch.autograd.grad((ours * weights).sum(), inputs),
                    torch.autograd.grad((plain * weights).sum(), inputs)):
        assert (a - b).abs().max() <= 1e-10 * b.abs().max(), (a - b).abs().max() / b.abs().max()
    # the coordinates matter: a decoder whose maps were all constant could not tell left from right
    flip = (lambda size: maps(size).flip(-1)) if n_maps else None
    flipped = decoder.forward_concat(h, [s.flip(-1) for s in skips], c, flip).flip(-1)
    assert not torch.allclose(ours, flipped, atol=1e-4)
    with pytest.raises(ValueError, match="condition of 5"):
        decoder(h, skips)
    if n_maps:
        with pytest.raises(ValueError, match="3 condition maps"):
            decoder(h, skips, c)


@pytest.mark.parametrize("backbone", ["dcgan", "vgg"])
def test_separable_maps_give_the_decoder_of_their_built_maps(backbone):
    """Maps given as their row and column profiles are convolved without being built (dcgan's last convolution,
    every stage of vgg's): the decoder's output and gradients equal those of the reference decoder that
    concatenates the built maps. A tap or padding off by one, or x and y swapped, would move every blob."""
    from cvae_video.models.backbones import SeparableMaps
    torch.manual_seed(0)
    encoder, decoder = build_backbone(backbone, g_dim=16, width=0.25, cond_channels=5, map_channels=4)
    encoder, decoder = encoder.double(), decoder.double()
    _, skips = encoder(torch.rand(6, 3, 64, 64, dtype=torch.float64))
    skips = [s.detach() for s in skips]
    h = torch.randn(6, 16, dtype=torch.float64)
    c = torch.randn(6, 5, dtype=torch.float64)
    centres = torch.rand(2, 6, 4, 1, dtype=torch.float64, requires_grad=True)   # asymmetric profiles, y apart from x

    def maps(size):
        r = torch.linspace(0, 1, size, dtype=torch.float64)
        return SeparableMaps(gy=torch.exp(-30 * (r - centres[0]) ** 2), gx=torch.exp(-9 * (r - centres[1]) ** 3) ** 2)
    inputs = [centres, *decoder.parameters()]
    weights = torch.rand(6, 3, 64, 64, dtype=torch.float64)
    ours, plain = decoder(h, skips, c, maps), decoder.forward_concat(h, skips, c, lambda size: maps(size).dense())
    assert torch.allclose(ours, plain, atol=1e-12)
    for a, b in zip(torch.autograd.grad((ours * weights).sum(), inputs),
                    torch.autograd.grad((plain * weights).sum(), inputs)):
        assert (a - b).abs().max() <= 1e-10 * b.abs().max(), (a - b).abs().max() / b.abs().max()
    swapped = decoder.forward_concat(h, skips, c, lambda size: maps(size).dense().transpose(-1, -2))
    assert not torch.allclose(ours, swapped, atol=1e-4)


def test_condition_keypoints_are_blobs_at_affine_points():
    from cvae_video.models.svg import ConditionKeypoints
    kp = ConditionKeypoints(cond_dim=3, n=2, init_sigma=0.1)
    with torch.no_grad():
        kp.proj.weight.zero_()
        kp.proj.bias.copy_(torch.tensor([-0.5, 0.25, 0.0, 0.0]))   # point 0 at x=-0.5, y=0.25; point 1 centred
        kp.proj.weight[0, 0] = 1.0                                  # point 0's x follows c[0]
    c = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    maps = kp(c, 33)                                    # pixel centres at -1, -15/16, ..., 1: a pixel at each point
    assert maps.shape == (2, 2, 33, 33)
    r = torch.linspace(-1, 1, 33)
    for n, x0 in ((0, -0.5), (1, 0.0)):
        row, col = divmod(int(maps[n, 0].argmax()), 33)
        assert (r[col].item(), r[row].item()) == pytest.approx((x0, 0.25))
    assert maps[0, 0, 20, 8].item() == pytest.approx(math.exp(-((r[8] + 0.5) ** 2 + (r[20] - 0.25) ** 2) / 0.02),
                                                     rel=1e-5)
    assert maps[:, 1].argmax().item() == 16 * 33 + 16   # the centred point
    with pytest.raises(ValueError, match="need spatial_cond"):
        ModelConfig(keypoints=2)


@pytest.mark.parametrize("output", ["direct", "compose"])
def test_spatial_condition_reaches_the_decoder(output):
    """With spatial_cond the frame depends on the condition even with the predictor blind to it."""
    model = _ignore_condition(tiny_model(spatial_cond=True, output=output)).eval()
    x, cond = torch.rand(1, 2, 3, 64, 64), torch.randn(1, 5, 7)
    a = model.predict(x, cond, 3, z_mode="mean")
    b = model.predict(x, cond + 1.0, 3, z_mode="mean")
    assert (a - b).abs().max() > 1e-4
    out = model.train()(torch.rand(2, 5, 3, 64, 64), torch.randn(2, 5, 7), 2, False)
    (out["recon"] + out["kl"]).backward()
    for name, p in model.decoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_compose_output_copies_the_skip_frame_where_the_mask_is_one():
    model = tiny_model(output="compose").eval()
    last = model.decoder.last[0]
    with torch.no_grad():  # mask logit +30 everywhere: the output is the skip frame
        last.weight[-1].zero_()
        last.bias[-1] = 30.0
    x, cond = torch.rand(2, 2, 3, 64, 64), torch.randn(2, 5, 7)
    pred = model.predict(x, cond, 3, z_mode="mean")
    assert torch.allclose(pred[:, 0], x[:, 1:2].expand(-1, 3, -1, -1, -1), atol=1e-6)


@pytest.mark.parametrize("backbone", ["dcgan", "vgg"])
def test_decoder_with_skip_terms_equals_the_concatenating_decoder(backbone):
    """Skip parts computed apart (and, in vgg, upsample + conv3x3 as one transposed conv): same output, same
    gradients as the plain decoder over concatenations, in training mode."""
    torch.manual_seed(0)
    encoder, decoder = build_backbone(backbone, g_dim=16, width=0.25)
    _, skips = encoder(torch.rand(6, 3, 64, 64))
    skips = [s.detach().requires_grad_() for s in skips]
    h = torch.randn(6, 16, requires_grad=True)
    inputs = [h, *skips, *decoder.parameters()]
    weights = torch.rand(6, 3, 64, 64)
    ours, plain = decoder(h, skips), decoder.forward_concat(h, skips)
    assert torch.allclose(ours, plain, atol=1e-5)
    for a, b in zip(torch.autograd.grad((ours * weights).sum(), inputs),
                    torch.autograd.grad((plain * weights).sum(), inputs)):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max(), (a - b).abs().max() / b.abs().max()


@pytest.mark.parametrize("backbone", ["dcgan", "vgg"])
def test_skip_terms_of_one_frame_serve_its_consecutive_rows(backbone):
    torch.manual_seed(0)
    encoder, decoder = build_backbone(backbone, g_dim=16, width=0.25)
    encoder.eval(), decoder.eval()
    with torch.no_grad():
        _, skips = encoder(torch.rand(2, 3, 64, 64))
        h = torch.randn(6, 16)                         # rows 0-2 belong to frame 0, rows 3-5 to frame 1
        shared = decoder.decode(h, decoder.skip_terms(skips))
        plain = decoder.forward_concat(h, [s.repeat_interleave(3, 0) for s in skips])
        assert torch.allclose(shared, plain, atol=1e-5)
        with pytest.raises(ValueError, match="cannot share"):
            decoder.decode(torch.randn(5, 16), decoder.skip_terms(skips))


@pytest.mark.parametrize("index", [1, [0, 1], [0, 1, 1, 3]])
def test_frame_selection_keeps_channels_last_forward_and_backward(index):
    base = torch.randn(8, 6, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    x = base.unflatten(0, (2, 4))                      # (B, L, C, H, W) view of channels-last maps
    y = _frames(x, index)
    assert torch.equal(y, x[:, index])
    assert y.stride(-3) == 1 and y.stride(-1) == y.shape[-3]   # channels innermost: laid out channels-last
    w = torch.randn(y.shape)
    grad, = torch.autograd.grad((y * w).sum(), base)
    ref, = torch.autograd.grad((x[:, index] * w).sum(), base)
    assert grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(grad, ref)


def test_motion_kernels_move_the_previous_frame():
    from cvae_video.models.svg import MotionKernels
    mk = MotionKernels(g_dim=4, n=2)
    k = mk.SIZE
    with torch.no_grad():
        mk.head.weight.zero_()
        mk.head.bias.fill_(-50.0)
        mk.head.bias.view(2, k, k)[0, k // 2, k // 2 + 2] = 50.0   # kernel 0: weight at offset (0, +2)
        mk.head.bias.view(2, k, k)[1, k // 2, k // 2] = 50.0       # kernel 1: the identity
    prev = torch.rand(3, 3, 16, 16)
    moved = mk(torch.zeros(3, 4), prev)
    assert moved.shape == (3, 2, 3, 16, 16)
    assert torch.allclose(moved[:, 1], prev, atol=1e-5)
    # output pixel (i, j) takes input (i, j + 2): the picture moves two pixels to the left
    assert torch.allclose(moved[:, 0, :, :, :-2], prev[:, :, :, 2:], atol=1e-5)
    assert torch.allclose(moved[:, 0, :, :, -2:], prev[:, :, :, -1:].expand(-1, -1, -1, 2), atol=1e-5)  # edge
    kern = MotionKernels(g_dim=4, n=3).kernels(torch.randn(5, 4))
    assert torch.allclose(kern.sum((-1, -2)), torch.ones(5, 3)) and (kern >= 0).all()


def test_motion_output_uses_the_previous_frame_of_every_step():
    """Prediction feeds its own last frame to the kernels; training feeds the ground truth under teacher forcing:
    with the weights on the moved frames only and identity kernels, each frame repeats the one before it."""
    model = tiny_model(output="compose", motion_kernels=1).eval()
    with torch.no_grad():
        last = model.decoder.last[0]
        last.weight[3:].zero_()
        last.bias[3:] = torch.tensor([-30.0, -30.0, 30.0])       # weights: skip frame, colours, moved frame
        model.motion.head.weight.zero_()
        model.motion.head.bias.fill_(-50.0)
        model.motion.head.bias.view(1, 81)[0, 40] = 50.0
    x, cond = torch.rand(2, 5, 3, 64, 64), torch.randn(2, 5, 7)
    pred = model.predict(x[:, :2], cond, 3)
    assert torch.allclose(pred[:, 0], x[:, 1:2].expand(-1, 3, -1, -1, -1), atol=1e-4)
    out = model(x, cond, 2, True)
    assert torch.allclose(out["x_hat"], x[:, :-1], atol=1e-4)
    with pytest.raises(ValueError, match="need output 'compose'"):
        ModelConfig(motion_kernels=2)


def test_parameter_names_are_those_checkpoints_hold():
    """The decoder's named conv/BatchNorm/activation blocks keep Sequential names, so that checkpoints written
    before they had names still load."""
    for backbone in ("vgg", "dcgan"):
        names = set(tiny_model(backbone=backbone).state_dict())
        assert {"decoder.inp.0.weight", "decoder.inp.1.running_mean", "encoder.out.0.weight"} <= names
    vgg = set(tiny_model(backbone="vgg").state_dict())
    assert {"decoder.blocks.0.0.0.weight", "decoder.blocks.0.0.1.running_var", "decoder.last.0.0.weight"} <= vgg
    assert {"decoder.blocks.1.0.weight", "decoder.blocks.1.1.bias"} <= set(tiny_model(backbone="dcgan").state_dict())
