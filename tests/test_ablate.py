"""A CI-sized study: two runs of a few steps, and a report whose numbers are the runs' own."""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from cvae_video import ablate
from cvae_video.errors import ConfigError

LPIPS = importlib.util.find_spec("lpips") is not None


@pytest.fixture(scope="module")
def study(synth_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    (d / "base.toml").write_text(f'''
data_root = "{synth_root.as_posix()}"
backbone = "dcgan"
width = 0.125
g_dim = 16
z_dim = 4
rnn_size = 16
batch_size = 4
num_workers = 0
n_future = 4
n_eval = 4
niter = 2
epoch_size = 2
''')
    lpips = ""
    if LPIPS:   # a file in the layout of torchvision's AlexNet weights (random values: nothing is downloaded)
        import torch
        import torchvision
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), d / "alexnet.pth")
        lpips = f'lpips = true\nlpips_weights = "{(d / "alexnet.pth").as_posix()}"'
    (d / "study.toml").write_text(f'''
base = "base.toml"
n_samples = 3
gif_indices = [1]
eval_batch_size = 8
{lpips}
[overrides]
epoch_size = 3
[[factors]]
name = "Condition"
key = "condition"
values = ["full", "none"]
labels = ["full", "none"]
''')
    report = ablate.ablate(d / "study.toml", d / "runs", d / "report", progress=False)
    return d, report


def _table_rows(text):
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| setting")]


def test_report_numbers_equal_the_runs_own_logs(study):
    d, report = study
    text = report.read_text()
    rows = _table_rows(text)
    assert [r[0] for r in rows] == ["full", "none"] and rows[0][1] == "`base`"
    for row in rows:
        run_dir = d / "runs" / row[1].strip("`")
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert len(records) == 2 and records[-1]["step"] == 6  # the override (epoch_size 3) applied
        assert float(row[2]) == round(max(r["val_psnr"] for r in records), 2)
        ev = json.loads((run_dir / "eval.json").read_text())
        test_psnr = float(row[3].split("±")[0])
        assert test_psnr == round(ev["methods"]["model_mean_of_n"]["psnr"], 2)
        m = ev["methods"]
        assert float(row[6]) == round(m["model_best_psnr"]["psnr"] - m["model_mean_of_n"]["psnr"], 2)
        if row[0] == "none":   # not applicable: no condition to shuffle
            assert row[9] == "n/a" and m["model_shuffled_condition"] is None
        else:
            assert float(row[9]) == round(m["model_shuffled_condition"]["psnr"], 2)
        assert float(row[10]) == float(f"{ev['kl_per_step']:.3g}")
        assert row[11] == f"{ev['active_units']} of 4"
        assert float(row[12]) == round(ev["diversity"], 4)
        assert float(row[13]) == round(m["baseline_copy_last"]["psnr"], 2)
        if LPIPS:   # the LPIPS columns: test, best of N, copy-last
            assert [float(c) for c in row[15:18]] == [round(m[k]["lpips"], 4) for k in
                                                       ("model_mean_of_n", "model_best_lpips", "baseline_copy_last")]
    assert "/tmp/" not in text and str(d) not in text   # no machine paths
    for img in re.findall(r"\]\((figures/[^)]+)\)", text):
        assert (report.parent / img).is_file(), img


def test_finished_runs_are_not_trained_again(study, monkeypatch):
    d, _ = study
    import cvae_video.train as train_mod

    def fail(*a, **k):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(train_mod, "train", fail)
    ablate.ablate(d / "study.toml", d / "runs", d / "report", progress=False)


def test_a_truncated_done_json_is_evaluated_again(study, capsys):
    d, _ = study
    done = d / "runs" / "base" / "done.json"
    done.write_text(done.read_text()[:20])                 # as left by a process killed mid-write
    ablate.ablate(d / "study.toml", d / "runs", d / "report", progress=False)
    assert f"{done}: not valid JSON" in capsys.readouterr().err
    assert json.loads(done.read_text())["run_id"] == "base"


def test_a_factor_value_may_set_several_keys(tmp_path):
    (tmp_path / "base.toml").write_text("[model]\nspatial_cond = true\nkeypoints = 2\n")
    study = tmp_path / "s.toml"
    study.write_text('base = "base.toml"\n[[factors]]\nname = "Condition"\nkey = "condition"\n'
                     'values = ["full", {condition = "none", spatial_cond = false, keypoints = 0}]\n')
    settings, factors = ablate.load_study(study)
    assert factors[0].labels == ["condition = full", "condition = none, spatial_cond = False, keypoints = 0"]
    runs, by_factor = ablate.plan_runs(settings["base"], factors, tmp_path / "runs")
    assert by_factor["Condition"][0] == "base"
    model = runs[by_factor["Condition"][1]].cfg.model
    assert (model.condition, model.spatial_cond, model.keypoints) == ("none", False, 0)
    study.write_text(study.read_text().replace('values = [', 'values = ["none", '))
    with pytest.raises(ConfigError, match="spatial_cond=True, keypoints=2"):   # one key alone cannot
        ablate.plan_runs(settings["base"], ablate.load_study(study)[1], tmp_path / "runs")
    study.write_text(study.read_text().replace("keypoints = 0}", "keypoint = 0}"))
    with pytest.raises(ConfigError, match="unknown config key 'keypoint' in a value"):
        ablate.load_study(study)


def test_bad_study_files(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('base = "x.toml"\n[[factors]]\nname = "a"\nkey = "no_such_key"\nvalues = [1]\n')
    with pytest.raises(ConfigError, match="unknown config key 'no_such_key'"):
        ablate.load_study(f)
    f.write_text('base = "x.toml"\nfactorz = 1\n')
    with pytest.raises(ConfigError, match="unknown key"):
        ablate.load_study(f)


def test_factor_verdict_names_the_winner_and_whether_the_intervals_tell_it_apart():
    a = {"test_psnr": 25.0, "test_psnr_ci95": 0.1, "best_of_n_psnr": 25.2, "best_of_n_psnr_ci95": 0.1}
    b = {"test_psnr": 25.5, "test_psnr_ci95": 0.1, "best_of_n_psnr": 25.3, "best_of_n_psnr_ci95": 0.1}
    text = ablate.factor_verdict(["on", "off"], [a, b])
    assert text == ("Mean of N: off wins, 0.50 dB above on (outside the 95% intervals). "
                    "Best of N: off wins, 0.10 dB above on (within the 95% intervals).")


def test_report_says_which_setting_wins(study):
    _, report = study
    assert re.search(r"Mean of N: (full|none) wins, \d+\.\d\d dB above (full|none) \((outside|within) the 95%",
                     report.read_text())


def test_a_study_can_evaluate_the_last_checkpoint(study):
    d, _ = study
    text = (d / "study.toml").read_text()
    (d / "study_last.toml").write_text('checkpoint = "last"\n' + text)
    shutil.copytree(d / "runs", d / "runs_last")    # the finished runs, evaluated again at their last checkpoint
    report = ablate.ablate(d / "study_last.toml", d / "runs_last", d / "report_last", progress=False)
    for run in (p for p in (d / "runs_last").iterdir() if p.is_dir()):
        ev = json.loads((run / "eval.json").read_text())
        assert Path(ev["checkpoint"]).name == "last.pt", run.name
    assert "each run's last.pt (the end of training)" in report.read_text()
    (d / "study_bad.toml").write_text('checkpoint = "final"\n' + text)
    with pytest.raises(ConfigError, match="checkpoint must be"):
        ablate.load_study(d / "study_bad.toml")
