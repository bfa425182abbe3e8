"""Resuming a run: an interrupted and resumed run repeats an uninterrupted one exactly; the forms of --resume;
which config changes a resumed run accepts; checkpoints that do not fit the model fail with a clear message."""

import json
import shutil

import pytest
import torch

from cvae_video import config as config_mod
from cvae_video import evaluate, train
from cvae_video.checkpoint import FORMAT, load_checkpoint, load_model_state
from cvae_video.errors import CheckpointError
from cvae_video.models import CVAE, ModelConfig
from cvae_video.schedules import kl_weight
from helpers import TINY_FLAGS, TINY_MODEL, format_1

NITER, EPOCH_SIZE = 2, 2
# per-sample teacher forcing at 0.5 and a KL weight that rises over the whole run: both schedules and the
# global RNG matter for every loss
RUN_FLAGS = ["--niter", str(NITER), "--epoch_size", str(EPOCH_SIZE), "--tfr", "0.5", "--tf_per_sample",
             "--kl_anneal_ratio", "1.0", "--seed", "5", "--n_pictures", "1", "--val_sequences", "2", *TINY_FLAGS]


def make_cfg(root, log_dir, *extra) -> config_mod.TrainConfig:
    args = train.build_parser().parse_args(["--data_root", str(root), "--log_dir", str(log_dir), *RUN_FLAGS,
                                            *extra])
    return config_mod.resolve(args)


def metrics(log_dir) -> list[dict]:
    return [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]


def without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "epoch_seconds")} for r in records]


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    """(straight run, interrupted-after-epoch-1-then-resumed run, the latter's metrics before resuming)."""
    base = tmp_path_factory.mktemp("resume")
    straight, resumed = base / "straight", base / "resumed"
    train.train(make_cfg(synth_root, straight), progress=False)
    train.train(make_cfg(synth_root, resumed), progress=False, stop_after_epoch=0)
    before = metrics(resumed)
    train.train(make_cfg(synth_root, resumed), resumed / "last.pt", progress=False)
    return straight, resumed, before


def test_resumed_run_repeats_the_uninterrupted_run_exactly(runs):
    straight, resumed, before = runs
    assert [r["epoch"] for r in before] == [0]
    a, b = metrics(straight), metrics(resumed)
    assert [r["epoch"] for r in a] == list(range(NITER))
    assert without_seconds(a) == without_seconds(b)          # every loss, beta, tfr and PSNR, bit for bit
    # the epoch before the interruption keeps its whole wall time, written after its checkpoint
    assert before[0]["epoch_seconds"] is not None and b[0]["epoch_seconds"] == before[0]["epoch_seconds"]
    assert a[0]["beta"] != a[1]["beta"] and a[0]["loss"] != a[1]["loss"]
    assert_same_end(straight / "last.pt", resumed / "last.pt")


def assert_same_end(a, b) -> None:
    """The checkpoints ``a`` and ``b`` hold the same weights, optimizer state, RNG state, step and best PSNR."""
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for k, v in ca["model"]["weights"].items():
        assert torch.equal(v, cb["model"]["weights"][k]), k
    sa, sb = ca["state"], cb["state"]
    for k, v in sa["optimizer"]["state"].items():
        assert all(torch.equal(t, sb["optimizer"]["state"][k][n]) for n, t in v.items())
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    assert (sa["step"], sa["best_val_psnr"]) == (sb["step"], sb["best_val_psnr"])


def test_resume_forms_and_extending_niter(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs[1], run)
    # --resume LOG_DIR alone: the config comes from the run's config.toml; a larger niter extends the run
    assert train.main(["--resume", str(run), "--niter", str(NITER + 1), "--no_progress"]) == 0
    records = metrics(run)
    assert [r["epoch"] for r in records] == list(range(NITER + 1))
    assert without_seconds(records[:NITER]) == without_seconds(metrics(runs[0]))
    # the KL schedule keeps the horizon of the run as first started (niter 2), not the extended one
    last_step = records[-1]["step"] - 1
    assert records[-1]["beta"] == kl_weight(last_step, total_steps=NITER * EPOCH_SIZE, cyclical=False, ratio=1.0, n_cycles=4)
    assert records[-1]["beta"] != kl_weight(last_step, total_steps=(NITER + 1) * EPOCH_SIZE, cyclical=False, ratio=1.0,
                                         n_cycles=4)
    assert config_mod.load_toml(run / "config.toml")["niter"] == NITER + 1
    capsys.readouterr()
    # --resume CKPT and bare --resume with --log_dir: nothing left to do, said so, nothing changed
    for argv in (["--resume", str(run / "last.pt")], ["--resume", "--log_dir", str(run)]):
        assert train.main([*argv, "--no_progress"]) == 0
        assert "already finished epoch 3 of 3" in capsys.readouterr().err
        assert len(metrics(run)) == NITER + 1


