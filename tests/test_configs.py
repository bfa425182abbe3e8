"""The shipped configs parse, build their model, and run one training step."""

from pathlib import Path

import pytest
import torch

from cvae_video import config as config_mod
from cvae_video.models import CVAE
from cvae_video.runtime import autocast, grad_scaler
from cvae_video.train import build_optimizer, train_step

CONFIG_DIR = Path(__file__).parent.parent / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.toml") if p.stem != "study")


def test_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"demo", "lab_fp_cyclical", "lab_fp_monotonic", "lab_lp"} <= names


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
    logs = train_step(model, opt, grad_scaler(device, cfg.precision), batch, cfg, beta=0.5, tfr=cfg.tfr,
                      device=device, amp=autocast(device, cfg.precision))
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_study_plans_one_run_per_distinct_setting(tmp_path):
    from cvae_video import ablate
    settings, factors = ablate.load_study(CONFIG_DIR / "study.toml")
    runs, by_factor = ablate.plan_runs(settings["base"], factors, tmp_path)
    assert len(runs) == 1 + sum(len(f.values) - 1 for f in factors)  # the base run is shared
    assert all(ids[0] == "base" for ids in by_factor.values())
