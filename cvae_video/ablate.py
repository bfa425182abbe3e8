"""`cvae-ablate`: a grid of training runs from one base config, each varying one factor, and its report.

A study file (TOML) names the base config, overrides for every run (e.g. shorter training), and the factors:

    base = "demo.toml"                 # relative to the study file
    n_samples = 5                      # futures per test sequence in the evaluation
    gif_indices = [0, 1]               # test sequences shown
    [overrides]
    niter = 6
    [[factors]]
    name = "Teacher forcing"
    key = "tfr"
    values = [1.0, 0.0]
    labels = ["on (tfr 1)", "off (tfr 0)"]   # optional

A value may also be a table of several keys, for a setting that needs more than one change: with the demo's
decoder, which draws the condition, ``values = ["full", {condition = "none", spatial_cond = false, keypoints = 0}]``
compares the model with and without conditions.

Every distinct config is trained once (a setting equal to the base is the base run, shared by all factors), then
evaluated on the test split and drawn. A run that finished (``done.json``) is not trained again; an interrupted one
is resumed. ``report.md`` is written from the runs' own ``metrics.jsonl`` and ``eval.json``: no number is typed in.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from . import config as config_mod
from .errors import ConfigError, CvaeError
from .fileio import BadFile, atomic_write_json, atomic_write_text, read_json, read_json_lines
from .metrics import ACTIVE_UNITS_THRESHOLD
from .runtime import keep_freed_memory


@dataclass
class StudyRun:
    """One run of a study: its id, the training config it runs, and how that differs from the base."""
    run_id: str
    cfg: config_mod.TrainConfig
    diff: dict


@dataclass
class Factor:
    name: str
    key: str
    values: list
    labels: list[str]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")


def load_study(path: str | Path) -> tuple[dict, list[Factor]]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: study file not found")
    try:
        raw = config_mod.tomllib.loads(path.read_text(encoding="utf-8"))
    except config_mod.tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    known = {"base", "overrides", "factors", "n_samples", "gif_indices", "eval_batch_size", "lpips", "lpips_weights",
             "checkpoint"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if "base" not in raw or not raw.get("factors"):
        raise ConfigError(f"{path}: needs 'base' (a config file) and at least one [[factors]] table")
    factors = []
    for i, f in enumerate(raw["factors"]):
        missing = {"name", "key", "values"} - set(f)
        if missing:
            raise ConfigError(f"{path}: factor {i + 1} lacks {', '.join(sorted(missing))}")
        if f["key"] not in config_mod.KEYS:
            raise ConfigError(f"{path}: factor {f['name']!r}: unknown config key {f['key']!r}")
        for v in f["values"]:
            unknown = [k for k in v if k not in config_mod.KEYS] if isinstance(v, dict) else []
            if unknown:
                raise ConfigError(f"{path}: factor {f['name']!r}: unknown config key {unknown[0]!r} in a value")
        labels = f.get("labels") or [_value_text(f["key"], v) for v in f["values"]]
        if len(labels) != len(f["values"]):
            raise ConfigError(f"{path}: factor {f['name']!r}: {len(labels)} labels for {len(f['values'])} values")
        factors.append(Factor(f["name"], f["key"], list(f["values"]), list(labels)))
    checkpoint = raw.get("checkpoint", "best")
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"{path}: checkpoint must be \"best\" (the best validation PSNR) or \"last\" (the end of "
                          f"training), got {checkpoint!r}")
    base_path = (path.parent / raw["base"]).resolve()
    base = config_mod.load_toml(base_path) | raw.get("overrides", {})
    settings = {"base": base, "n_samples": int(raw.get("n_samples", 5)),
                "gif_indices": list(raw.get("gif_indices", [0])),
                "eval_batch_size": int(raw.get("eval_batch_size", 32)), "lpips": bool(raw.get("lpips", False)),
                "lpips_weights": str(raw.get("lpips_weights", "")), "checkpoint": checkpoint}
    return settings, factors


def _value_text(key: str, value) -> str:
    """A factor's value as a label: ``key = value``, or each key of a table value."""
    items = value.items() if isinstance(value, dict) else [(key, value)]
    return ", ".join(f"{k} = {v}" for k, v in items)


