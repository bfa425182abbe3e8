import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import tiny_model

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_quick_run_writes_every_number(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "train step" in proc.stdout and "yardstick" in proc.stdout
    res = json.loads(out.read_text())
    for key in ("train_step_s", "train_seq_per_s", "eval_seq_per_s", "eval_seq_per_s_looped",
                "eval_batched_speedup", "eval_seq_per_s_unbatched", "eval_unbatched_speedup", "yardstick_ratio",
                "train_ops_per_step", "train_gflop_per_s", "conv_efficiency"):
        assert set(res[key]) == {"fp32", "bf16", "auto"}, key
        assert all(positive(v) for v in res[key].values()), key
    for key in ("load_seq_per_s_png", "load_seq_per_s_packed", "yardstick_step_s", "load_packed_speedup",
                "auto_probe_s", "train_flops_per_step", "yardstick_ops_per_step"):
        assert positive(res[key]), key
    assert set(res["auto_chose"]) == {"train", "predict"} and set(res["auto_chose"].values()) <= {"fp32", "bf16"}
    assert set(res["conv_gflop_per_s"]) == {res["auto_chose"]["train"], "fp32", "bf16"}
    # one fused step dispatches far fewer operations than the frame-by-frame yardstick
    assert res["train_ops_per_step"]["fp32"] < res["yardstick_ops_per_step"] / 2
    measured = {f"{kind}_{p}" for kind in ("train", "predict") for p in ("fp32", "bf16", "auto")}
    assert set(res["peak_memory_mb"]) == measured | {"yardstick", "load_png", "load_packed"}
    assert all(v >= 0 for v in res["peak_memory_mb"].values())   # growth: a cached allocator may need none
    assert res["config_step"] is None   # no --config


def test_a_configs_step_is_set_beside_the_fp32_eager_step(tmp_path):
    bench = load_bench()
    config = tmp_path / "c.toml"
    config.write_text('precision = "auto"\n')
    train = {"fp32": {"step_s": 0.3}, "auto": {"step_s": 0.2, "chose": "bf16"}, "bf16": {"step_s": 0.25}}
    args = bench.build_parser().parse_args(["--config", str(config)])
    assert bench._config_step(args, train) == {"precision": "auto", "chose": "bf16", "step_s": 0.2,
                                               "fp32_eager_step_s": 0.3, "speedup": pytest.approx(1.5)}
    config.write_text('precision = "bf16"\n')
    assert bench._config_step(args, train)["speedup"] == pytest.approx(1.2)
    assert bench._config_step(bench.build_parser().parse_args(["--config", str(config), "--compile_mode",
                                                               "default"]), train) is None
    assert bench._config_step(bench.build_parser().parse_args([]), train) is None


@pytest.mark.parametrize("kw", [dict(), dict(prior="learned", backbone="vgg"), dict(last_frame_skip=True)])
def test_yardstick_forward_equals_model_forward(kw):
    bench = load_bench()
    model = tiny_model(**kw).eval()
    g = torch.Generator().manual_seed(0)
    x, cond = torch.rand(2, 6, 3, 64, 64, generator=g), torch.randn(2, 6, 7, generator=g)
    with torch.no_grad():
        torch.manual_seed(5)
        out = model(x, cond, n_past=2, teacher_forcing=True)
        torch.manual_seed(5)
        recon, kl = bench.yardstick_forward(model, x, cond, n_past=2)
    assert torch.allclose(recon, out["recon"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(kl, out["kl"], rtol=1e-5, atol=1e-5)
    assert out["kl"] > 0


def test_gpu_check_without_cuda_says_there_is_nothing_to_check(tmp_path):
    script = BENCH.parent / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script), "--json", str(tmp_path / "g.json")], capture_output=True,
                          text=True, timeout=120, env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0 and "nothing to check" in proc.stdout
    assert not (tmp_path / "g.json").exists()


def test_gpu_check_table_lists_every_measurement():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH.parent / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    rows = [{"size": "lab, batch 16", "mode": "eager", "precision": "bf16", "step_s": 0.05, "seq_per_s": 320.0,
             "peak_memory_mb": 900.0, "ops": 1755},
            {"size": "lab, batch 64", "mode": "default", "precision": "fp16", "skipped": "time budget spent"}]
    table = gpu_check.format_table(rows)
    assert "50.0" in table and "320" in table and "time budget spent" in table


def test_compile_mode_reaches_torch_compile(monkeypatch):
    from cvae_video import distributed
    from cvae_video.config import TrainConfig
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: seen.append(mode) or model)
    model = tiny_model()
    assert distributed.wrap_model(model, TrainConfig(compile=True, compile_mode="reduce-overhead"),
                                  distributed.World()) is model
    assert distributed.wrap_model(model, TrainConfig(), distributed.World()) is model
    assert seen == ["reduce-overhead"]