def test_a_run_saved_with_a_flat_config_resumes(runs, tmp_path):
    """Runs of versions before the model had its own config table: config.toml and the checkpoints' train_config
    (format 1) hold every key at one level. Such a run still resumes, and its model's keys still may not change."""
    run = tmp_path / "run"
    shutil.copytree(runs[1], run)
    for name in ("last.pt", "best.pt"):
        old = format_1(load_checkpoint(run / name), earliest=True)
        torch.save(old, run / name)
    (run / "config.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in old["train_config"].items()
                                             if k in config_mod.KEYS))
    assert train.main(["--resume", str(run), "--z_dim", "8", "--no_progress"]) == 1
    assert train.main(["--resume", str(run), "--niter", str(NITER + 1), "--no_progress"]) == 0
    assert without_seconds(metrics(run)[:NITER]) == without_seconds(metrics(runs[0]))
    assert torch.load(run / "last.pt", weights_only=True)["format"] == FORMAT     # written in the current format now


@pytest.mark.parametrize("earliest", [False, True], ids=["format_1", "format_1_earliest"])
def test_a_format_1_checkpoint_resumes_the_run_exactly(runs, synth_root, tmp_path, earliest):
    """A run interrupted after its first epoch by a version that wrote format 1 (its last layout, or its first:
    flat config, no decided precision, no records, KL horizon or skip count in the state) and continued by this
    one repeats the uninterrupted run bit for bit."""
    run = tmp_path / "run"
    train.train(make_cfg(synth_root, run), progress=False, stop_after_epoch=0)
    for name in ("last.pt", "best.pt"):
        torch.save(format_1(load_checkpoint(run / name), earliest=earliest), run / name)
    assert torch.load(run / "last.pt", weights_only=True)["format"] == "cvae_video.checkpoint/1"
    train.train(make_cfg(synth_root, run), run / "last.pt", progress=False)
    assert without_seconds(metrics(run)) == without_seconds(metrics(runs[0]))
    assert_same_end(runs[0] / "last.pt", run / "last.pt")


def test_resume_refuses_changes_that_would_change_the_run(runs, tmp_path, capsys):
    run = runs[1]
    stamp = (run / "last.pt").stat().st_mtime_ns
    assert train.main(["--resume", str(run), "--z_dim", "8", "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert "model's shape cannot change" in err and "z_dim: the run has 4, now 8" in err
    assert train.main(["--resume", str(run), "--lr", "0.01", "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert "lr would change the training being continued" in err and "niter" in err
    assert train.main(["--resume", str(run), "--log_dir", str(tmp_path / "other"), "--no_progress"]) == 1
    assert "give only one of them" in capsys.readouterr().err
    assert train.main(["--resume", str(tmp_path / "nothing"), "--no_progress"]) == 1
    assert "no such run folder or checkpoint" in capsys.readouterr().err
    assert train.main(["--resume", str(run), "--overwrite", "--no_progress"]) == 1
    assert "contradict" in capsys.readouterr().err
    assert (run / "last.pt").stat().st_mtime_ns == stamp


def test_existing_log_dir_with_another_config_is_refused(runs, synth_root, capsys):
    straight = runs[0]
    rc = train.main(["--data_root", str(synth_root), "--log_dir", str(straight), *RUN_FLAGS, "--lr", "0.001"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "different config (differs in: lr)" in err and "--resume" in err and "--overwrite" in err


def test_mismatched_checkpoint_names_the_sizes(runs, tmp_path, capsys):
    ckpt = load_checkpoint(runs[0] / "last.pt")
    wider = CVAE(ModelConfig(**(TINY_MODEL | {"z_dim": 8})))
    with pytest.raises(CheckpointError, match=r"size mismatch in .*: checkpoint \(4, 16\) vs model \(8, 16\)"):
        load_model_state(wider, ckpt.weights, "last.pt")
    # weights that do not fit the config they claim: through the resume path, and through the model builder
    run = tmp_path / "run"
    shutil.copytree(runs[1], run)
    ckpt.weights = wider.state_dict()
    ckpt.save(run / "last.pt")
    assert train.main(["--resume", str(run), "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert "does not match the model" in err and "checkpoint (8, 16) vs model (4, 16)" in err
    assert "Traceback" not in err
    with pytest.raises(CheckpointError, match=r"last.pt does not match the model: .*\(8, 16\) vs model \(4, 16\)"):
        load_checkpoint(run / "last.pt").build_model()
    # a checkpoint written by another version of the format
    torch.save(dict(ckpt.to_dict(), format="cvae_video.checkpoint/0"), tmp_path / "old.pt")
    assert evaluate.main(["--ckpt", str(tmp_path / "old.pt")]) == 1
    assert "written by another version of cvae_video" in capsys.readouterr().err
