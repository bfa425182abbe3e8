"""Faults a long run meets, each provoked on purpose: SIGKILL during training and during a save, NaN losses,
malicious pickles, every kind of bad data, and growth over epochs."""

import gc
import json
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvae_video import evaluate, train
from cvae_video import config as config_mod
from cvae_video.checkpoint import FORMAT
from cvae_video.data import check, layout, problems
from cvae_video.data.dataset import BadTrajectory, VideoDataset
from cvae_video.models import CVAE
from helpers import TINY_FLAGS, breakable_data, edit_line

SEQ = 8                                   # frames per trajectory of the small data set
GROUP = "train/traj_0_to_5"
RUN_FLAGS = ["--epoch_size", "2", "--n_pictures", "0", "--val_sequences", "2", "--seed", "3", *TINY_FLAGS]
TRAIN_LEN, VAL_LEN = 6, 6                 # n_past + n_future, n_past + n_eval of TINY_FLAGS


clean_root, root = breakable_data("faults", SEQ, 6, 2, 1, seed=2)   # the data set, and a fresh copy per test to break


def run_argv(root, log_dir, *extra) -> list[str]:
    return ["--data_root", str(root), "--log_dir", str(log_dir), *RUN_FLAGS, *extra]


def metrics(log_dir) -> list[dict]:
    return [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]


# ---- SIGKILL ----------------------------------------------------------------------------------------------------

# cvae-train in a process whose every fsync (the atomic writer's, between writing a temp file and renaming it into
# place) takes 0.4 s longer, so that a kill can land in the middle of a save
SLOW_SAVES = ("import os, sys, time; fsync = os.fsync; os.fsync = lambda fd: (time.sleep(0.4), fsync(fd))[1]; "
              "from cvae_video.train import main; sys.exit(main(sys.argv[1:]))")


def _start(root, log_dir, *extra, slow_saves: bool = False) -> subprocess.Popen:
    launch = ["-c", SLOW_SAVES] if slow_saves else ["-m", "cvae_video.train"]
    cmd = [sys.executable, *launch, *run_argv(root, log_dir, *extra)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) before the kill: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the moment to kill")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


def _check_survivors_and_resume(log_dir: Path) -> None:
    """last.pt loads safely, every metrics line parses, and --resume finishes the run."""
    ckpt = torch.load(log_dir / "last.pt", weights_only=True)
    epoch = ckpt["state"]["epoch"]
    lines = (log_dir / "metrics.jsonl").read_text().splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert len(lines) in (epoch + 1, epoch + 2)      # the kill may fall between the two writes
    assert train.main(["--resume", str(log_dir), "--niter", str(epoch + 2), "--no_progress"]) == 0
    assert [r["epoch"] for r in metrics(log_dir)] == list(range(epoch + 2))
    assert not list(log_dir.glob(".*.tmp"))


def test_sigkill_during_training_leaves_a_resumable_run(clean_root, tmp_path):
    log_dir = tmp_path / "run"
    proc = _start(clean_root, log_dir, "--niter", "50")
    random.seed(0)
    pause = time.monotonic() + random.uniform(0, 0.5)
    _kill_when(proc, lambda: (log_dir / "last.pt").is_file() and time.monotonic() > pause)
    _check_survivors_and_resume(log_dir)


def test_sigkill_during_a_save_leaves_the_previous_checkpoint(clean_root, tmp_path):
    log_dir = tmp_path / "run"
    proc = _start(clean_root, log_dir, "--niter", "50", slow_saves=True)
    _kill_when(proc, lambda: (log_dir / "last.pt").is_file() and any(log_dir.glob(".last.pt.*.tmp")))
    assert list(log_dir.glob(".last.pt.*.tmp"))        # killed in the middle of replacing last.pt
    assert torch.load(log_dir / "last.pt", weights_only=True)["state"]["epoch"] == 0
    _check_survivors_and_resume(log_dir)


# ---- non-finite losses ------------------------------------------------------------------------------------------

