import argparse

import pytest

from cvae_video import config as config_mod, evaluate, make_gif, predict
from cvae_video.config import TrainConfig
from cvae_video.errors import ConfigError
from cvae_video.runtime import resolve_device


def parse(argv):
    p = argparse.ArgumentParser()
    config_mod.add_arguments(p)
    return config_mod.resolve(p.parse_args(argv))


def test_defaults_are_the_lab_values():
    cfg = parse([])
    m = cfg.model
    assert (cfg.lr, cfg.beta1, m.g_dim, m.z_dim, m.rnn_size) == (0.002, 0.9, 128, 64, 256)
    assert (cfg.n_past, cfg.n_future, m.posterior_rnn_layers, m.predictor_rnn_layers) == (2, 10, 1, 2)
    assert m.prior == "fixed" and m.backbone == "vgg" and cfg.kl_weight_max == 1.0


def test_flags_override_file_which_overrides_defaults(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('lr = 0.01\nbatch_size = 8\n[model]\nprior = "learned"\nz_dim = 10\n')
    cfg = parse(["--config", str(f), "--batch_size", "4", "--last_frame_skip"])
    assert cfg.lr == 0.01 and cfg.batch_size == 4 and cfg.model.prior == "learned" and cfg.model.z_dim == 10
    assert cfg.model.last_frame_skip is True
    assert parse(["--config", str(f), "--no-last_frame_skip"]).model.last_frame_skip is False


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
    ("[model]\nlr = 0.1\n", "key 'lr' is in the \\[model\\] table, but it is not a model key"),
    ("[training]\nz_dim = 8\n", "key 'z_dim' is in the \\[training\\] table, but it is a model key"),
    ("[model]\nz_dims = 8\n", "unknown key 'z_dims' in \\[model\\]"),
    ("[model]\ncond_dim = 8\n", "unknown key 'cond_dim'"),    # the data decides it
    ("[model.vgg]\nwidth = 1\n", "tables do not nest"),
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
    cfg = parse(["--lr", "0.003", "--prior", "learned", "--z_dim", "12"])
    f = tmp_path / "saved.toml"
    f.write_text(config_mod.to_toml(cfg))
    assert "\n[model]\n" in f.read_text() and "\nz_dim = 12\n" in f.read_text().split("[model]")[1]
    assert parse(["--config", str(f)]) == cfg
    assert config_mod.from_dict(cfg.to_dict()) == cfg == config_mod.from_dict(cfg.flat())


def test_flat_config_files_of_older_versions_still_load(tmp_path):
    f = tmp_path / "old.toml"
    f.write_text('lr = 0.003\nbackbone = "dcgan"\nz_dim = 12\n[training]\nbatch_size = 4\n')
    cfg = parse(["--config", str(f)])
    assert (cfg.lr, cfg.batch_size, cfg.model.backbone, cfg.model.z_dim) == (0.003, 4, "dcgan", 12)


def test_the_model_config_is_the_one_model_fields_live_in():
    """Every model key is a flag and a config key, with the model's own default; none is repeated in TrainConfig."""
    from dataclasses import fields
    from cvae_video.models import ModelConfig
    model_fields = {f.name: f.default for f in fields(ModelConfig)}
    train_fields = {f.name for f in fields(config_mod.TrainConfig)}
    assert not (set(config_mod.MODEL_KEYS) & train_fields)
    assert set(config_mod.MODEL_KEYS) == set(model_fields) - {"channels", "cond_dim"}
    flags = parse([]).flat()
    assert all(flags[k] == model_fields[k] for k in config_mod.MODEL_KEYS)
    assert parse(["--width", "0.5"]).model_config(cond_dim=5) == ModelConfig(width=0.5, cond_dim=5)


def test_cuda_without_cuda_fails_clearly(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:0")
    assert resolve_device("").type == resolve_device().type == "cpu"


def test_one_device_field_that_cuda_sets_and_older_files_read_as_it():
    assert parse([]).device == "cpu" and parse(["--cuda"]).device == "cuda"
    assert parse(["--cuda", "--device", "cuda:1"]).device == "cuda:1"   # the last one given wins
    assert not hasattr(TrainConfig(), "cuda")
    # a config of an older version: cuda = true beside an empty device
    assert config_mod.from_dict({"cuda": True, "device": ""}).device == "cuda"
    assert config_mod.from_dict({"cuda": False, "device": ""}).device == "cpu"
    assert config_mod.from_dict({"cuda": True, "device": "cuda:1"}).device == "cuda:1"
    for tool in (evaluate, make_gif, predict):
        parser = tool.build_parser()
        required = ["--ckpt", "x"] + (["--frames", "f", "--n_future", "2"] if tool is predict else [])
        assert parser.parse_args(required + ["--cuda"]).device == "cuda"
        assert parser.parse_args(required).device == "cpu"
    with pytest.raises(ConfigError, match="not a device name|only 'cpu'"):
        resolve_device("tpu")


def test_flags_of_enumerated_keys_list_their_choices_and_refuse_others(capsys):
    p = config_mod.ArgumentParser(prog="cvae-train")
    config_mod.add_arguments(p)
    assert p.parse_args(["--condition", "positions", "--prior", "learned"]).condition == "positions"
    with pytest.raises(SystemExit) as info:
        p.parse_args(["--backbone", "resnet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == ("cvae-train: error: argument --backbone: invalid choice: 'resnet' (choose from 'vgg', 'dcgan') "
                   "(--help lists the flags)\n")
    defaults = config_mod.TrainConfig().flat()
    assert all(defaults[key] in names for key, names in config_mod.CHOICES.items())