def plan_runs(base: dict, factors: list[Factor], out: Path) -> tuple[dict[str, StudyRun], dict[str, list[str]]]:
    """Distinct runs, and for each factor the run id of each of its values."""
    base_flat = config_mod.from_dict(base, "study base").flat()
    runs: dict[str, StudyRun] = {}
    by_factor: dict[str, list[str]] = {}
    for f in factors:
        ids = []
        for value in f.values:
            values = base | (value if isinstance(value, dict) else {f.key: value})
            cfg = config_mod.from_dict(values, f"study factor {f.name!r}")
            diff = {k: v for k, v in cfg.flat().items() if v != base_flat[k]}
            run_id = "base" if not diff else _slug("_".join(f"{k}={v}" for k, v in sorted(diff.items())))
            cfg.log_dir = str(out / run_id)
            runs.setdefault(run_id, StudyRun(run_id, cfg, diff))
            ids.append(run_id)
        by_factor[f.name] = ids
    return runs, by_factor


def _config_digest(cfg: config_mod.TrainConfig) -> str:
    d = cfg.flat()
    d.pop("num_workers", None)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def execute(run: StudyRun, *, n_samples: int, gif_indices: list[int], eval_batch_size: int, progress: bool,
            lpips: bool = False, lpips_weights: str = "", checkpoint: str = "best") -> dict:
    """Train (or resume), evaluate and draw one run; returns its done.json record. ``checkpoint``: which of the
    run's checkpoints is evaluated and drawn, ``"best"`` (by validation PSNR of one sample) or ``"last"``."""
    from .evaluate import EvalConfig, evaluate
    from .make_gif import PictureConfig, make_pictures
    from .train import train

    log_dir = Path(run.cfg.log_dir)
    done = log_dir / "done.json"
    digest = _config_digest(run.cfg) + ("" if checkpoint == "best" else f"-{checkpoint}")
    if done.is_file():
        try:
            record = read_json(done)
        except BadFile as e:   # e.g. left by an older version killed mid-write: the run's evaluation is redone
            print(f"cvae-ablate: {e}; evaluating run {run.run_id} again", file=sys.stderr)
            record = {}
        if isinstance(record, dict) and record.get("config_digest") == digest:
            return record
    resumable = (log_dir / "last.pt").is_file() and (log_dir / "config.toml").is_file() and \
        config_mod.from_dict(config_mod.load_toml(log_dir / "config.toml")) == run.cfg
    if progress:
        print(f"== run {run.run_id}: {'resuming' if resumable else 'training'}", flush=True)
    train(run.cfg, log_dir / "last.pt" if resumable else None, overwrite=not resumable, progress=progress)
    where = {"device": run.cfg.device}   # evaluated where it trained
    ckpt = str(log_dir / f"{checkpoint}.pt")
    result = evaluate(ckpt, EvalConfig(split="test", n_samples=n_samples, batch_size=eval_batch_size,
                                       seed=run.cfg.seed, lpips=lpips, lpips_weights=lpips_weights, **where),
                      progress=False)
    atomic_write_json(log_dir / "eval.json", result)
    pictures = make_pictures(ckpt, str(log_dir / "gifs"),
                             PictureConfig(indices=gif_indices, seed=run.cfg.seed, **where))
    record = {"run_id": run.run_id, "config_digest": digest, "pictures": [str(p) for p in pictures]}
    atomic_write_json(done, record)   # last: a run with done.json is complete
    return record


