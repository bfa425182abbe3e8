import argparse

import pytest

from cvae_video import config as config_mod
from cvae_video.errors import ConfigError
from cvae_video.runtime import resolve_device


def parse(argv):
    p = argparse.ArgumentParser()
    config_mod.add_arguments(p)
    return config_mod.resolve(p.parse_args(argv))


def test_defaults_are_the_lab_values():
    cfg = parse([])
    assert (cfg.lr, cfg.beta1, cfg.g_dim, cfg.z_dim, cfg.rnn_size) == (0.002, 0.9, 128, 64, 256)
    assert (cfg.n_past, cfg.n_future, cfg.posterior_rnn_layers, cfg.predictor_rnn_layers) == (2, 10, 1, 2)
    assert cfg.prior == "fixed" and cfg.backbone == "vgg" and cfg.kl_weight_max == 1.0


def test_flags_override_file_which_overrides_defaults(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('lr = 0.01\nbatch_size = 8\n[model]\nprior = "learned"\nz_dim = 10\n')
    cfg = parse(["--config", str(f), "--batch_size", "4", "--last_frame_skip"])
    assert cfg.lr == 0.01 and cfg.batch_size == 4 and cfg.prior == "learned" and cfg.z_dim == 10
    assert cfg.last_frame_skip is True
    assert parse(["--config", str(f), "--no-last_frame_skip"]).last_frame_skip is False


def test_int_is_accepted_for_float(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("lr = 1\n")
    assert parse(["--config", str(f)]).lr == 1.0


@pytest.mark.parametrize("text, key", [
    ("learning_rate = 0.1\n", "unknown key 'learning_rate'"),
    ('batch_size = "big"\n', "key 'batch_size' must be int"),
    ("cuda = 1\n", "key 'cuda' must be bool"),
    ('prior = "sometimes"\n', "prior must be one of"),
    ("tfr = 1.5\n", "tfr = 1.5"),
    ("lr = \n", "invalid TOML"),
])
def test_bad_config_files_name_the_key(tmp_path, text, key):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=key):
        parse(["--config", str(f)])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        parse(["--config", "/nonexistent/c.toml"])


def test_saved_config_reloads_identically(tmp_path):
    cfg = parse(["--lr", "0.003", "--prior", "learned"])
    f = tmp_path / "saved.toml"
    f.write_text(config_mod.to_toml(cfg))
    assert parse(["--config", str(f)]) == cfg


def test_cuda_without_cuda_fails_clearly(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("", cuda=True)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:0")
    assert resolve_device("", False).type == "cpu"
    with pytest.raises(ConfigError, match="not a device name|only 'cpu'"):
        resolve_device("tpu")
