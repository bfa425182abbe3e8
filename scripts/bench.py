"""Benchmark of the training step, prediction, data loading and a per-frame yardstick, within one machine.

    python scripts/bench.py                              # lab size: vgg, width 1, batch 16, 2 -> 10 frames
    python scripts/bench.py --config configs/demo.toml --batch_size 8   # the demo's model
    python scripts/bench.py --precision fp32,bf16 --no-channels_last --json bench.json
    python scripts/bench.py --quick --json bench_quick.json   # tiny smoke run (a few seconds of work)

Measurements (synthetic random tensors unless stated):

- ``train``: ``cvae_video.train.train_step`` (forward, backward, Adam step; teacher forcing on, KL weight 1) at
  each precision in ``--precision``; ``--warmup`` steps, then the median of ``--steps`` steps. ``auto`` is first
  resolved as ``cvae-train`` resolves it (the start-up probe's time and choice are reported). Per step: the aten
  operations dispatched (a dispatch-mode counter: on a GPU, kernel launches) and the floating-point operations
  (``torch.utils.flop_counter``), hence the step's GFLOP/s, also as a share of the machine's convolution throughput
  (``conv``). ``--compile_mode`` compiles the step (``reduce-overhead``: CUDA graphs).
- ``conv``: the best throughput of three 3x3 convolutions with the lab model's channel counts and map sizes
  (forward and both backward passes), at each precision the training steps ran in.
- ``predict``: a batch of ``--batch_size`` sequences, ``n_past -> n_future`` frames, ``--n_samples`` samples each,
  under ``torch.inference_mode()`` in eval mode: one ``model.predict(..., n_samples=N)`` call against N calls
  with ``n_samples=1`` (``eval_batched_speedup``), and against calls of one sequence and one sample each, over
  ``--unbatched_sequences`` sequences (``eval_unbatched_speedup``, a ratio of sequences per second).
  ``eval_seq_per_s`` counts sampled sequences per second of the batched call.
- ``load``: sequences of ``n_past + n_future`` frames per second through a DataLoader (batch ``--batch_size``,
  ``num_workers=0``, random windows as in training), from the PNG files and from the packed cache
  (``cvae-data pack``). Without ``--data_root`` a synthetic data set of ``--load_trajectories`` trajectories
  is written to a temporary folder and packed.
- ``yardstick``: a deliberately plain fp32 NCHW training step (:func:`yardstick_forward`): the encoder and the
  decoder called frame by frame in a Python loop, the recurrent modules stepped one frame at a time with explicit
  state. Printed as yardstick time / step time for each precision.

Every measurement runs with the process setting that ``cvae-train`` and ``cvae-eval`` make
(:func:`cvae_video.runtime.keep_freed_memory`: glibc keeps freed memory for reuse), the yardstick included.

Peak memory is the growth of the process's peak resident set size (VmHWM, reset through /proc/self/clear_refs
where Linux allows it) over its size just before the measurement builds its model; on CUDA the peak of
``torch.cuda.max_memory_allocated``. Each measurement runs in a fresh subprocess (``--isolate``, the default
except with ``--quick``), so neither the peak nor allocator caches nor warmed-up kernels carry over between them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from cvae_video import config as config_mod
from cvae_video.config import TrainConfig
from cvae_video.data.dataset import frames_to_float
from cvae_video.inference import prediction_probe
from cvae_video.models.rnn import gaussian_kl
from cvae_video.models.svg import CVAE, ModelConfig
from cvae_video.runtime import PRECISIONS, autocast, choose_precision, cpu_name, grad_scaler, keep_freed_memory, \
    resolve_device
from cvae_video.train import build_optimizer, train_step, training_probe

QUICK = dict(width=0.125, batch_size=2, g_dim=16, z_dim=4, rnn_size=16, n_samples=2, steps=1, warmup=1,
             eval_repeats=1, unbatched_sequences=2, load_trajectories=8, load_seconds=0.2, threads=1)


# ---- the yardstick ----------------------------------------------------------------------------------------------

def yardstick_forward(model: CVAE, x: torch.Tensor, cond: torch.Tensor, n_past: int) -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    """The teacher-forced loss of ``CVAE.forward``, written the plain way: one frame per module call.

    x (B, T, C, H, W) in [0, 1], cond (B, T, cond_dim). Returns (recon, kl), summed over steps like the model's
    ``forward``; the latent noise is drawn in the same order, so under the same seed and in eval mode the two
    agree (in training mode BatchNorm sees B samples per call here, B * T there).
    """
    B, T = x.shape[:2]
    # the draws of forward's one reparameterize call over (B, T-1, z), taken step by step
    eps = torch.randn(B, T - 1, model.cfg.z_dim, device=x.device)
    hs, skips = [], []
    for t in range(T):
        h_t, skip_t = model.encoder(x[:, t])
        hs.append(h_t)
        skips.append(skip_t)
    post_state = pred_state = prior_state = None
    recon = kl = x.new_zeros(())
    for t in range(1, T):
        (mu_q, logvar_q), post_state = model.posterior(hs[t], post_state)
        z = mu_q + torch.exp(0.5 * logvar_q) * eps[:, t - 1]
        if model.prior is None:
            mu_p = logvar_p = torch.zeros_like(mu_q)
        else:
            (mu_p, logvar_p), prior_state = model.prior(hs[t - 1], prior_state)
        g, pred_state = model.predictor(torch.cat([hs[t - 1], z, cond[:, t]], -1), pred_state)
        skip = skips[t - 1] if model.cfg.last_frame_skip else skips[min(t - 1, n_past - 1)]
        x_hat = model.decoder.forward_concat(g, skip)
        recon = recon + ((x_hat - x[:, t]) ** 2).mean()
        kl = kl + gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).mean()
    return recon, kl


def yardstick_step(model: CVAE, optimizer, x, cond, n_past: int) -> float:
    model.train()
    recon, kl = yardstick_forward(model, x, cond, n_past)
    loss = recon + kl
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


# ---- measuring ------------------------------------------------------------------------------------------------

def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory growth (MB) of the block: process RSS on CPU, allocated memory on CUDA."""

    def __init__(self, device: torch.device):
        self.device, self.mb = device, 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.base = _rss_kb("VmRSS") or 0
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2 ** 20
            return
        peak = _rss_kb("VmHWM") if self.reset else None
        if peak is None:  # process-wide maximum since start: exact only in a fresh process
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mb = max(0, peak - self.base) / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _train_config(args) -> TrainConfig:
    length = {}
    if args.config:   # the model and run length of a training config (e.g. configs/demo.toml); the rest from flags
        full = config_mod.from_dict(config_mod.load_toml(args.config), args.config)
        model, length = full.model, {"niter": full.niter, "epoch_size": full.epoch_size}
    else:
        model = ModelConfig(backbone=args.backbone, width=args.width, g_dim=args.g_dim, z_dim=args.z_dim,
                            rnn_size=args.rnn_size, prior=args.prior)
    return TrainConfig(model=model, batch_size=args.batch_size, n_past=args.n_past, n_future=args.n_future, tfr=1.0,
                       channels_last=args.channels_last, seed=0, **length)