def _nan_at(monkeypatch, calls: set[int]) -> None:
    """Make the training forward passes numbered ``calls`` see NaN frames (so BatchNorm statistics see them too)."""
    forward, count = CVAE.forward, [0]

    def poisoned(self, x, *args, **kw):
        count[0] += 1
        return forward(self, x * float("nan") if count[0] - 1 in calls else x, *args, **kw)
    monkeypatch.setattr(CVAE, "forward", poisoned)


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(clean_root, tmp_path, monkeypatch, capsys):
    log_dir = tmp_path / "run"
    _nan_at(monkeypatch, {2})                                   # epoch 2, first batch: global step 2
    assert train.main(run_argv(clean_root, log_dir, "--niter", "2")) == 1
    err = capsys.readouterr().err
    assert "non-finite loss (nan) at step 2 (epoch 2/2)" in err
    assert f"the last good checkpoint is {log_dir / 'last.pt'} (end of epoch 1, step 2)" in err
    assert "--skip_nonfinite" in err
    ckpt = torch.load(log_dir / "last.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 0 and all(torch.isfinite(v).all() for v in ckpt["model"]["weights"].values())
    assert len(metrics(log_dir)) == 1


def test_skip_nonfinite_skips_counts_and_then_stops(clean_root, tmp_path, monkeypatch, capsys):
    _nan_at(monkeypatch, {1, 2})                                # one batch in each of the two epochs
    log_dir = tmp_path / "skip"
    assert train.main(run_argv(clean_root, log_dir, "--niter", "2", "--skip_nonfinite", "2")) == 0
    records = metrics(log_dir)
    assert [r["skipped_nonfinite"] for r in records] == [1, 1]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["val_psnr"]) for r in records)
    ckpt = torch.load(log_dir / "last.pt", weights_only=True)
    # no update from a skipped batch: weights, and BatchNorm statistics its forward pass had moved, are finite
    assert all(torch.isfinite(v).all() for v in ckpt["model"]["weights"].values())
    assert ckpt["state"]["skipped_nonfinite_total"] == 2
    assert capsys.readouterr().err.count("batch skipped") == 2

    monkeypatch.undo()
    _nan_at(monkeypatch, {0, 1})
    assert train.main(run_argv(clean_root, tmp_path / "over", "--niter", "2", "--skip_nonfinite", "1")) == 1
    err = capsys.readouterr().err
    assert "at step 1 (epoch 1/2); more than --skip_nonfinite 1 such batches" in err
    assert "no checkpoint was written before step 1" in err


def test_a_failure_names_the_checkpoint_continued_until_the_run_writes_its_own(clean_root, tmp_path, monkeypatch,
                                                                                capsys):
    log_dir = tmp_path / "run"
    assert train.main(run_argv(clean_root, log_dir, "--niter", "2")) == 0
    kept = log_dir / "kept.pt"                                  # the end of epoch 2, step 4
    shutil.copy(log_dir / "last.pt", kept)
    resume = ["--resume", str(kept), "--niter", "4", "--no_progress"]
    _nan_at(monkeypatch, {0})                                   # the first batch of the resumed run
    assert train.main(resume) == 1
    assert f"the last good checkpoint is {kept} (end of epoch 2, step 4)" in capsys.readouterr().err
    monkeypatch.undo()
    _nan_at(monkeypatch, {2})                                   # the first batch of its second epoch
    assert train.main(resume) == 1
    assert f"the last good checkpoint is {log_dir / 'last.pt'} (end of epoch 3, step 6)" in capsys.readouterr().err


# ---- malicious checkpoints --------------------------------------------------------------------------------------

