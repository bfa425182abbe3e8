"""LPIPS in cvae-eval: the batched per-frame metric equals the lpips package called frame by frame, weights are read
from a file and never downloaded, and --lpips reaches the table, the JSON and the CSV."""

import json
import warnings

import pytest
import torch

from cvae_video import evaluate, train
from cvae_video.errors import CvaeError
from helpers import TINY_FLAGS

lpips = pytest.importorskip("lpips", reason="the lpips package is not installed (pip install -e \".[lpips]\")")
from cvae_video.perceptual import ALEXNET_FILE, LPIPS  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A file in the layout of torchvision's AlexNet weights (random values: nothing is downloaded here)."""
    import torchvision
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / ALEXNET_FILE
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def test_batched_lpips_equals_the_package_frame_by_frame():
    torch.manual_seed(1)
    ours = LPIPS(CPU, random_backbone=True, chunk=4)          # chunks of 4 frames: several batches per call
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # torchvision's note on lpips' use of `pretrained`
        direct = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    direct.load_state_dict(ours.net.state_dict())
    g = torch.Generator().manual_seed(2)
    pred, gt = torch.rand(2, 5, 3, 64, 64, generator=g), torch.rand(2, 5, 3, 64, 64, generator=g)
    got = ours(pred, gt)
    assert got.shape == (2, 5)
    with torch.no_grad():
        want = torch.tensor([[direct(pred[i, t][None], gt[i, t][None], normalize=True).item() for t in range(5)]
                             for i in range(2)])
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours(gt, gt), torch.zeros(2, 5))


def test_weights_come_from_a_file_and_missing_ones_say_where(alexnet_file, tmp_path, monkeypatch):
    import torchvision
    metric = LPIPS(CPU, weights=alexnet_file)
    state = torch.load(alexnet_file, weights_only=True)
    assert torch.equal(metric.net.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(metric.net.net.slice5, "10").bias, state["features.10.bias"])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(CvaeError, match=f"{ALEXNET_FILE}.*nothing is downloaded.*{tmp_path / 'hub'}"):
        LPIPS(CPU)
    other = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), other)
    with pytest.raises(CvaeError, match="not torchvision's AlexNet weights"):
        LPIPS(CPU, weights=other)


def test_eval_with_lpips(synth_root, alexnet_file, tmp_path, capsys):
    log_dir = tmp_path / "run"
    assert train.main(["--data_root", str(synth_root), "--log_dir", str(log_dir), "--niter", "1", "--epoch_size",
                       "2", "--n_pictures", "0", *TINY_FLAGS]) == 0
    out, csv = tmp_path / "eval.json", tmp_path / "eval.csv"
    assert evaluate.main(["--ckpt", str(log_dir / "best.pt"), "--n_samples", "3", "--lpips", "--lpips_weights",
                          str(alexnet_file), "--precision", "fp32", "--json", str(out), "--csv", str(csv)]) == 0
    assert "LPIPS" in capsys.readouterr().out
    r = json.loads(out.read_text())
    m = r["methods"]
    assert all("lpips" in v and len(v["lpips_per_frame"]) == r["n_future"] for v in m.values())
    assert m["model_best_lpips"]["lpips"] <= m["model_mean_of_n"]["lpips"] == r["lpips"]
    assert "model_best_lpips_lpips" in csv.read_text().splitlines()[0]