def _build(args, device, channels_last: bool):
    cfg = _train_config(args)
    torch.manual_seed(0)
    model = CVAE(cfg.model_config()).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return cfg, model


def _batch(args, device) -> dict:
    g = torch.Generator().manual_seed(0)
    T = args.n_past + args.n_future
    return {"frames": torch.randint(0, 256, (args.batch_size, T, 3, 64, 64), dtype=torch.uint8, generator=g),
            "cond": torch.randn(args.batch_size, T, 7, generator=g)}


class OpCounter(TorchDispatchMode):
    """Counts the aten operations dispatched inside the block (every kernel launch a GPU would see)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_step(step) -> dict:
    """Operations and floating-point operations of one call of ``step`` (already warmed up)."""
    with OpCounter() as ops:
        step()
    with FlopCounterMode(display=False) as flops:
        step()
    return {"ops": ops.count, "flops": flops.get_total_flops()}


def measure_train(args, device, precision: str) -> dict:
    """The training step at ``precision``; ``auto`` is first resolved as cvae-train resolves it (the probe's time
    and choice are reported)."""
    with PeakMemory(device) as mem:
        cfg, model = _build(args, device, args.channels_last)
        chose = {}
        if precision == "auto":
            t0 = time.perf_counter()
            choice = choose_precision("auto", device, training_probe(model, cfg), steps=cfg.niter * cfg.epoch_size)
            chose = {"chose": choice.precision, "probe_s": time.perf_counter() - t0, "probe_times_s": choice.times}
            precision = choice.precision
        optimizer = build_optimizer(cfg, model.parameters())
        scaler, amp = grad_scaler(device, precision), autocast(device, precision)
        batch = _batch(args, device)
        step_model = torch.compile(model, mode=args.compile_mode) if args.compile_mode else model

        def step():
            return train_step(step_model, optimizer, scaler, batch, cfg, beta=1.0, tfr=1.0, device=device, amp=amp)
        times = _timed(step, device, args.warmup, args.steps)
    return {"times_s": times, "step_s": statistics.median(times), "peak_memory_mb": mem.mb, **chose,
            **count_step(step)}


def measure_conv(args, device, precision: str) -> dict:
    """This machine's convolution throughput at ``precision``: the best of three 3x3 convolutions with the lab
    model's channel counts and map sizes (64 channels at 64x64, 128 at 32x32, 256 at 16x16), batch
    ``--batch_size``, channels-last, forward and both backward passes."""
    amp = autocast(device, precision)
    rates = {}
    for c, s in ((64, 64), (128, 32), (256, 16)):
        n = args.batch_size
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device).to(memory_format=torch.channels_last)
        x = torch.randn(n, c, s, s, device=device).to(memory_format=torch.channels_last).requires_grad_()

        def step():
            with amp:
                y = conv(x)
            y.float().sum().backward()
        t = statistics.median(_timed(step, device, 2, max(3, args.steps)))
        rates[f"{c}x{s}x{s}"] = 3 * 2 * n * s * s * c * c * 9 / t / 1e9   # forward, input and weight gradients
    return {"gflop_per_s": max(rates.values()), "by_shape": rates}


def measure_yardstick(args, device) -> dict:
    with PeakMemory(device) as mem:
        cfg, model = _build(args, device, channels_last=False)
        optimizer = build_optimizer(cfg, model.parameters())
        batch = _batch(args, device)
        x = frames_to_float(batch["frames"].to(device))
        cond = batch["cond"].to(device)
        def step():
            return yardstick_step(model, optimizer, x, cond, args.n_past)
        times = _timed(step, device, args.warmup, args.steps)
    return {"times_s": times, "step_s": statistics.median(times), "peak_memory_mb": mem.mb, **count_step(step)}


def measure_predict(args, device, precision: str) -> dict:
    with PeakMemory(device) as mem:
        _, model = _build(args, device, args.channels_last)
        model.eval()
        batch = _batch(args, device)
        x_past = frames_to_float(batch["frames"][:, :args.n_past].to(device))
        cond = batch["cond"].to(device)
        chose = {}
        if precision == "auto":
            choice = choose_precision("auto", device, prediction_probe(model, args.n_past))
            precision, chose = choice.precision, {"chose": choice.precision}
        amp = autocast(device, precision)
        gen = torch.Generator(device).manual_seed(0)
        S = args.n_samples

        def batched():
            with torch.inference_mode(), amp:
                model.predict(x_past, cond, args.n_future, n_samples=S, generator=gen)

        def looped():
            with torch.inference_mode(), amp:
                for _ in range(S):
                    model.predict(x_past, cond, args.n_future, generator=gen)

        n_single = min(args.batch_size, args.unbatched_sequences)

        def unbatched():
            with torch.inference_mode(), amp:
                for i in range(n_single):
                    model.predict(x_past[i:i + 1], cond[i:i + 1], args.n_future, generator=gen)

        t_batched = statistics.median(_timed(batched, device, 1, args.eval_repeats))
        t_looped = statistics.median(_timed(looped, device, 1, args.eval_repeats))
        t_single = statistics.median(_timed(unbatched, device, 1, args.eval_repeats))
    n = args.batch_size * S
    return {"batched_s": t_batched, "looped_s": t_looped, "seq_per_s": n / t_batched,
            "seq_per_s_looped": n / t_looped, "batched_speedup": t_looped / t_batched,
            "seq_per_s_unbatched": n_single / t_single, "unbatched_speedup": n / t_batched / (n_single / t_single),
            "peak_memory_mb": mem.mb, **chose}


def measure_load(args, device, source: str) -> dict:
    from torch.utils.data import DataLoader
    from cvae_video.data.dataset import VideoDataset, WindowSampler

    seq_len = args.n_past + args.n_future
    with PeakMemory(torch.device("cpu")) as mem:
        ds = VideoDataset(args.data_root, "train", seq_len, use_packed=source == "packed")
        sampler = WindowSampler(ds.lengths, seq_len, min(len(ds), args.load_sequences), seed=0)
        loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=0)
        n, epoch, t0 = 0, 0, time.perf_counter()
        while True:   # whole epochs until the time budget is used (at least one)
            sampler.set_epoch(epoch)
            for batch in loader:
                n += batch["frames"].shape[0]
            epoch += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= args.load_seconds:
                break
    return {"seq_per_s": n / elapsed, "sequences": n, "seconds": elapsed, "peak_memory_mb": mem.mb}


def run_one(args, kind: str, variant: str) -> dict:
    """One measurement; ``variant`` is the precision, or the source (png, packed) for ``load``."""
    device = resolve_device(args.device)
    keep_freed_memory()   # as cvae-train and cvae-eval do; the yardstick too, so only the model code differs
    if kind == "train":
        return measure_train(args, device, variant)
    if kind == "predict":
        return measure_predict(args, device, variant)
    if kind == "yardstick":
        return measure_yardstick(args, device)
    if kind == "conv":
        return measure_conv(args, device, variant)
    return measure_load(args, device, variant)


CHILD_KEYS = ("config", "compile_mode", "backbone", "width", "batch_size", "n_past", "n_future", "g_dim", "z_dim",
              "rnn_size", "prior",
              "steps", "warmup", "n_samples", "unbatched_sequences", "eval_repeats", "data_root", "load_sequences",
              "load_seconds", "device", "threads")


def run_isolated(args, kind: str, variant: str) -> dict:
    """One measurement in a fresh Python process: this script with the resolved settings and internal flags."""
    argv = [x for key in CHILD_KEYS for x in (f"--{key}", str(getattr(args, key)))]
    argv.append("--channels_last" if args.channels_last else "--no-channels_last")
    with tempfile.TemporaryDirectory(prefix="cvae-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, os.path.abspath(__file__), *argv, "--_child", kind, variant, str(out)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"measurement {kind}/{variant} failed (exit {proc.returncode}):\n{proc.stderr}")
        return json.loads(out.read_text())


# ---- data for the loader measurement ----------------------------------------------------------------------------

def prepare_data(args, tmp: Path) -> tuple[str, bool]:
    """(data root, packed cache usable). Generates and packs a synthetic set when no --data_root is given."""
    from cvae_video.data import pack, packed, synth
    if args.data_root:
        return args.data_root, packed.open_packed(args.data_root, "train") is not None
    root = tmp / "data"
    cfg = synth.SynthConfig(seq_len=max(args.n_past + args.n_future, 14 if args.quick else 30))
    synth.write_dataset(root, n_train=args.load_trajectories, n_validate=1, n_test=1, seed=0, cfg=cfg,
                        progress=False)
    pack.pack_split(root, "train", progress=False)
    return str(root), True


# ---- report ---------------------------------------------------------------------------------------------------

def machine_info(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": platform.processor(),
            "malloc_keeps_freed_memory": keep_freed_memory()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
        info["cpu"] = cpu_name() if names else info["cpu"]
        info["cpu_bf16"] = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    except (OSError, IndexError):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def format_table(res: dict) -> str:
    rows = [("measurement", "precision", "time (s)", "seq/s", "peak MB", "note")]
    mem = res["peak_memory_mb"]
    chose = res.get("auto_chose", {})
    for p, t in res["train_step_s"].items():
        ratio = res["yardstick_ratio"].get(p)
        shown = f"auto={chose['train']}" if p == "auto" else p
        rows.append(("train step", shown, f"{t:.4f}", f"{res['train_seq_per_s'][p]:.1f}",
                     f"{mem[f'train_{p}']:.0f}",
                     (f"yardstick/step {ratio:.2f}x, " if ratio else "") + f"{res['train_ops_per_step'][p]} ops, "
                     f"{res['train_gflop_per_s'][p]:.0f} GFLOP/s = {100 * res['conv_efficiency'][p]:.0f}% of conv"))
    for p, g in res["conv_gflop_per_s"].items():
        rows.append(("3x3 conv (best)", p, "-", "-", "-", f"{g:.0f} GFLOP/s (forward + backward; best of 64, 128, "
                     f"256 channels)"))
    if res["yardstick_step_s"]:
        rows.append(("yardstick step", "fp32", f"{res['yardstick_step_s']:.4f}",
                     f"{res['batch_size'] / res['yardstick_step_s']:.1f}", f"{mem['yardstick']:.0f}",
                     f"per-frame calls, NCHW, {res['yardstick_ops_per_step']} ops"))
    for p, v in res["eval_seq_per_s"].items():
        rows.append(("predict batched", f"auto={chose['predict']}" if p == "auto" else p,
                     f"{res['predict_batched_s'][p]:.4f}", f"{v:.1f}",
                     f"{mem[f'predict_{p}']:.0f}", f"{res['eval_batched_speedup'][p]:.2f}x vs "
                     f"{res['n_samples']} single-sample calls, {res['eval_unbatched_speedup'][p]:.2f}x vs "
                     f"1 sequence x 1 sample per call ({res['eval_seq_per_s_unbatched'][p]:.1f} seq/s)"))
    for src in ("png", "packed"):
        v = res[f"load_seq_per_s_{src}"]
        rows.append((f"load {src}", "-", "-", "-" if v is None else f"{v:.1f}",
                     "-" if mem.get(f"load_{src}") is None else f"{mem[f'load_{src}']:.0f}",
                     "no up-to-date packed cache" if v is None else "DataLoader, num_workers=0"))
    step = res.get("config_step")
    if step:
        rows.append(("config's step", f"{step['precision']}={step['chose']}" if step["precision"] == "auto"
                     else step["precision"], f"{step['step_s']:.4f}", "-", "-",
                     f"{step['speedup']:.2f}x the fp32 eager step ({step['fp32_eager_step_s']:.4f} s)"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i in (0, 1, 5) else c.rjust(w) for i, (c, w) in
                               enumerate(zip(r, widths))).rstrip())
        if k == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="", help="take the model from this training config (TOML) instead of the "
                   "model flags below")
    p.add_argument("--backbone", default="vgg")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--n_past", type=int, default=2)
    p.add_argument("--n_future", type=int, default=10)
    p.add_argument("--g_dim", type=int, default=128)
    p.add_argument("--z_dim", type=int, default=64)
    p.add_argument("--rnn_size", type=int, default=256)
    p.add_argument("--prior", default="fixed")
    p.add_argument("--precision", default="fp32,bf16,auto", help="comma-separated list, each measured (auto: "
                   "resolved as cvae-train resolves it, then timed)")
    p.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                   help="model in channels-last memory format (the training default); the yardstick is NCHW")
    p.add_argument("--compile_mode", default="", help="torch.compile the training step in this mode (default, "
                   "reduce-overhead, max-autotune); empty: eager. The warm-up steps wait for the compilation")
    p.add_argument("--steps", type=int, default=5, help="timed training steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--n_samples", type=int, default=10, help="samples per sequence in the prediction benchmark")
    p.add_argument("--unbatched_sequences", type=int, default=4,
                   help="sequences predicted one call each (one sample) for the unbatched comparison")
    p.add_argument("--eval_repeats", type=int, default=3, help="timed prediction calls (median reported)")
    p.add_argument("--data_root", default="", help="data set for the loader benchmark (default: synthetic)")
    p.add_argument("--load_trajectories", type=int, default=256, help="size of the synthetic loader data set")
    p.add_argument("--load_sequences", type=int, default=256, help="sequences per loader epoch")
    p.add_argument("--load_seconds", type=float, default=2.0, help="minimum time per loader measurement")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="each measurement in a fresh process (default: on, off with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: small model and batch, one step")
    p.add_argument("--json", default="", metavar="OUT", help="write the results as JSON")
    p.add_argument("--_child", nargs=3, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if parser.get_default(key) == getattr(args, key):   # explicit flags still win
                setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        parser.error(f"--precision: each of {PRECISIONS}, got {args.precision!r}")

    if args._child:   # internal: one measurement, written as JSON
        kind, variant, out = args._child
        Path(out).write_text(json.dumps(run_one(args, kind, variant)))
        return 0

    device = resolve_device(args.device)
    isolate = (not args.quick) if args.isolate is None else args.isolate

    def measure(kind: str, variant: str) -> dict:
        print(f"  measuring {kind} {variant} ...", file=sys.stderr, flush=True)
        return run_isolated(args, kind, variant) if isolate else run_one(args, kind, variant)

    given_root = bool(args.data_root)
    parts = _measure_all(args, precisions, measure)
    res = _results(args, device, isolate, given_root, *parts)
    _report(args, res)
    return 0


def _measure_all(args, precisions: list[str], measure) -> tuple:
    """The training steps per precision, the convolution peak of each precision they chose, the yardstick (the
    plain model only), prediction per precision and loading: (train, conv, yard, pred, load)."""
    tmp = Path(tempfile.mkdtemp(prefix="cvae-bench-data-"))
    try:
        args.data_root, packed_ok = prepare_data(args, tmp)
        train = {p: measure("train", p) for p in precisions}
        conv_precisions = sorted({r.get("chose", p) for p, r in train.items()})
        conv = {p: measure("conv", p) for p in conv_precisions}
        # the yardstick is written for the plain SVG model: a model with other options has none
        plain = _train_config(args).model
        plain = plain.output == "direct" and not plain.spatial_cond
        yard = measure("yardstick", "fp32") if plain else None
        pred = {p: measure("predict", p) for p in precisions}
        load = {"png": measure("load", "png"), "packed": measure("load", "packed") if packed_ok else None}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return train, conv, yard, pred, load


def _results(args, device, isolate: bool, given_root: bool, train, conv, yard, pred, load) -> dict:
    """The measurements as the report's JSON."""
    # a generated data set lived in a temporary folder: the report says what it was, not where
    shown_root = {"data_root": args.data_root if given_root else f"(synthetic, {args.load_trajectories} trajectories)"}
    res = {
        "config": {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "json"}
                  | {"isolate": isolate} | shown_root,
        "machine": machine_info(device),
        "batch_size": args.batch_size, "n_samples": args.n_samples,
        "train_step_s": {p: r["step_s"] for p, r in train.items()},
        "train_step_times_s": {p: r["times_s"] for p, r in train.items()},
        "train_seq_per_s": {p: args.batch_size / r["step_s"] for p, r in train.items()},
        "yardstick_step_s": yard["step_s"] if yard else None,
        "yardstick_ratio": {p: yard["step_s"] / r["step_s"] for p, r in train.items()} if yard else {},
        "auto_chose": {kind: r["chose"] for kind, r in (("train", train.get("auto")), ("predict", pred.get("auto")))
                       if r},
        "auto_probe_s": train["auto"]["probe_s"] if "auto" in train else None,
        "train_ops_per_step": {p: r["ops"] for p, r in train.items()},
        "yardstick_ops_per_step": yard["ops"] if yard else None,
        "train_flops_per_step": next(iter(train.values()))["flops"],   # the first precision asked for
        "conv_gflop_per_s": {p: r["gflop_per_s"] for p, r in conv.items()},
        "train_gflop_per_s": {p: r["flops"] / r["step_s"] / 1e9 for p, r in train.items()},
        "conv_efficiency": {p: r["flops"] / r["step_s"] / 1e9 / conv[r.get("chose", p)]["gflop_per_s"]
                            for p, r in train.items()},
        "eval_seq_per_s": {p: r["seq_per_s"] for p, r in pred.items()},
        "eval_seq_per_s_looped": {p: r["seq_per_s_looped"] for p, r in pred.items()},
        "eval_batched_speedup": {p: r["batched_speedup"] for p, r in pred.items()},
        "eval_seq_per_s_unbatched": {p: r["seq_per_s_unbatched"] for p, r in pred.items()},
        "eval_unbatched_speedup": {p: r["unbatched_speedup"] for p, r in pred.items()},
        "predict_batched_s": {p: r["batched_s"] for p, r in pred.items()},
        "predict_looped_s": {p: r["looped_s"] for p, r in pred.items()},
        "load_seq_per_s_png": load["png"]["seq_per_s"],
        "load_seq_per_s_packed": load["packed"]["seq_per_s"] if load["packed"] else None,
        "peak_memory_mb": {**{f"train_{p}": r["peak_memory_mb"] for p, r in train.items()},
                           **({"yardstick": yard["peak_memory_mb"]} if yard else {}),
                           **{f"predict_{p}": r["peak_memory_mb"] for p, r in pred.items()},
                           "load_png": load["png"]["peak_memory_mb"],
                           "load_packed": load["packed"]["peak_memory_mb"] if load["packed"] else None},
    }
    if res["load_seq_per_s_packed"]:
        res["load_packed_speedup"] = res["load_seq_per_s_packed"] / res["load_seq_per_s_png"]
    res["config_step"] = _config_step(args, train)
    return res