def _shown(path: Path) -> str:
    """``path`` as a report shows it: relative to the working folder when inside it, else from the run folder's
    parent on (a report must not name the machine's folders)."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix() if not path.is_absolute() else "/".join(path.parts[-3:])


def _records(log_dir: Path) -> list[dict]:
    return read_json_lines(log_dir / "metrics.jsonl")


def run_numbers(log_dir: Path) -> dict:
    """The numbers of one run, read from its own files."""
    records = _records(log_dir)
    val = [r["val_psnr"] for r in records if r.get("val_psnr") is not None]
    ev = read_json(log_dir / "eval.json")
    m = ev["methods"]
    return {"best_val_psnr": max(val), "epochs": len(records),
            "train_minutes": sum(r["seconds"] for r in records) / 60,
            "test_psnr": m["model_mean_of_n"]["psnr"], "test_psnr_ci95": m["model_mean_of_n"]["psnr_ci95"],
            "test_ssim": m["model_mean_of_n"]["ssim"], "test_ssim_ci95": m["model_mean_of_n"]["ssim_ci95"],
            "best_of_n_psnr": m["model_best_psnr"]["psnr"], "best_of_n_psnr_ci95": m["model_best_psnr"]["psnr_ci95"],
            "best_of_n_ssim": m["model_best_ssim"]["ssim"],
            "prior_mean_psnr": m["model_prior_mean"]["psnr"],
            "best_minus_mean_psnr": m["model_best_psnr"]["psnr"] - m["model_mean_of_n"]["psnr"],
            # None where not scored (a model without conditions), as eval.json says in shuffled_condition_note
            "shuffled_condition_psnr": (m.get("model_shuffled_condition") or {}).get("psnr"),
            "kl_per_step": ev["kl_per_step"], "active_units": ev.get("active_units"),
            "z_dim": len(ev["latent_variance"]) if "latent_variance" in ev else None, "diversity": ev["diversity"],
            "copy_last_psnr": m["baseline_copy_last"]["psnr"], "copy_last_ssim": m["baseline_copy_last"]["ssim"],
            "n_samples": ev["n_samples"], "n_sequences": ev["n_sequences"],
            **({"test_lpips": m["model_mean_of_n"]["lpips"], "best_of_n_lpips": m["model_best_lpips"]["lpips"],
                "copy_last_lpips": m["baseline_copy_last"]["lpips"]} if "lpips" in ev else {})}


def _number(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def factor_verdict(labels: list[str], numbers: list[dict]) -> str:
    """Which setting of a factor wins, by how much, and whether the difference is outside the 95% intervals
    (the two half-widths added: intervals that overlap do not tell the settings apart), for the mean of N and
    for best of N."""
    parts = []
    for name, key in (("Mean of N", "test_psnr"), ("Best of N", "best_of_n_psnr")):
        order = sorted(range(len(labels)), key=lambda i: -numbers[i][key])
        top = numbers[order[0]]
        others = []
        for i in order[1:]:
            gap = top[key] - numbers[i][key]
            apart = gap > top[f"{key}_ci95"] + numbers[i][f"{key}_ci95"]
            others.append(f"{gap:.2f} dB above {labels[i]} "
                          f"({'outside' if apart else 'within'} the 95% intervals)")
        parts.append(f"{name}: {labels[order[0]]} wins, " + "; ".join(others) + ".")
    return " ".join(parts)


def _units(numbers: dict) -> str:
    """Active units as ``k of z_dim`` ("-" for an evaluation that did not count them)."""
    return "-" if numbers["active_units"] is None else f"{numbers['active_units']} of {numbers['z_dim']}"


def write_report(study_path: Path, out: Path, report_dir: Path, runs: dict[str, StudyRun],
                 by_factor: dict[str, list[str]], factors: list[Factor], checkpoint: str = "best") -> Path:
    """report.md and its figures in ``report_dir``; figures and GIFs are copied there so the folder stands alone."""
    figures = report_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    numbers = {rid: run_numbers(Path(r.cfg.log_dir)) for rid, r in runs.items()}
    lpips = all("test_lpips" in n for n in numbers.values())   # LPIPS columns when every run was scored with it
    lines = _report_header(study_path, out, next(iter(numbers.values())), checkpoint, lpips)
    for f in factors:
        lines += _factor_section(f, by_factor[f.name], numbers, runs, figures, report_dir, lpips)
    lines += ["## Runs", "", "Each run's own training curves, its prediction grid for the first GIF sequence "
              "(top row ground truth, then the best sample by SSIM and further samples), and its GIF.", ""]
    for rid, r in runs.items():
        lines += _run_section(rid, r, figures)
    report = report_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    atomic_write_json(report_dir / "study.json", {"runs": numbers, "factors": by_factor})
    return report


def _report_header(study_path: Path, out: Path, any_run: dict, checkpoint: str, lpips: bool) -> list[str]:
    """The report's title and the paragraph that says what its numbers are."""
    return [f"# Ablation study: {study_path.name}", "",
            f"Generated by `cvae-ablate --study {_shown(study_path)}` from the runs in `{_shown(out)}`. "
            f"Every number below is read from the runs' `metrics.jsonl` and `eval.json`.", "",
            f"Test: each run's {checkpoint}.pt ("
            + ("the epoch with the best validation PSNR" if checkpoint == "best" else "the end of training")
            + f"), lab protocol on the test split ({any_run['n_sequences']} sequences), "
            f"{any_run['n_samples']} samples per sequence; PSNR in dB, mean of N samples ± 95% confidence "
            f"half-width over sequences. Best-of-N picks the best sample per sequence (by PSNR for the PSNR column, "
            f"by SSIM for the SSIM column); best minus mean is best-of-N PSNR minus test PSNR. Prior mean: z "
            f"fixed at the posterior's mean for the given frames and the prior's mean after. Shuffled condition: "
            f"every sequence predicted with another test sequence's actions and positions (mean of N); the drop "
            f"from test PSNR is what the condition is worth (n/a for a model without conditions). KL per step: "
            f"posterior against prior on the test sequences, nats. Active units: latent dimensions whose "
            f"posterior mean varies over the test sequences and steps with variance above "
            f"{ACTIVE_UNITS_THRESHOLD:g}, of z_dim. Diversity: standard deviation across the N samples, mean over "
            f"pixels and predicted frames." + (" LPIPS: AlexNet v0.1, lower is closer; best-of-N by lowest LPIPS."
                                               if lpips else ""), ""]


