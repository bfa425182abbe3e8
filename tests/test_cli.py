"""The console scripts end to end on a tiny synthetic data set: train -> checkpoint -> eval -> pictures."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from cvae_video import evaluate, make_gif, train
from cvae_video.checkpoint import load_checkpoint
from cvae_video.inference import open_for_inference
from cvae_video.data import cli as data_cli
from helpers import TINY_FLAGS


@pytest.fixture(scope="module")
def run_dir(synth_root, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("run")
    rc = train.main(["--data_root", str(synth_root), "--log_dir", str(log_dir), "--niter", "2",
                     "--epoch_size", "3", "--tfr", "0.5", "--seed", "7", *TINY_FLAGS])
    assert rc == 0
    return log_dir


def test_training_writes_everything(run_dir):
    for name in ("config.toml", "metrics.jsonl", "last.pt", "best.pt", "training_curves.png"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for r in records:
        assert {"epoch", "step", "loss", "mse", "kl", "beta", "tfr", "lr", "val_psnr", "val_kl", "active_units",
                "seconds"} <= set(r)
        assert r["epoch_seconds"] > r["seconds"] > 0   # the whole epoch: its steps, validation and writing
        assert r["val_psnr"] > 0 and r["val_kl"] >= 0 and r["active_units"] in range(5)   # of z_dim 4
    assert records[-1]["step"] == 6
    grids = list((run_dir / "pictures").glob("*.png"))
    assert grids and all(Image.open(p).size[0] > 64 for p in grids)


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_trained_model(run_dir, synth_root):
    raw = torch.load(run_dir / "last.pt", weights_only=True)
    assert raw["state"]["epoch"] == 1 and raw["state"]["step"] == 6
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in raw["model"]["weights"])
    # the rebuilt model is the one that was validated: it scores the validation PSNR recorded at its epoch
    trained = open_for_inference(run_dir / "best.pt")
    cfg, state = trained.checkpoint.training, trained.checkpoint.state
    ds = trained.open_split("", "validate", cfg.n_past + cfg.n_eval)
    scores = evaluate.score_split(trained.model, evaluate.make_loader(ds, cfg.val_batch_size), n_past=cfg.n_past,
                                  n_future=cfg.n_eval, seed=cfg.seed)
    assert state.val_psnr == pytest.approx(float(scores["psnr"].mean()), abs=1e-9)
    assert state.val_psnr == state.best_val_psnr


def test_eval_json(run_dir, synth_root, tmp_path, capsys):
    out = tmp_path / "eval.json"
    csv_path = tmp_path / "per_frame.csv"
    plot = tmp_path / "per_frame.png"
    rc = evaluate.main(["--ckpt", str(run_dir / "best.pt"), "--data_root", str(synth_root), "--n_samples", "3",
                        "--json", str(out), "--csv", str(csv_path), "--plot", str(plot)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "baseline_copy_last" in table and "model_best_ssim" in table
    r = json.loads(out.read_text())
    assert r["n_sequences"] == 8 and r["n_future"] == 10 and len(r["psnr_per_frame"]) == 10
    assert len(r["ssim_per_frame"]) == 10 and 0 < r["ssim"] <= 1
    assert {"psnr", "ssim"} <= set(r["baseline_copy_last"])
    assert r["methods"]["model_best_psnr"]["psnr"] >= r["methods"]["model_mean_of_n"]["psnr"]
    assert {"model_shuffled_condition", "model_prior_mean"} <= set(r["methods"])
    assert "model_shuffled_condition" in table and "KL per step" in table
    assert r["kl_per_step"] > 0 and r["diversity"] > 0 and len(r["diversity_per_frame"]) == 10
    assert r["shuffled_condition_drop"] == r["psnr"] - r["methods"]["model_shuffled_condition"]["psnr"]
    assert r["active_units"] in range(5) and len(r["latent_variance"]) == 4 and r["active_units_threshold"] == 0.01
    assert r["active_units"] == sum(v > 0.01 for v in r["latent_variance"])
    assert f"active units {r['active_units']} of 4" in table and "shuffled_condition_note" not in r
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 11 and "model_shuffled_condition_psnr" in lines[0]
    assert Image.open(plot).format == "PNG"


def test_eval_is_deterministic_given_seed(run_dir, synth_root):
    cfg = evaluate.EvalConfig(data_root=str(synth_root), n_samples=2, seed=3, precision="fp32")
    a = evaluate.evaluate(str(run_dir / "best.pt"), cfg, progress=False)
    b = evaluate.evaluate(str(run_dir / "best.pt"), cfg, progress=False)
    assert a["methods"] == b["methods"]
    other = evaluate.evaluate(str(run_dir / "best.pt"), replace(cfg, seed=4), progress=False)
    assert other["methods"]["model_mean_of_n"] != a["methods"]["model_mean_of_n"]   # the seed draws the latents


def test_make_gif(run_dir, synth_root, tmp_path):
    rc = make_gif.main(["--ckpt", str(run_dir / "best.pt"), "--data_root", str(synth_root), "--out",
                        str(tmp_path), "--indices", "0", "3", "--n_samples", "4"])
    assert rc == 0
    for i in (0, 3):
        gif = Image.open(tmp_path / f"seq{i}.gif")
        assert gif.format == "GIF" and gif.n_frames > 1
        grid = Image.open(tmp_path / f"seq{i}_grid.png")
        assert grid.format == "PNG" and grid.size[0] > 12 * 64


def test_make_gif_precision_reaches_the_prediction(run_dir, synth_root, tmp_path, monkeypatch):
    from cvae_video import inference, runtime
    seen = []

    def spy(device, precision):
        seen.append(precision)
        return runtime.autocast(device, precision)
    monkeypatch.setattr(inference, "autocast", spy)
    argv = ["--ckpt", str(run_dir / "best.pt"), "--data_root", str(synth_root), "--indices", "1", "--n_samples", "2"]
    assert make_gif.main([*argv, "--out", str(tmp_path / "bf16"), "--precision", "bf16"]) == 0
    assert make_gif.main([*argv, "--out", str(tmp_path / "fp32"), "--precision", "fp32"]) == 0
    assert seen == ["bf16", "fp32"]
    bf16, fp32 = (np.asarray(Image.open(tmp_path / p / "seq1_grid.png")) for p in ("bf16", "fp32"))
    assert bf16.shape == fp32.shape and not np.array_equal(bf16, fp32)   # bf16 arithmetic draws other pixels


def test_a_checkpoint_without_its_data_names_both(run_dir, tmp_path, capsys):
    ckpt = load_checkpoint(run_dir / "best.pt")
    moved = tmp_path / "elsewhere.pt"
    ckpt.resolved.data_root = str(tmp_path / "gone")
    ckpt.save(moved)
    for script in (evaluate.main, make_gif.main):
        assert script(["--ckpt", str(moved), *(["--out", str(tmp_path)] if script is make_gif.main else [])]) == 1
        assert f"--data_root {tmp_path / 'gone'}: folder not found" in capsys.readouterr().err


def test_cli_errors_are_one_clear_line(run_dir, synth_root, tmp_path, capsys):
    assert train.main(["--data_root", str(tmp_path / "missing"), "--log_dir", str(tmp_path / "r"),
                       *TINY_FLAGS]) == 1
    assert "folder not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense_key = 3\n")
    assert train.main(["--config", str(bad)]) == 1
    assert "unknown key 'nonsense_key'" in capsys.readouterr().err
    assert evaluate.main(["--ckpt", str(tmp_path / "nope.pt")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    assert make_gif.main(["--ckpt", str(run_dir / "best.pt"), "--data_root", str(synth_root), "--indices",
                          "99", "--out", str(tmp_path)]) == 1
    assert "out of range" in capsys.readouterr().err


def test_cuda_flag_without_cuda(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.main(["--cuda", "--log_dir", str(tmp_path / "r"), *TINY_FLAGS]) == 1
    assert "CUDA is not available" in capsys.readouterr().err


def test_existing_log_dir_is_not_overwritten_silently(run_dir, synth_root, capsys):
    rc = train.main(["--data_root", str(synth_root), "--log_dir", str(run_dir), "--niter", "1", "--epoch_size",
                     "1", *TINY_FLAGS])
    assert rc == 1
    assert "--resume" in capsys.readouterr().err


def test_data_synth_cli(tmp_path, capsys):
    rc = data_cli.main(["synth", "--out", str(tmp_path / "d"), "--n_train", "3", "--n_validate", "1",
                        "--n_test", "1", "--seq_len", "12"])
    assert rc == 0
    assert len(list((tmp_path / "d" / "train").glob("*/*/11.png"))) == 3


def test_svg_protocol(run_dir, synth_root, tmp_path, capsys):
    out = tmp_path / "svg.json"
    assert evaluate.main(["--ckpt", str(run_dir / "best.pt"), "--data_root", str(synth_root), "--protocol", "svg",
                          "--n_samples", "2", "--max_sequences", "4", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n_future"] == 28 and len(r["methods"]["model_best_ssim"]["ssim_per_frame"]) == 28
    from cvae_video.data import synth
    short = tmp_path / "short"
    synth.write_dataset(short, n_train=2, n_validate=1, n_test=2, seed=0, cfg=synth.SynthConfig(seq_len=12),
                        progress=False)
    capsys.readouterr()
    assert evaluate.main(["--ckpt", str(run_dir / "best.pt"), "--data_root", str(short), "--protocol", "svg"]) == 1
    assert "svg protocol" in capsys.readouterr().err


def test_compiled_training_and_evaluation(synth_root, tmp_path):
    """--compile in cvae-train and cvae-eval: the compiled model trains, and evaluates as the eager one does."""
    log_dir = tmp_path / "run"
    assert train.main(["--data_root", str(synth_root), "--log_dir", str(log_dir), "--niter", "1", "--epoch_size",
                       "2", "--compile", "--no_progress", *TINY_FLAGS]) == 0
    ckpt = str(log_dir / "last.pt")
    assert not any(k.startswith("_orig_mod.") for k in load_checkpoint(ckpt).weights)
    cfg = evaluate.EvalConfig(data_root=str(synth_root), n_samples=2, max_sequences=4, precision="fp32")
    eager = evaluate.evaluate(ckpt, cfg, progress=False)
    compiled = evaluate.evaluate(ckpt, replace(cfg, compile=True), progress=False)
    assert compiled["psnr"] == pytest.approx(eager["psnr"], abs=1e-3)
    assert compiled["ssim"] == pytest.approx(eager["ssim"], abs=1e-4)


def test_eval_memory_format_does_not_change_the_scores(run_dir, synth_root):
    cfg = evaluate.EvalConfig(data_root=str(synth_root), n_samples=2, max_sequences=4, precision="fp32")
    nhwc = evaluate.evaluate(str(run_dir / "best.pt"), replace(cfg, channels_last=True), progress=False)
    nchw = evaluate.evaluate(str(run_dir / "best.pt"), replace(cfg, channels_last=False), progress=False)
    assert nhwc["psnr"] == pytest.approx(nchw["psnr"], abs=1e-4)
    assert nhwc["ssim"] == pytest.approx(nchw["ssim"], abs=1e-5)
