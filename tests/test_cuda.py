"""The CUDA paths: training in every precision, evaluation, pictures, resume, a CUDA-trained checkpoint on the CPU,
torchrun with NCCL, torch.compile with and without DDP (and CUDA graphs), SyncBatchNorm.

Marked ``cuda``: without a CUDA device they skip, naming why. ``python scripts/gpu_check.py`` runs them on a GPU
machine, then times the training step there.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from cvae_video import evaluate, make_gif, train
from cvae_video.inference import open_for_inference
from cvae_video.runtime import autocast, choose_precision, grad_scaler
from helpers import TINY_FLAGS, tiny_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]

CUDA = torch.device("cuda")


def cuda_flags(root, log_dir, *extra, precision: str = "fp32") -> list[str]:
    flags = list(TINY_FLAGS)
    flags[flags.index("--precision") + 1] = precision
    return ["--data_root", str(root), "--log_dir", str(log_dir), "--cuda", "--epoch_size", "2", "--n_pictures", "1",
            "--val_sequences", "4", *flags, *extra]


def metrics(log_dir) -> list[dict]:
    return [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_steps_in_each_precision(precision):
    from cvae_video.config import TrainConfig
    model = tiny_model().to(CUDA).to(memory_format=torch.channels_last)
    cfg = TrainConfig(n_past=2, n_future=3)
    optimizer = train.build_optimizer(cfg, model.parameters())
    scaler = grad_scaler(CUDA, precision)
    g = torch.Generator().manual_seed(0)
    batch = {"frames": torch.randint(0, 256, (4, 5, 3, 64, 64), dtype=torch.uint8, generator=g),
             "cond": torch.randn(4, 5, 7, generator=g)}
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(20):   # fp16: the scaler may skip the first steps while it finds its scale
        logs = train.train_step(model, optimizer, scaler, batch, cfg, beta=1.0, tfr=1.0, device=CUDA,
                                amp=autocast(CUDA, precision))
        assert all(map(torch.isfinite, map(torch.tensor, logs.values()))), logs
        if any(not torch.equal(a, b) for a, b in zip(before, model.parameters())):
            break
    else:
        pytest.fail(f"{precision}: no step changed the model")


def test_auto_chooses_a_half_precision_on_cuda():
    choice = choose_precision("auto", CUDA)
    assert choice.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")


@pytest.fixture(scope="module")
def cuda_run(synth_root, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("cuda_run")
    assert train.main(cuda_flags(synth_root, log_dir, "--niter", "1", precision="auto")) == 0
    return log_dir


def test_train_eval_and_pictures_on_cuda(cuda_run, synth_root, tmp_path):
    ckpt = torch.load(cuda_run / "last.pt", weights_only=True)
    assert ckpt["resolved"]["device"] == "cuda"
    assert all(v.device.type == "cpu" for v in ckpt["model"]["weights"].values())   # loadable anywhere
    out = tmp_path / "eval.json"
    assert evaluate.main(["--ckpt", str(cuda_run / "best.pt"), "--cuda", "--n_samples", "2", "--max_sequences",
                          "4", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["psnr"] > 0
    assert make_gif.main(["--ckpt", str(cuda_run / "best.pt"), "--cuda", "--indices", "0", "--n_samples", "2",
                          "--out", str(tmp_path / "gifs")]) == 0
    assert (tmp_path / "gifs" / "seq0.gif").is_file()


def test_resume_on_cuda(cuda_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(cuda_run, run)
    assert train.main(["--resume", str(run), "--niter", "2", "--no_progress"]) == 0
    assert [r["epoch"] for r in metrics(run)] == [0, 1]


def test_a_cuda_checkpoint_predicts_the_same_on_the_cpu(cuda_run, synth_root):
    on_gpu, on_cpu = (open_for_inference(cuda_run / "best.pt", device=d) for d in (CUDA, torch.device("cpu")))
    ds = on_cpu.open_split("", "test", 6)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    x = batch["frames"].float() / 255
    preds = [t.model.predict(x[:, :2].to(dev), batch["cond"].to(dev), 4, z_mode="mean").cpu()
             for t, dev in ((on_gpu, CUDA), (on_cpu, torch.device("cpu")))]
    assert torch.allclose(preds[0], preds[1], atol=2e-3), (preds[0] - preds[1]).abs().max()


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
           "cvae_video.train", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_torchrun_with_nccl(synth_root, tmp_path):
    torchrun(cuda_flags(synth_root, tmp_path / "ddp", "--niter", "1"))
    assert len(metrics(tmp_path / "ddp")) == 1


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_training_matches_eager(synth_root, tmp_path, mode):
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    common = ("--niter", "1", "--tfr", "1.0", "--seed", "3")
    assert train.main(cuda_flags(synth_root, eager, *common)) == 0
    assert train.main(cuda_flags(synth_root, compiled, *common, "--compile", "--compile_mode", mode)) == 0
    a, b = metrics(eager)[0], metrics(compiled)[0]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-2) and b["val_psnr"] == pytest.approx(a["val_psnr"], abs=0.1)


def test_compiled_training_under_ddp(synth_root, tmp_path):
    torchrun(cuda_flags(synth_root, tmp_path / "ddp_compiled", "--niter", "1", "--compile"))
    assert len(metrics(tmp_path / "ddp_compiled")) == 1


def test_sync_batchnorm_on_cuda(synth_root, tmp_path):
    torchrun(cuda_flags(synth_root, tmp_path / "sync_bn", "--niter", "1", "--sync_bn"))
    ckpt = torch.load(tmp_path / "sync_bn" / "last.pt", weights_only=True)
    assert any(k.endswith("running_mean") for k in ckpt["model"]["weights"])   # saved as plain BatchNorm buffers