def _factor_section(f: Factor, ids: list[str], numbers: dict, runs: dict[str, StudyRun], figures: Path,
                    report_dir: Path, lpips: bool) -> list[str]:
    """One factor's table of its settings' numbers, its verdict, and its curves and per-frame figures."""
    from .viz import plot_eval_per_frame, plot_runs
    slug = _slug(f.name.lower())
    lines = [f"## {f.name} (`{f.key}`)", "",
             "| setting | run | best val PSNR | test PSNR | test SSIM | best-of-N PSNR | best minus mean "
             "| best-of-N SSIM | prior-mean PSNR | shuffled-condition PSNR | KL per step | active units "
             "| diversity | copy-last PSNR | minutes |"
             + (" test LPIPS | best-of-N LPIPS | copy-last LPIPS |" if lpips else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if lpips else "")]
    for label, rid in zip(f.labels, ids):
        n = numbers[rid]
        lines.append(f"| {label} | `{rid}` | {n['best_val_psnr']:.2f} | {n['test_psnr']:.2f} ± "
                     f"{n['test_psnr_ci95']:.2f} | {n['test_ssim']:.4f} ± {n['test_ssim_ci95']:.4f} | "
                     f"{n['best_of_n_psnr']:.2f} | {n['best_minus_mean_psnr']:+.2f} | {n['best_of_n_ssim']:.4f} | "
                     f"{n['prior_mean_psnr']:.2f} | {_number(n['shuffled_condition_psnr'], '.2f')} | "
                     f"{n['kl_per_step']:.3g} | {_units(n)} | {n['diversity']:.4f} | "
                     f"{n['copy_last_psnr']:.2f} | {n['train_minutes']:.1f} |"
                     + (f" {n['test_lpips']:.4f} | {n['best_of_n_lpips']:.4f} | {n['copy_last_lpips']:.4f} |"
                        if lpips else ""))
    lines += ["", factor_verdict(f.labels, [numbers[rid] for rid in ids])]
    curves = plot_runs({label: _records(Path(runs[rid].cfg.log_dir)) for label, rid in zip(f.labels, ids)},
                       figures / f"{slug}_curves.png", title=f.name)
    per_frame = {}
    for label, rid in zip(f.labels, ids):
        ev = read_json(Path(runs[rid].cfg.log_dir) / "eval.json")
        per_frame[label] = ev["methods"]["model_mean_of_n"]
    per_frame["copy last frame"] = ev["methods"]["baseline_copy_last"]
    frames = plot_eval_per_frame(per_frame, figures / f"{slug}_per_frame.png", n_past=ev["n_past"],
                                 title=f"{f.name}: test metrics per predicted frame")
    return lines + ["", f"![{f.name}: curves]({curves.relative_to(report_dir).as_posix()})", "",
                    f"![{f.name}: per frame]({frames.relative_to(report_dir).as_posix()})", ""]


