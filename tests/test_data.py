import numpy as np
import pytest
import torch
from PIL import Image

from cvae_video.data import layout
from cvae_video.data.dataset import ConditionStats, VideoDataset, WindowSampler
from helpers import read_trajectory
from cvae_video.errors import DataError


def make_tree(root, groups=("traj_0_to_255", "traj_256_to_511.tfrecords"), per_group=(2, 10), T=6, seed=0):
    """A hand-made fixture tree: per trajectory T frames and CSVs with known values."""
    rng = np.random.default_rng(seed)
    written = []
    for split in layout.SPLITS:
        for g in groups:
            for i in per_group:
                frames = rng.integers(0, 256, (T, 64, 64, 3), dtype=np.uint8)
                actions = rng.normal(size=(T, 4)).astype(np.float32)
                positions = rng.normal(2.0, 3.0, size=(T, 3)).astype(np.float32)
                layout.write_trajectory(root / split / g / str(i), frames, actions, positions)
                written.append((split, g, i, frames, actions, positions))
    return written


def test_loads_frames_and_normalised_conditions(tmp_path):
    written = make_tree(tmp_path)
    ds = VideoDataset(tmp_path, "train", 4)
    # natural order: traj_0_to_255 before traj_256_..., and trajectory 2 before 10
    assert [(p.parent.name, p.name) for p in ds.trajectories] == [
        ("traj_0_to_255", "2"), ("traj_0_to_255", "10"),
        ("traj_256_to_511.tfrecords", "2"), ("traj_256_to_511.tfrecords", "10")]
    train = [w for w in written if w[0] == "train"]
    cond = np.concatenate([np.concatenate([a, p], 1) for *_, a, p in train])
    mean, std = cond.mean(0), cond.std(0)
    np.testing.assert_allclose(ds.stats.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.stats.std, std, rtol=1e-5)
    _, _, _, frames, actions, positions = train[1]
    item = ds[1]
    assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (4, 3, 64, 64)
    assert torch.equal(item["frames"], torch.from_numpy(frames[:4]).permute(0, 3, 1, 2))
    expect = (np.concatenate([actions, positions], 1)[:4] - mean) / std
    np.testing.assert_allclose(item["cond"].numpy(), expect, rtol=1e-4, atol=1e-5)
    # a window starting at frame 2
    item = ds[(1, 2)]
    assert torch.equal(item["frames"], torch.from_numpy(frames[2:6]).permute(0, 3, 1, 2))
    with pytest.raises(IndexError):
        ds[(1, 3)]


def test_other_splits_use_the_training_statistics(tmp_path):
    make_tree(tmp_path)
    train = VideoDataset(tmp_path, "train", 4)
    test = VideoDataset(tmp_path, "test", 4, stats=train.stats)
    assert test.stats == train.stats
    stats = ConditionStats.from_dict(train.stats.to_dict())
    assert stats == train.stats


def test_items_do_not_depend_on_what_was_read_before_or_in_which_process(tmp_path):
    """DataLoader workers each read their own share of the items, in any order, from a copy of the data set
    (forked or pickled): an item must be the same wherever and whenever it is read."""
    make_tree(tmp_path)
    ds = VideoDataset(tmp_path, "train", 4)
    pairs = [(2, 1), (0, 2), (3, 0), (2, 1), (1, 1)]
    alone = {p: VideoDataset(tmp_path, "train", 4, stats=ds.stats)[p] for p in pairs[:1]}
    for p in pairs[1:]:
        ds[p]                                                    # reads in between
    workers = torch.utils.data.DataLoader(ds, batch_size=1, sampler=pairs, num_workers=2)
    by_workers = [b for b in workers]
    for k in ("frames", "cond", "index"):
        assert torch.equal(ds[(2, 1)][k], alone[(2, 1)][k])
        for p, b in zip(pairs, by_workers):
            assert torch.equal(b[k][0], ds[p][k]), (p, k)


def test_window_sampler_is_seeded_per_epoch_and_disjoint_across_ranks():
    lengths = np.full(10, 30)
    s = WindowSampler(lengths, 12, 20, seed=1)
    s.set_epoch(0)
    e0 = list(s)
    assert e0 == list(s) and len(e0) == 20
    s.set_epoch(1)
    assert list(s) != e0
    assert all(0 <= start <= 18 for _, start in e0)
    assert sorted(i for i, _ in e0[:10]) == list(range(10))  # a permutation before repeats
    ranks = [WindowSampler(lengths, 12, 10, seed=1, rank=r, world_size=2) for r in range(2)]
    joined = [p for pair in zip(*(list(r) for r in ranks)) for p in pair]
    assert joined == e0  # the two ranks split one global stream
    first = WindowSampler(lengths, 12, 5, seed=1, random_window=False)
    assert all(start == 0 for _, start in first)


def _one_traj(root):
    return root / "train" / "traj_0_to_255" / "2"


@pytest.mark.parametrize("breakage, expect", [
    ("missing_frame", "3.png: frame missing"),
    ("wrong_size", "is 32x32, expected 64x64"),
    ("csv_columns", "expected 4 columns, found 3"),
    ("csv_rows", "expected 6 rows (one per frame), found 5"),
    ("csv_not_a_number", "not a number"),
    ("csv_nan", "non-finite value"),
    ("garbage_png", "unreadable image"),
])
def test_bad_input_gives_a_clear_error_naming_the_file(tmp_path, breakage, expect):
    make_tree(tmp_path)
    traj = _one_traj(tmp_path)
    actions = traj / layout.ACTIONS_FILE
    lines = actions.read_text().splitlines()
    if breakage == "missing_frame":
        (traj / "3.png").unlink()
    elif breakage == "wrong_size":
        Image.new("RGB", (32, 32)).save(traj / "1.png")
    elif breakage == "csv_columns":
        lines[2] = ",".join(lines[2].split(",")[:3])
    elif breakage == "csv_rows":
        lines = lines[:5]
    elif breakage == "csv_not_a_number":
        lines[1] = "1.0,abc,2,3"
    elif breakage == "csv_nan":
        lines[4] = "1.0,nan,2,3"
    elif breakage == "garbage_png":
        (traj / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    actions.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        ds = VideoDataset(tmp_path, "train", 4)
        for i in range(len(ds)):
            ds[i]
    msg = str(info.value)
    assert expect in msg
    assert str(traj) in msg


def test_empty_split_and_missing_root(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no trajectories"):
        VideoDataset(tmp_path, "train", 4)
    with pytest.raises(DataError, match="split folder not found"):
        VideoDataset(tmp_path / "nope", "train", 4)


def test_too_short_trajectories_are_refused(tmp_path):
    make_tree(tmp_path, T=6)
    with pytest.raises(DataError, match="6 frames, but sequences of 8 frames"):
        VideoDataset(tmp_path, "train", 8)


def test_layout_round_trip_is_exact(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    actions = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    positions = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    layout.write_trajectory(tmp_path / "t", frames, actions, positions)
    f, c = read_trajectory(tmp_path / "t")
    assert np.array_equal(f, frames)
    assert np.array_equal(c, np.concatenate([actions, positions], 1))
