"""The shipped configs parse, build their model, and run one training step."""

from pathlib import Path

import pytest
import torch

from cvae_video import config as config_mod
from cvae_video.models import CVAE
from cvae_video.runtime import autocast, choose_precision, grad_scaler
from cvae_video.train import build_optimizer, train_step

CONFIG_DIR = Path(__file__).parent.parent / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.toml") if p.stem != "study")


def _cfg(name: str) -> dict:
    """The config's keys, flat (as flags name them)."""
    return config_mod.from_dict(config_mod.load_toml(CONFIG_DIR / f"{name}.toml"), name).flat()


@pytest.mark.parametrize("name", ["lab_fp_cyclical", "lab_fp_monotonic", "lab_lp"])
def test_lab_configs_keep_the_lab_model(name):
    """A student reproduces the lab: the plain SVG model at the lab's sizes, KL weight up to 1."""
    cfg = _cfg(name)
    model = (cfg["backbone"], cfg["width"], cfg["output"], cfg["spatial_cond"], cfg["keypoints"])
    assert model == ("vgg", 1.0, "direct", False, 0)
    assert (cfg["g_dim"], cfg["z_dim"], cfg["rnn_size"], cfg["batch_size"], cfg["lr"]) == (128, 64, 256, 16, 0.002)
    assert cfg["kl_weight_max"] == 1.0 and cfg["free_bits"] == 0.0
    assert cfg["prior"] == ("learned" if name == "lab_lp" else "fixed")
    if name != "lab_lp":   # the two fixed-prior runs differ in the KL schedule only
        assert cfg["kl_anneal_cyclical"] == (name == "lab_fp_cyclical")


def test_demo_and_full_size_configs_use_the_measured_model():
    """The model options that measurement picked (docs/demo.md, "How the demo model was chosen") are in the demo and
    in the full-size config for GPUs, which differs from the demo in size and length only."""
    demo, full = _cfg("demo"), _cfg("full_keypoints")
    for cfg in (demo, full):
        assert cfg["output"] == "compose" and cfg["spatial_cond"] and cfg["keypoints"] > 0 and cfg["free_bits"] > 0
    assert (full["backbone"], full["width"], full["z_dim"], full["rnn_size"]) == ("vgg", 1.0, 64, 256)
    same = ("output", "spatial_cond", "keypoints", "kl_weight_max", "free_bits", "prior", "tfr")
    assert {k: demo[k] for k in same} == {k: full[k] for k in same}


def test_action_free_demo_keeps_the_measured_latent():
    """The action-free demo sees frames only and keeps the latent that measurement found live (docs/latent.md):
    one z per sequence, kept to a few nats by its KL weight and small free bits, the change's centroid as the image
    point drawn from z, fp32."""
    cfg = _cfg("demo_action_free")
    assert cfg["condition"] == "none" and not cfg["spatial_cond"] and cfg["keypoints"] == 0
    assert (cfg["latent"], cfg["motion_points"], cfg["motion_points_finder"]) == ("sequence", 1, "change")
    assert (cfg["kl_weight_max"], cfg["free_bits"]) == (0.01, 0.2)
    assert cfg["precision"] == "fp32"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_runs_one_step(path):
    cfg = config_mod.from_dict(config_mod.load_toml(path) | {"batch_size": 2}, str(path))
    torch.manual_seed(0)
    model = CVAE(cfg.model_config())
    opt = build_optimizer(cfg, model.parameters())
    device = torch.device("cpu")
    T = cfg.n_past + cfg.n_future
    batch = {"frames": torch.randint(0, 256, (2, T, 3, 64, 64), dtype=torch.uint8), "cond": torch.randn(2, T, 7)}
    before = [p.detach().clone() for p in model.parameters()]
    precision = choose_precision(cfg.precision, device).precision   # auto without a probe: fp32
    logs = train_step(model, opt, grad_scaler(device, precision), batch, cfg, beta=0.5, tfr=cfg.tfr,
                      device=device, amp=autocast(device, precision))
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_study_plans_one_run_per_distinct_setting(tmp_path):
    from cvae_video import ablate
    settings, factors = ablate.load_study(CONFIG_DIR / "study.toml")
    runs, by_factor = ablate.plan_runs(settings["base"], factors, tmp_path)
    assert len(runs) == 1 + sum(len(f.values) - 1 for f in factors)  # the base run is shared
    assert all(ids[0] == "base" for ids in by_factor.values())
