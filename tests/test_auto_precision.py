"""--precision auto: explicit precisions kept, CUDA by capability, the CPU by a start-up probe; the choice is said,
saved with the run and kept on resume."""

import re
import time
from pathlib import Path

import pytest
import torch

from cvae_video import config as config_mod
from cvae_video import runtime, train
from cvae_video.checkpoint import load_checkpoint
from cvae_video.errors import ConfigError
from cvae_video.fileio import atomic_write_text
from helpers import TINY_FLAGS

CPU = torch.device("cpu")


def sleeper(seconds: dict):
    calls = []

    def probe(precision):
        calls.append(precision)
        torch.rand(3)                     # a probe draws random numbers, as a model's forward pass does
        time.sleep(seconds[precision])
    return probe, calls


def test_explicit_precisions_are_kept_and_auto_must_be_resolved():
    for p in ("fp32", "bf16", "fp16"):
        never = lambda _: pytest.fail("no probe for an explicit precision")   # noqa: E731
        assert runtime.choose_precision(p, CPU, probe=never).precision == p
    with pytest.raises(ConfigError, match="resolve 'auto'"):
        runtime.autocast(CPU, "auto")
    with pytest.raises(ConfigError, match="must be one of"):
        runtime.choose_precision("fp8", CPU)


@pytest.mark.parametrize("bf16, fp32, chosen", [(0.010, 0.020, "bf16"), (0.020, 0.010, "fp32"),
                                                (0.0098, 0.010, "fp32")])   # a 2% gain is not worth bf16
def test_the_cpu_takes_what_the_probe_finds_faster(bf16, fp32, chosen):
    probe, calls = sleeper({"bf16": bf16, "fp32": fp32})
    before = torch.get_rng_state()
    choice = runtime.choose_precision("auto", CPU, probe)
    assert choice.precision == chosen and set(choice.times) == {"fp32", "bf16"}
    assert torch.equal(torch.get_rng_state(), before)     # the run's random stream is where it was
    assert calls[:2] == ["fp32", "bf16"] and len(calls) >= 4   # one untimed call each, then alternating rounds
    assert "bf16 took" in choice.describe() and chosen in choice.describe()


def test_the_probe_stays_within_its_budget():
    probe, calls = sleeper({"bf16": 0.05, "fp32": 0.05})
    t0 = time.perf_counter()
    runtime.time_precisions(probe, budget_s=0.01, rounds=10)
    assert len(calls) == 4 and time.perf_counter() - t0 < 0.5


def test_a_run_is_probed_within_its_share_of_the_expected_time():
    probe, calls = sleeper({"bf16": 0.05, "fp32": 0.05})
    # 250 steps of 0.05 s: 0.25 s for the probe, which two untimed calls and one round (0.2 s) fit, two rounds not
    choice = runtime.choose_precision("auto", CPU, probe, steps=250)
    assert len(calls) == 4
    assert re.search(r"start-up probe of 0\.2 s, 1\.\d% of the run's expected 1\d s", choice.describe())
    calls.clear()
    runtime.choose_precision("auto", CPU, probe, steps=4000)   # 10 s of probe allowed: all three rounds
    assert len(calls) == 8
    calls.clear()
    choice = runtime.choose_precision("auto", CPU, probe, steps=runtime.MIN_PROBED_STEPS - 1)
    assert calls == [] and choice.precision == "fp32" and "too short for a start-up probe" in choice.describe()


def test_the_training_probe_takes_the_runs_step(monkeypatch):
    from helpers import tiny_model
    model = tiny_model()
    cfg = config_mod.TrainConfig(batch_size=3, n_past=2, n_future=4, tfr=1.0)
    seen = []
    forward = type(model).forward

    def spy(self, x, cond, n_past, teacher_forcing=True):
        seen.append((tuple(x.shape), n_past, teacher_forcing))
        return forward(self, x, cond, n_past, teacher_forcing)
    monkeypatch.setattr(type(model), "forward", spy)
    before = [p.detach().clone() for p in model.parameters()]
    train.training_probe(model, cfg)("fp32")
    assert seen == [((3, 6, 3, 64, 64), 2, True)]
    assert all(p.grad is None for p in model.parameters())                  # a copy trained, not the model
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_cuda_takes_bf16_where_supported_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some GPU")
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtime.choose_precision("auto", cuda, probe=lambda _: pytest.fail("no probe on CUDA")).precision == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert runtime.choose_precision("auto", cuda).precision == "fp16"


def _argv(root, log_dir, *extra):
    flags = list(TINY_FLAGS)
    i = flags.index("--precision")
    flags[i + 1] = "auto"
    return ["--data_root", str(root), "--log_dir", str(log_dir), "--epoch_size", "1", "--n_pictures", "0",
            "--val_sequences", "2", *flags, *extra]


def test_an_auto_run_says_saves_and_keeps_its_choice(synth_root, tmp_path, capsys, monkeypatch):
    log_dir = tmp_path / "run"
    written = []

    def count_writes(path, text):
        written.append(Path(path).name)
        return atomic_write_text(path, text)
    monkeypatch.setattr(train, "atomic_write_text", count_writes)
    assert train.main(_argv(synth_root, log_dir, "--niter", "1")) == 0
    assert written.count("config.toml") == 1   # once, when the choices are made
    said = capsys.readouterr().err   # one step: too short for the probe to pay, so fp32
    assert "cvae-train: precision auto: fp32 (a run of 1 steps is too short for a start-up probe" in said
    ckpt = load_checkpoint(log_dir / "last.pt")
    chosen = ckpt.resolved.precision
    assert chosen == "fp32" and ckpt.resolved.device == "cpu" and ckpt.training.precision == "auto"
    # config.toml: the config as given, and what the run decided in a table of its own, as the checkpoint has it
    saved = config_mod.tomllib.loads((log_dir / "config.toml").read_text())
    assert saved["resolved"] == {"data_root": str(synth_root), "precision": chosen, "device": "cpu"}
    assert "#" not in (log_dir / "config.toml").read_text()
    assert config_mod.load_toml(log_dir / "config.toml")["precision"] == "auto"
    again = config_mod.from_dict(config_mod.load_toml(log_dir / "config.toml"))   # as --config reads it
    assert again == ckpt.training
    monkeypatch.undo()

    # resumed on the same kind of device: the saved choice, no new probe
    monkeypatch.setattr(train, "choose_precision", lambda *a, **k: pytest.fail("probed again on resume"))
    assert train.main(["--resume", str(log_dir), "--niter", "2", "--no_progress"]) == 0
    assert load_checkpoint(log_dir / "last.pt").resolved.precision == chosen
    assert config_mod.tomllib.loads((log_dir / "config.toml").read_text())["resolved"]["precision"] == chosen
    monkeypatch.undo()

    # a run that trained on another kind of device decides again, and says why
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(log_dir / name)
        ckpt.resolved.device = "cuda"
        ckpt.save(log_dir / name)
    capsys.readouterr()
    assert train.main(["--resume", str(log_dir), "--niter", "3", "--no_progress"]) == 0
    assert f"trained in {chosen} on cuda and now continues on cpu" in capsys.readouterr().err