def _run_section(rid: str, run: StudyRun, figures: Path) -> list[str]:
    """One run's changes, training curves, first prediction grid and GIF, the files copied into ``figures``."""
    log_dir = Path(run.cfg.log_dir)
    changes = ", ".join(f"`{k} = {v}`" for k, v in run.diff.items()) or "the base config"
    lines = [f"### `{rid}`", "", f"Changes: {changes}.", ""]
    shutil.copyfile(log_dir / "training_curves.png", figures / f"{rid}_training_curves.png")
    lines += [f"![{rid} training curves](figures/{rid}_training_curves.png)", ""]
    grids = sorted((log_dir / "gifs").glob("*_grid.png"))
    gifs = sorted((log_dir / "gifs").glob("*.gif"))
    if grids:
        shutil.copyfile(grids[0], figures / f"{rid}_{grids[0].name}")
        lines += [f"![{rid} predictions](figures/{rid}_{grids[0].name})", ""]
    if gifs:
        shutil.copyfile(gifs[0], figures / f"{rid}_{gifs[0].name}")
        lines += [f"GIF: [figures/{rid}_{gifs[0].name}](figures/{rid}_{gifs[0].name}) "
                  f"(all: `{_shown(log_dir / 'gifs')}`)", ""]
    return lines


def ablate(study: str | Path, out: str | Path, report_dir: str | Path | None = None, progress: bool = True) -> Path:
    study = Path(study)
    out = Path(out)
    settings, factors = load_study(study)
    runs, by_factor = plan_runs(settings["base"], factors, out)
    if progress:
        print(f"study {study}: {len(runs)} runs ({', '.join(runs)}) in {out}", flush=True)
    for run in runs.values():
        execute(run, n_samples=settings["n_samples"], gif_indices=settings["gif_indices"],
                eval_batch_size=settings["eval_batch_size"], progress=progress, lpips=settings["lpips"],
                lpips_weights=settings["lpips_weights"], checkpoint=settings["checkpoint"])
    return write_report(study, out, Path(report_dir or out), runs, by_factor, factors, settings["checkpoint"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cvae-ablate", description="Run an ablation study and write its report.")
    p.add_argument("--study", required=True, help="study TOML file (see configs/study.toml)")
    p.add_argument("--out", default="runs/study", help="folder of the study's runs")
    p.add_argument("--report_dir", default=None, help="where report.md and its figures go (default: --out)")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()   # as cvae-train does (see cvae_video.runtime)
    try:
        report = ablate(args.study, args.out, args.report_dir, progress=not args.no_progress)
    except CvaeError as e:
        print(f"cvae-ablate: error: {e}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
