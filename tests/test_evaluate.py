"""The numbers of an evaluation report: best-of-N, means and confidence intervals."""

import math

import numpy as np
import scipy.stats

from cvae_video.evaluate import format_table, report, shuffled_not_applicable, write_per_frame_csv


def _scores(seed=0, N=7, S=5, F=4):
    rng = np.random.default_rng(seed)
    return {"psnr": rng.normal(25, 2, (N, S, F)), "ssim": rng.uniform(0.5, 0.95, (N, S, F)),
            "base_psnr": rng.normal(23, 1, (N, F)), "base_ssim": rng.uniform(0.5, 0.9, (N, F)),
            "diversity": rng.uniform(0, 0.1, (N, F)), "kl": rng.uniform(0, 2, N)}


def test_best_of_n_is_never_worse_than_mean_of_n():
    for seed in range(5):
        r = report(_scores(seed))["methods"]
        assert r["model_best_psnr"]["psnr"] >= r["model_mean_of_n"]["psnr"]
        assert r["model_best_ssim"]["ssim"] >= r["model_mean_of_n"]["ssim"]


def test_confidence_interval_by_hand():
    s = _scores(1)
    r = report(s)["methods"]["model_mean_of_n"]
    per_seq = s["psnr"].mean(axis=(1, 2))          # one number per sequence
    n = len(per_seq)
    half = scipy.stats.t.ppf(0.975, n - 1) * per_seq.std(ddof=1) / math.sqrt(n)
    assert math.isclose(r["psnr"], per_seq.mean(), rel_tol=1e-12)
    assert math.isclose(r["psnr_ci95"], half, rel_tol=1e-9)
    best = s["ssim"].mean(2).argmax(1)
    by_hand = s["ssim"][np.arange(len(best)), best].mean()
    assert math.isclose(report(s)["methods"]["model_best_ssim"]["ssim"], by_hand, rel_tol=1e-12)


def test_report_keys_and_per_frame_lengths():
    r = report(_scores(2, F=6))
    assert {"psnr", "ssim", "psnr_per_frame", "ssim_per_frame", "n_sequences", "baseline_copy_last"} <= set(r)
    assert len(r["psnr_per_frame"]) == 6 and r["n_sequences"] == 7 and r["n_samples"] == 5


def test_report_diagnostics_by_hand():
    s, shuffled = _scores(3), _scores(4)
    r = report(s, shuffled_scores=shuffled)
    assert math.isclose(r["kl_per_step"], s["kl"].mean(), rel_tol=1e-12)
    assert math.isclose(r["diversity"], s["diversity"].mean(), rel_tol=1e-12)
    assert np.allclose(r["diversity_per_frame"], s["diversity"].mean(0))
    shuf = r["methods"]["model_shuffled_condition"]
    assert math.isclose(shuf["psnr"], shuffled["psnr"].mean(), rel_tol=1e-12)
    assert math.isclose(r["shuffled_condition_drop"], r["psnr"] - shuf["psnr"], rel_tol=1e-12)
    assert math.isclose(r["best_psnr_minus_mean"],
                        r["methods"]["model_best_psnr"]["psnr"] - r["methods"]["model_mean_of_n"]["psnr"])
    assert "model_shuffled_condition" not in report(s)["methods"]


def test_a_method_that_does_not_apply_is_null_with_the_reason(tmp_path):
    r = report(_scores(5), shuffled_note="the model takes no condition (condition = none)")
    assert r["methods"]["model_shuffled_condition"] is None and r["shuffled_condition_drop"] is None
    assert r["shuffled_condition_note"] == "the model takes no condition (condition = none)"
    r |= {"split": "test", "n_past": 2, "precision": "fp32"}
    table = format_table(r)
    assert "model_shuffled_condition not scored: the model takes no condition" in table
    write_per_frame_csv(r, tmp_path / "f.csv")
    header = (tmp_path / "f.csv").read_text().splitlines()[0]
    assert "model_mean_of_n_psnr" in header and "shuffled" not in header
    assert shuffled_not_applicable("none", 10) == "the model takes no condition (condition = none)"
    assert "at least 2 sequences" in shuffled_not_applicable("full", 1)
    assert shuffled_not_applicable("positions", 2) is None


def test_active_units_from_the_latent_sums():
    s = _scores(6)
    mu = np.random.default_rng(1).normal(0, [1.0, 0.0, 0.3, 0.05], (7, 9, 4))   # (N, steps, z)
    s |= {"latent_sum": mu.sum(1), "latent_sumsq": (mu ** 2).sum(1), "latent_steps": np.full(7, 9.0)}
    r = report(s)
    assert r["active_units"] == 2 and r["active_units_threshold"] == 0.01
    assert np.allclose(r["latent_variance"], mu.reshape(-1, 4).var(0))
    assert "active_units" not in report(_scores(6))   # a report without the latent pass
