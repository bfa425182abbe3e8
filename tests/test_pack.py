import json
import pickle
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cvae_video.data import cli, layout, pack, packed, synth
from cvae_video.data.dataset import VideoDataset
from helpers import read_trajectory
from cvae_video.errors import DataError

SEQ_LEN = 12


@pytest.fixture
def root(tmp_path):
    """A fresh small data set per test (tests modify it): 30-frame trajectories in the BAIR layout."""
    out = tmp_path / "data"
    synth.write_dataset(out, n_train=5, n_validate=2, n_test=2, seed=7, progress=False)
    return out


def assert_same_items(a: VideoDataset, b: VideoDataset, indices) -> None:
    for index in indices:
        x, y = a[index], b[index]
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, (index, key)
            assert torch.equal(x[key], y[key]), (index, key)


def all_windows(ds: VideoDataset) -> list:
    return [(i, s) for i in range(len(ds)) for s in range(int(ds.lengths[i]) - ds.seq_len + 1)]


def first_frame(root, split="train"):
    return layout.list_trajectories(root, split)[0] / "5.png"


def test_packed_items_bit_identical_to_png(root):
    reports = pack.pack(root, progress=False)
    assert [r.split for r in reports] == ["train", "validate", "test"]
    png_train = VideoDataset(root, "train", SEQ_LEN, use_packed=False)
    packed_train = VideoDataset(root, "train", SEQ_LEN)          # auto: picks the cache up
    assert png_train.packed is None and packed_train.packed is not None
    assert png_train.stats == packed_train.stats
    assert png_train.trajectories == packed_train.trajectories
    assert np.array_equal(png_train.lengths, packed_train.lengths)
    for a, b in zip(png_train.conditions, packed_train.conditions):
        assert np.array_equal(a, b) and a.dtype == b.dtype
    assert_same_items(png_train, packed_train, list(range(len(png_train))) + all_windows(png_train))
    for split in ("validate", "test"):   # with the training statistics, as evaluation uses them
        a = VideoDataset(root, split, SEQ_LEN, stats=png_train.stats, use_packed=False)
        b = VideoDataset(root, split, SEQ_LEN, stats=png_train.stats, use_packed=True)
        assert_same_items(a, b, list(range(len(a))) + [(0, 18), (1, 9)])
    with pytest.raises(IndexError):
        packed_train[(0, 30 - SEQ_LEN + 1)]


def test_packed_dataset_pickles_without_frames(root):
    pack.pack(root, ["train"], progress=False)
    ds = VideoDataset(root, "train", SEQ_LEN, use_packed=True)
    ds[0]                                     # the map is open now
    payload = pickle.dumps(ds)
    assert len(payload) < ds.packed.frames.nbytes / 4   # DataLoader workers reopen the map, not copy it
    assert_same_items(ds, pickle.loads(payload), [0, (3, 7)])