class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil_zip, evil_raw = tmp_path / "evil.pt", tmp_path / "raw" / "evil.pt"
    evil_raw.parent.mkdir()
    torch.save({"format": FORMAT, "model": _RunsCode(marker)}, evil_zip)
    evil_raw.write_bytes(pickle.dumps({"format": FORMAT, "model": _RunsCode(marker)}, protocol=2))
    # the file really is malicious: an unsafe load of a twin runs its command
    twin = tmp_path / "twin.pt"
    torch.save(_RunsCode(tmp_path / "twin_ran"), twin)
    torch.load(twin, weights_only=False)
    assert (tmp_path / "twin_ran").exists()

    run = tmp_path / "run"                   # a run folder whose last.pt was replaced
    run.mkdir()
    (run / "config.toml").write_text(config_mod.to_toml(config_mod.TrainConfig(log_dir=str(run))))
    shutil.copy(evil_zip, run / "last.pt")
    for main, argv in ((evaluate.main, ["--ckpt", str(evil_zip)]), (evaluate.main, ["--ckpt", str(evil_raw)]),
                       (train.main, ["--resume", str(evil_zip), "--no_progress"]),
                       (train.main, ["--resume", str(run), "--no_progress"])):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "refused to load" in err and "could run arbitrary code" in err, argv
        assert "GLOBAL posix.system" in err or "GLOBAL os.system" in err
        assert not marker.exists()


# ---- bad data ---------------------------------------------------------------------------------------------------


def _break_stream_keep_checksums(path: Path) -> None:
    """Scramble a PNG's compressed pixel data and fix its chunk checksum: only decoding can tell."""
    data = bytearray(path.read_bytes())
    pos = 8
    while data[pos + 4:pos + 8] != b"IDAT":
        pos += 12 + struct.unpack(">I", data[pos:pos + 4])[0]
    n = struct.unpack(">I", data[pos:pos + 4])[0]
    body = data[pos + 8:pos + 8 + n]
    for i in range(n // 3, n // 3 + 16):
        body[i] ^= 0x5A
    data[pos + 8:pos + 8 + n] = body
    data[pos + 8 + n:pos + 12 + n] = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(body)))
    path.write_bytes(bytes(data))


def _shorten(traj: Path, n: int) -> None:
    """Keep the first ``n`` frames and CSV rows: a consistent trajectory, too short for training."""
    for i in range(n, SEQ):
        (traj / f"{i}.png").unlink()
    for csv in (layout.ACTIONS_FILE, layout.POSITIONS_FILE):
        (traj / csv).write_text("".join((traj / csv).read_text().splitlines(True)[:n]))


# each: (name, how to break trajectory GROUP/1, the file the error must name)
BREAKS = [
    ("missing frame", lambda t: (t / "3.png").unlink(), "3.png"),
    ("wrong size", lambda t: Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(t / "2.png"), "2.png"),
    ("garbage PNG", lambda t: (t / "4.png").write_bytes(b"not a png at all"), "4.png"),
    ("truncated PNG", lambda t: (t / "4.png").write_bytes((t / "4.png").read_bytes()[:200]), "4.png"),
    ("CSV row missing", lambda t: edit_line(t / layout.POSITIONS_FILE, SEQ, None), layout.POSITIONS_FILE),
    ("CSV columns", lambda t: edit_line(t / layout.ACTIONS_FILE, 2, "0.1,0.2,0.3"), layout.ACTIONS_FILE),
    ("CSV not a number", lambda t: edit_line(t / layout.ACTIONS_FILE, 2, "0.1,x,0.3,1"), layout.ACTIONS_FILE),
    ("CSV NaN", lambda t: edit_line(t / layout.POSITIONS_FILE, 4, "0.1,nan,0.3"), layout.POSITIONS_FILE),
    ("too short", lambda t: _shorten(t, 4), ""),
]