def _config_step(args, train: dict) -> dict | None:
    """With --config: the step in the precision the config asks for (its ``auto`` as resolved here) beside fp32
    eager, the comparison a config's speed is judged by; None without a config, without both measured, or
    when the step was compiled (the fp32 row is then not eager)."""
    if not args.config or args.compile_mode:
        return None
    precision = config_mod.load_toml(args.config).get("precision", "auto")
    if precision not in train or "fp32" not in train:
        return None
    step = train[precision]["step_s"]
    return {"precision": precision, "chose": train[precision].get("chose", precision), "step_s": step,
            "fp32_eager_step_s": train["fp32"]["step_s"], "speedup": train["fp32"]["step_s"] / step}


def _report(args, res: dict) -> None:
    """Print the table (and write the JSON with --json)."""
    m = res["machine"]
    model = (f"the model of {args.config}" if args.config else
             f"{args.backbone} width {args.width:g}, g {args.g_dim} z {args.z_dim} rnn {args.rnn_size}")
    print(f"{model}, batch {args.batch_size}, {args.n_past} -> {args.n_future} frames"
          f"{', channels_last' if args.channels_last else ''}"
          f" | {m['device']}, {m['threads']} threads, torch {m['torch']}, {m.get('cpu', '')}")
    print(format_table(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
