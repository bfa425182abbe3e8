"""--condition: which part of the condition a model sees, and data sets without conditions (frames only)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cvae_video import config as config_mod
from cvae_video import evaluate, make_gif, predict, train
from cvae_video.checkpoint import Checkpoint, Resolved, load_checkpoint
from cvae_video.data import check, cli as data_cli, layout, pack
from cvae_video.data.dataset import ConditionStats, VideoDataset
from cvae_video.errors import DataError
from cvae_video.models import ModelConfig, svg
from helpers import TINY_FLAGS, TINY_MODEL, format_1, tiny_model, write_small_synth

SEQ_LEN = 12


def _inputs(seed=0, B=1, T=4):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 3, 64, 64, generator=g), torch.randn(B, T, 7, generator=g)


def _predict(model, x, cond, n_past=2):
    return model.predict(x[:, :n_past], cond, x.shape[1] - n_past, generator=torch.Generator().manual_seed(1))


def test_a_model_without_conditions_ignores_them():
    model = tiny_model(condition="none").eval()
    assert model.cfg.cond_in == 0 and model.predictor.embed.in_features == 16 + 4   # g_dim + z_dim, no c_t
    x, cond = _inputs()
    other = torch.randn_like(cond)
    want = _predict(model, x, cond)
    for c in (other, None, cond[..., :0]):
        assert torch.equal(_predict(model, x, c), want)
    torch.manual_seed(0)
    a = model.train()(x, cond, 2)["recon"]
    torch.manual_seed(0)
    assert torch.equal(model(x, None, 2)["recon"], a)


@pytest.mark.parametrize("condition, used, unused", [("positions", slice(4, 7), slice(0, 4)),
                                                     ("actions", slice(0, 4), slice(4, 7))])
def test_a_model_follows_the_part_of_the_condition_it_is_given_and_no_other(condition, used, unused):
    model = tiny_model(condition=condition).eval()
    x, cond = _inputs()
    want = _predict(model, x, cond)
    changed = cond.clone()
    changed[..., unused] += 3.0
    assert torch.equal(_predict(model, x, changed), want)
    changed = cond.clone()
    changed[..., used] += 3.0
    # an untrained model moves a little (about 2e-6), but a model blind to these columns would not move at all
    assert not torch.equal(_predict(model, x, changed), want)


def test_condition_none_refuses_a_decoder_that_draws_the_condition():
    with pytest.raises(ValueError, match="spatial_cond=True, keypoints=2"):
        ModelConfig(condition="none", spatial_cond=True, keypoints=2)
    with pytest.raises(ValueError, match="condition must be one of"):
        ModelConfig(condition="everything")


def test_the_flag_lists_the_choices_and_refuses_others_in_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        train.main(["--condition", "sometimes"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--condition: invalid choice: 'sometimes'" in err and "'none'" in err, err
    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert "--condition {full,actions,positions,none}" in capsys.readouterr().out
    assert check.CONDITIONS == svg.CONDITIONS   # the data tools name them without importing the model


def test_a_checkpoint_without_the_key_is_a_full_model(tmp_path):
    model = tiny_model()
    training = config_mod.TrainConfig(model=ModelConfig(**TINY_MODEL))
    old = format_1(Checkpoint.of(model, cond_stats=ConditionStats((0.0,) * 7, (1.0,) * 7), training=training,
                                 resolved=Resolved(str(tmp_path), "fp32", "cpu")))
    del old["model_config"]["condition"], old["train_config"]["model"]["condition"]   # as written before the key
    torch.save(old, tmp_path / "old.pt")
    ckpt = load_checkpoint(tmp_path / "old.pt")
    assert ckpt.build_model().cfg.condition == "full" and ckpt.training.model.condition == "full"
    config_mod.check_resume_changes(ckpt.training, training, "old.pt")   # full: no change
    with pytest.raises(config_mod.ConfigError, match="condition: the run has 'full', now 'none'"):
        config_mod.check_resume_changes(ckpt.training, config_mod.from_dict(TINY_MODEL | {"condition": "none"}),
                                        "old.pt")


# ---- a data set of frames only ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def frames_only(tmp_path_factory):
    """A small data set whose trajectories have frames and no CSVs."""
    root = write_small_synth(tmp_path_factory.mktemp("frames_only") / "data", SEQ_LEN, 6, 3, 3, seed=5)
    for path in root.glob("*/*/*/*.csv"):
        path.unlink()
    return root


@pytest.fixture(scope="module")
def none_run(frames_only, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("none_run") / "run"
    assert train.main(["--data_root", str(frames_only), "--log_dir", str(log_dir), "--condition", "none",
                       "--niter", "1", "--epoch_size", "2", "--n_pictures", "1", *TINY_FLAGS]) == 0
    return log_dir


def test_frames_only_trajectories_read_without_conditions(frames_only, tmp_path):
    ds = VideoDataset(frames_only, "train", 6, with_conditions=False)
    assert len(ds) == 6 and ds[0]["cond"].shape == (6, 0) and ds[(1, 3)]["frames"].shape == (6, 3, 64, 64)
    assert ds.stats.to_dict() == {"mean": [], "std": []}
    with pytest.raises(DataError, match=r"actions\.csv: file not found \(only a model trained with --condition "
                                        r"none does without the condition files\)"):
        VideoDataset(frames_only, "train", 6)
    # CSVs where some trajectories have them, broken or not, are not read
    mixed = shutil.copytree(frames_only, tmp_path / "mixed")
    trajs = layout.list_trajectories(mixed, "train")
    (trajs[0] / layout.ACTIONS_FILE).write_text("not,a,number\n")
    (trajs[1] / layout.POSITIONS_FILE).write_text("1,2,3\n")
    assert len(VideoDataset(mixed, "train", 6, with_conditions=False, check_frames=True)) == 6


def test_check_a_frames_only_data_set(frames_only, capsys):
    assert data_cli.main(["check", "--data_root", str(frames_only), "--no_progress"]) == 1
    out = capsys.readouterr().out
    assert "csv_missing" in out and "--condition none" in out
    assert data_cli.main(["check", "--data_root", str(frames_only), "--condition", "none", "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok:") and "12 trajectories" in out and "frames only" in out


def test_pack_a_frames_only_data_set(frames_only, tmp_path):
    root = shutil.copytree(frames_only, tmp_path / "data")
    reports = pack.pack(root, progress=False)                # no CSVs anywhere: frames only, by itself
    assert [r.cond_dim for r in reports] == [0, 0, 0]
    png = VideoDataset(root, "validate", 6, with_conditions=False, use_packed=False)
    cached = VideoDataset(root, "validate", 6, with_conditions=False, use_packed=True)
    for i in range(len(png)):
        assert all(torch.equal(png[i][k], cached[i][k]) for k in ("frames", "cond", "index"))
    with pytest.raises(DataError, match="holds frames only"):
        VideoDataset(root, "validate", 6, use_packed=True)
    # some trajectories with conditions and some without: packing conditions needs them all
    traj = layout.list_trajectories(root, "test")[0]
    layout.write_trajectory(traj, np.zeros((SEQ_LEN, 64, 64, 3), np.uint8), np.zeros((SEQ_LEN, 4)),
                            np.zeros((SEQ_LEN, 3)))
    with pytest.raises(DataError, match=r"file not found .*`cvae-data pack --frames_only`"):
        pack.pack_split(root, "test", progress=False)
    assert pack.pack_split(root, "test", progress=False, frames_only=True).cond_dim == 0


def test_a_model_with_conditions_refuses_frames_only_data_naming_the_file(frames_only, tmp_path, capsys):
    assert train.main(["--data_root", str(frames_only), "--log_dir", str(tmp_path / "run"), "--niter", "1",
                       "--epoch_size", "1", *TINY_FLAGS]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "actions.csv: file not found" in err and "--condition none" in err, err
    assert str(frames_only / "train") in err


def test_training_without_conditions(none_run):
    assert 'condition = "none"' in (none_run / "config.toml").read_text()
    ckpt = load_checkpoint(none_run / "last.pt")
    assert ckpt.training.model.condition == "none"
    assert ckpt.model_config.condition == "none" and ckpt.model_config.cond_dim == 0
    assert ckpt.cond_stats.to_dict() == {"mean": [], "std": []}
    record = json.loads((none_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert isinstance(record["active_units"], int) and 0 <= record["active_units"] <= 4


def test_evaluating_a_model_without_conditions(none_run, frames_only, tmp_path, capsys, monkeypatch):
    def no_shuffled_pass(*a, **k):
        raise AssertionError("the shuffled-condition pass ran for a model without conditions")
    monkeypatch.setattr(evaluate, "ShuffledConditions", no_shuffled_pass)
    out, csv_path, plot = tmp_path / "eval.json", tmp_path / "per_frame.csv", tmp_path / "per_frame.png"
    assert evaluate.main(["--ckpt", str(none_run / "best.pt"), "--n_future", "4", "--n_samples", "2",
                          "--precision", "fp32", "--json", str(out), "--csv", str(csv_path), "--plot",
                          str(plot)]) == 0   # the data the model was trained on
    table = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["methods"]["model_shuffled_condition"] is None and r["shuffled_condition_drop"] is None
    assert r["shuffled_condition_note"] == "the model takes no condition (condition = none)"
    assert "model_shuffled_condition not scored: the model takes no condition (condition = none)" in table
    assert r["n_sequences"] == 3 and r["methods"]["model_prior_mean"]["psnr"] > 0
    assert isinstance(r["active_units"], int) and r["active_units_threshold"] == 0.01
    assert len(r["latent_variance"]) == 4 and f"active units {r['active_units']} of 4" in table
    assert "shuffled" not in csv_path.read_text() and Image.open(plot).format == "PNG"


def test_pictures_and_predictions_without_conditions(none_run, frames_only, tmp_path, capsys):
    assert make_gif.main(["--ckpt", str(none_run / "best.pt"), "--out", str(tmp_path / "gifs"), "--indices", "1",
                          "--n_samples", "2", "--precision", "fp32"]) == 0
    assert Image.open(tmp_path / "gifs" / "seq1.gif").n_frames > 1
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(3):
        shutil.copy(layout.list_trajectories(frames_only, "test")[0] / f"{t}.png", frames / f"{t}.png")
    out = tmp_path / "pred"
    assert predict.main(["--ckpt", str(none_run / "best.pt"), "--frames", str(frames), "--n_future", "2",
                         "--n_samples", "1", "--out", str(out), "--precision", "fp32"]) == 0
    assert sorted(p.name for p in (out / "sample0").glob("*.png")) == ["3.png", "4.png"]
    capsys.readouterr()
    full = tmp_path / "full.pt"   # the same weights as a model that takes conditions: --actions is then needed
    ckpt = load_checkpoint(none_run / "best.pt")
    Checkpoint.of(tiny_model(), cond_stats=ckpt.cond_stats, training=ckpt.training, resolved=ckpt.resolved,
                  state=ckpt.state).save(full)
    assert predict.main(["--ckpt", str(full), "--frames", str(frames), "--n_future", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(condition = full): --actions is needed" in err, err


def test_a_run_without_conditions_resumes_as_one(none_run, tmp_path, capsys):
    run = shutil.copytree(none_run, tmp_path / "run")
    assert train.main(["--resume", str(run), "--condition", "full"]) == 1
    assert "condition: the run has 'none', now 'full'" in capsys.readouterr().err
    assert train.main(["--resume", str(run), "--niter", "2", "--no_progress"]) == 0
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt.state.epoch == 1 and ckpt.model_config.condition == "none"


def test_the_point_loss_is_logged_per_epoch_with_motion_points(none_run, frames_only, tmp_path):
    log_dir = tmp_path / "run"
    assert train.main(["--data_root", str(frames_only), "--log_dir", str(log_dir), "--condition", "none",
                       "--output", "compose", "--motion_points", "2", "--motion_points_width", "8", "--niter", "1",
                       "--epoch_size", "2", "--n_pictures", "0", *TINY_FLAGS]) == 0
    record = json.loads((log_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["points"] > 0 and record["point_accel"] > 0
    assert load_checkpoint(log_dir / "last.pt").model_config.motion_points_width == 8
    assert "points" not in json.loads((none_run / "metrics.jsonl").read_text().splitlines()[-1])
