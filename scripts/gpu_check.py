"""Check a CUDA machine in one command: the ``cuda`` tests, then the training step timed there.

    python scripts/gpu_check.py                         # writes gpu_check.json and prints a table
    python scripts/gpu_check.py --json out.json --budget_s 300

1. ``pytest -m cuda tests/test_cuda.py``: training in fp32, bf16 and fp16, evaluation, pictures, resume, a checkpoint
   trained on CUDA predicting the same on the CPU, ``torchrun`` with NCCL, ``torch.compile`` (default and
   ``reduce-overhead``, that is CUDA graphs) with and without DDP, SyncBatchNorm.
2. The training step (``scripts/bench.py``'s measurement, each in a fresh process) at lab size with batch 16 and 64
   and at the demo's size (``configs/demo.toml``, batch 8), in fp32, bf16 and fp16, eager and compiled, with the
   peak of allocated GPU memory. Compiled measurements wait for their compilation; once ``--budget_s`` is spent the
   remaining ones are listed as skipped rather than run.

Without CUDA it says there is nothing to check and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"lab, batch 16": [], "lab, batch 64": ["--batch_size", "64"],
         "demo, batch 8": ["--config", str(ROOT / "configs" / "demo.toml"), "--batch_size", "8"]}
PRECISIONS = ("fp32", "bf16", "fp16")
MODES = ("eager", "default")   # torch.compile modes; "eager" is none


def _bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tests(timeout_s: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", str(ROOT / "tests" / "test_cuda.py")]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"returncode": None, "summary": f"timed out after {timeout_s:.0f} s", "seconds": timeout_s}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return {"returncode": done.returncode, "summary": lines[-1] if lines else done.stderr[-500:],
            "seconds": time.perf_counter() - t0, "output_tail": done.stdout[-3000:]}


def time_steps(budget_s: float, steps: int, warmup: int) -> list[dict]:
    bench = _bench()
    start, rows = time.perf_counter(), []
    for size, extra in SIZES.items():
        for mode in MODES:
            for precision in PRECISIONS:
                row = {"size": size, "mode": mode, "precision": precision}
                if time.perf_counter() - start > budget_s:
                    rows.append(row | {"skipped": "time budget spent"})
                    continue
                argv = ["--device", "cuda", "--steps", str(steps), "--warmup", str(warmup), *extra]
                if mode != "eager":
                    argv += ["--compile_mode", mode]
                args = bench.build_parser().parse_args(argv)
                try:
                    r = bench.run_isolated(args, "train", precision)
                except RuntimeError as e:
                    rows.append(row | {"error": str(e).splitlines()[-1][:300]})
                    continue
                rows.append(row | {"step_s": r["step_s"], "seq_per_s": args.batch_size / r["step_s"],
                                   "peak_memory_mb": r["peak_memory_mb"], "ops": r["ops"]})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'size':<16}{'mode':<10}{'precision':<11}{'step (ms)':>10}{'seq/s':>9}{'peak MB':>9}",
             "-" * 65]
    for r in rows:
        if "step_s" in r:
            lines.append(f"{r['size']:<16}{r['mode']:<10}{r['precision']:<11}{1000 * r['step_s']:>10.1f}"
                         f"{r['seq_per_s']:>9.0f}{r['peak_memory_mb']:>9.0f}")
        else:
            lines.append(f"{r['size']:<16}{r['mode']:<10}{r['precision']:<11}  {r.get('skipped') or r['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default="gpu_check.json", help="where the results go")
    p.add_argument("--budget_s", type=float, default=330, help="seconds for the timings (the tests come first)")
    p.add_argument("--tests_timeout_s", type=float, default=240)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--skip_tests", action="store_true")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, torch.cuda.is_available() is False): "
              f"nothing to check. The cuda tests skip; run this on a machine with a GPU.")
        return 0
    info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
            "bf16": torch.cuda.is_bf16_supported()}
    print(f"gpu_check: {info['gpu']}, torch {info['torch']}, CUDA {info['cuda']}", flush=True)
    tests = {"skipped": True} if args.skip_tests else run_tests(args.tests_timeout_s)
    print(f"cuda tests: {tests.get('summary', 'skipped')}", flush=True)
    rows = time_steps(args.budget_s, args.steps, args.warmup)
    print(format_table(rows))
    Path(args.json).write_text(json.dumps({"machine": info, "tests": tests, "train_steps": rows}, indent=2) + "\n")
    return 0 if tests.get("skipped") or tests.get("returncode") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