def test_stale_after_frame_modified(root):
    pack.pack(root, ["train"], progress=False)
    path = first_frame(root)
    # a black frame: other pixels and (PNG-compressed) another size, whatever the timestamp granularity
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    with pytest.warns(packed.StalePackWarning, match=r"split 'train'.*changed.*cvae-data pack"):
        ds = VideoDataset(root, "train", SEQ_LEN)
    assert ds.packed is None
    assert ds[0]["frames"][5].sum() == 0     # the PNG path sees the new frame
    with pytest.raises(DataError, match="out of date"):
        VideoDataset(root, "train", SEQ_LEN, use_packed=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # use_packed=False does not even look
        VideoDataset(root, "train", SEQ_LEN, use_packed=False)

    assert cli.main(["pack", "--data_root", str(root), "--splits", "train", "--no_progress"]) == 0
    fresh = VideoDataset(root, "train", SEQ_LEN, use_packed=True)
    assert fresh[0]["frames"][5].sum() == 0
    assert_same_items(VideoDataset(root, "train", SEQ_LEN, use_packed=False), fresh, [0, (0, 3), 4])


def test_stale_after_trajectory_added_or_removed(root):
    pack.pack(root, ["train"], progress=False)
    trajs = layout.list_trajectories(root, "train")
    shutil.copytree(trajs[0], trajs[0].parent / "99")
    with pytest.warns(packed.StalePackWarning, match="added"):
        assert packed.open_packed(root, "train") is None
    shutil.rmtree(trajs[0].parent / "99")
    assert packed.open_packed(root, "train") is not None   # same files, same sizes and times again
    shutil.rmtree(trajs[1])
    with pytest.warns(packed.StalePackWarning, match="removed"):
        ds = VideoDataset(root, "train", SEQ_LEN)
    assert ds.packed is None and len(ds) == len(trajs) - 1


def test_use_packed_true_without_cache_is_an_error(root):
    with pytest.raises(DataError, match="cvae-data pack"):
        VideoDataset(root, "train", SEQ_LEN, use_packed=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # no cache at all is not worth a warning
        assert VideoDataset(root, "train", SEQ_LEN).packed is None


def test_bad_frame_fails_packing_with_the_png_error(root):
    path = first_frame(root, "validate")
    path.write_bytes(b"not a png")
    with pytest.raises(DataError) as png_error:
        VideoDataset(root, "validate", SEQ_LEN, use_packed=False)[0]
    with pytest.raises(DataError) as pack_error:
        pack.pack_split(root, "validate", progress=False)
    assert str(pack_error.value) == str(png_error.value) and str(path) in str(pack_error.value)
    assert not (root / packed.PACKED_DIR / "validate").exists()
    assert not list((root / packed.PACKED_DIR).glob(".validate.partial-*"))


def test_cli_pack(root, capsys):
    assert cli.main(["pack", "--data_root", str(root), "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "packed 5 trajectories, 150 frames" in out
    folder = root / ".packed" / "train"
    index = json.loads((folder / "index.json").read_text())
    trajs = layout.list_trajectories(root, "train")
    assert [t["path"] for t in index["trajectories"]] == [t.relative_to(root / "train").as_posix() for t in trajs]
    assert [t["offset"] for t in index["trajectories"]] == [0, 30, 60, 90, 120]
    assert [t["length"] for t in index["trajectories"]] == [30] * 5
    frames = np.load(folder / "frames.npy", mmap_mode="r")
    conds = np.load(folder / "conditions.npy")
    assert frames.dtype == np.uint8 and frames.shape == (150, 64, 64, 3)
    assert conds.dtype == np.float32 and conds.shape == (150, 7)
    f, c = read_trajectory(trajs[2])
    assert np.array_equal(frames[60:90], f) and np.array_equal(conds[60:90], c)

    assert cli.main(["pack", "--data_root", str(root), "--splits", "train", "--no_progress"]) == 0
    assert "up to date" in capsys.readouterr().out
    before = (folder / "frames.npy").read_bytes()
    assert cli.main(["pack", "--data_root", str(root), "--splits", "train", "--workers", "2", "--force",
                     "--no_progress"]) == 0
    assert "packed" in capsys.readouterr().out
    assert (folder / "frames.npy").read_bytes() == before
    assert not [p for p in (root / ".packed").iterdir() if p.name.startswith(".")]

    assert cli.main(["pack", "--data_root", str(root), "--splits", "nosuch", "--no_progress"]) == 1
    assert "nosuch" in capsys.readouterr().err


def test_the_built_in_data_set_is_packed_for_a_run(tmp_path, monkeypatch):
    """cvae-train without --data_root generates the push world once and packs it, so a run never decodes PNGs."""
    from cvae_video import train
    from cvae_video.config import TrainConfig
    from helpers import write_small_synth
    made = []

    def fake_ensure(cache, n_train, seed):
        made.append(cache)
        root = cache / "push_world_x"
        return root if root.is_dir() else write_small_synth(root, 8, n_train, 2, 2, seed)
    monkeypatch.setattr(synth, "ensure_synth_dataset", fake_ensure)
    monkeypatch.setenv("CVAE_VIDEO_CACHE", str(tmp_path))
    root = train.resolve_data_root(TrainConfig(synth_n_train=3))
    assert made == [tmp_path] and root == tmp_path / "push_world_x"
    for split in layout.SPLITS:
        assert VideoDataset(root, split, 4, use_packed=True).packed is not None
    stamp = (packed.packed_dir(root, "train") / packed.INDEX_FILE).stat().st_mtime_ns
    train.resolve_data_root(TrainConfig(synth_n_train=3))        # up to date: not packed again
    assert (packed.packed_dir(root, "train") / packed.INDEX_FILE).stat().st_mtime_ns == stamp