@pytest.mark.parametrize("name,damage,file", BREAKS, ids=[b[0] for b in BREAKS])
def test_each_kind_of_bad_data_fails_at_start_up_or_is_skipped(root, name, damage, file):
    traj = root / GROUP / "1"
    damage(traj)
    with pytest.raises(BadTrajectory) as e:
        VideoDataset(root, "train", TRAIN_LEN, check_frames=True)
    assert str(e.value).startswith(str(traj / file))
    ds = VideoDataset(root, "train", TRAIN_LEN, check_frames=True, on_bad_sample="skip")
    assert list(ds.skipped) == [traj] and len(ds) == 5 and traj not in ds.trajectories
    assert ds.skipped[traj] == str(e.value)
    # the same trajectory that `cvae-data check` calls unusable
    report = check.scan_dataset(root, splits=("train",), min_frames=TRAIN_LEN, decode=False, progress=False)
    unusable = {Path(p.path) if p.kind == "too_short" else Path(p.path).parent for p in report.problems if p.fatal}
    assert unusable == {traj}
    assert ds[0]["frames"].shape == (TRAIN_LEN, 3, 64, 64)


def test_training_on_bad_data_fails_at_start_up_by_default_and_skips_on_request(root, tmp_path, capsys):
    (root / GROUP / "1" / "3.png").unlink()
    edit_line(root / GROUP / "4" / layout.POSITIONS_FILE, 2, "nan,0,0")
    bad_val = layout.list_trajectories(root, "validate")[1]
    (bad_val / "0.png").write_bytes(b"\x89PNG broken")
    assert train.main(run_argv(root, tmp_path / "strict", "--niter", "1")) == 1
    err = capsys.readouterr().err
    assert f"{root / GROUP / '1' / '3.png'}: frame missing" in err and "--on_bad_sample skip" in err
    assert not (tmp_path / "strict" / "last.pt").exists()

    log_dir = tmp_path / "skip"
    assert train.main(run_argv(root, log_dir, "--niter", "1", "--on_bad_sample", "skip")) == 0
    err = capsys.readouterr().err
    assert "skipped 2 of 6 train trajectories as bad" in err and "skipped 1 of 2 validate trajectories" in err
    report = json.loads((log_dir / "data_report.json").read_text())
    assert report["splits"]["train"]["skipped"] == 2 and report["splits"]["train"]["trajectories"] == 4
    assert set(report["splits"]["validate"]["problems"]) == {str(bad_val)}
    assert metrics(log_dir)[0]["val_psnr"] > 0


def test_a_frame_broken_behind_intact_checksums_stops_training_naming_it(root, tmp_path, capsys):
    for traj in layout.list_trajectories(root, "train"):
        _break_stream_keep_checksums(traj / "1.png")
    assert problems.check_frame(traj / "1.png", decode=False) == []      # invisible to the start-up check
    rc = train.main(run_argv(root, tmp_path / "run", "--niter", "1", "--train_window", "first"))
    assert rc == 1
    err = capsys.readouterr().err
    assert "1.png: unreadable image" in err and "training stopped" in err and "no checkpoint was written" in err


# ---- long runs stay bounded -------------------------------------------------------------------------------------

def test_memory_and_files_do_not_grow_over_epochs(clean_root, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "KEEP_PICTURES", 2)
    live_tensors, write_records = [], train._write_records

    def spy(path, records):               # twice per epoch: before the checkpoint, and with its epoch_seconds
        for r in records:
            assert all(type(v) in (int, float, type(None)) for v in r.values()), r
        if records[-1]["epoch_seconds"] is not None:   # the epoch's last write: everything of it is done
            gc.collect()
            live_tensors.append(sum(issubclass(type(o), torch.Tensor) for o in gc.get_objects()))
        write_records(path, records)
    monkeypatch.setattr(train, "_write_records", spy)
    log_dir = tmp_path / "run"
    argv = run_argv(clean_root, log_dir, "--niter", "4", "--epoch_size", "1", "--n_pictures", "1", "--val_every", "2")
    assert train.main(argv) == 0
    assert len(live_tensors) == 4 and len(set(live_tensors[1:])) == 1, live_tensors
    epochs = {p.name.split("_")[0] for p in (log_dir / "pictures").glob("*.png")}
    assert epochs == {"epoch0002", "epoch0003"}
