"""The synthetic push world: determinism, the position/action convention, physics, the layout on disk, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cvae_video.data import cli, layout, synth
from helpers import read_trajectory
from cvae_video.errors import ConfigError

TINY = synth.SynthConfig(seq_len=4)


def _traj(seed: int, split: str = "train", index: int = 0, cfg: synth.SynthConfig = synth.SynthConfig()):
    return synth.generate_trajectory(synth.trajectory_rng(seed, split, index), cfg)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------------------
# one trajectory


def test_shapes_and_dtypes():
    frames, actions, positions = _traj(0)
    assert frames.shape == (30, 64, 64, 3) and frames.dtype == np.uint8
    assert actions.shape == (30, 4) and actions.dtype == np.float32
    assert positions.shape == (30, 3) and positions.dtype == np.float32
    assert np.all(positions >= synth.POSITION_LOW) and np.all(positions <= synth.POSITION_HIGH)
    assert set(np.unique(actions[:, 3])) <= {-1.0, 1.0}
    frames, actions, positions = _traj(0, cfg=synth.SynthConfig(seq_len=7, image_size=48))
    assert frames.shape == (7, 48, 48, 3) and actions.shape == (7, 4) and positions.shape == (7, 3)
    frames, _, _ = _traj(0, cfg=synth.SynthConfig(seq_len=3, min_objects=0, max_objects=0))  # an empty table
    assert frames.shape == (3, 64, 64, 3)


def test_deterministic_given_seed():
    a, b, c = _traj(3), _traj(3), _traj(4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_trajectory_depends_only_on_seed_split_index():
    alone = _traj(0, "validate", 5)
    for i in range(5):  # draw others first, in another order
        _traj(0, "validate", 4 - i)
    again = _traj(0, "validate", 5)
    for x, y in zip(alone, again):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(alone[0], _traj(0, "train", 5)[0])


def test_position_follows_action():
    # position[t + 1] = clip(position[t] + ACTION_SCALE * action[t, :3]), exactly, in float32
    for i in range(8):
        _, actions, positions = _traj(1, index=i, cfg=synth.SynthConfig(speed=2.0))
        step = positions[:-1] + actions[:-1, :3] * np.float32(synth.ACTION_SCALE)
        np.testing.assert_array_equal(positions[1:], np.clip(step, synth.POSITION_LOW, synth.POSITION_HIGH))


def test_gripper_moves_several_pixels_per_frame():
    steps = []
    for i in range(16):
        _, _, positions = _traj(2, index=i)
        steps.append(np.hypot(*np.diff(positions[:, :2], axis=0).T) * 32)  # table units -> 64x64 pixels
    assert 1.5 < np.mean(steps) < 5.0
    _, _, fast = _traj(2, cfg=synth.SynthConfig(speed=2.0))
    _, _, slow = _traj(2, cfg=synth.SynthConfig(speed=1.0))
    assert np.abs(np.diff(fast[:, :2], axis=0)).mean() > 1.5 * np.abs(np.diff(slow[:, :2], axis=0)).mean()


def test_every_texture_renders_a_visible_gripper():
    for texture in synth.TEXTURE_CHOICES:
        cfg = synth.SynthConfig(seq_len=3, texture=texture)
        ep = synth.simulate(synth.trajectory_rng(0, "test", 0), cfg)
        frames = synth.render(ep, cfg.image_size).astype(np.float32) / 255
        assert frames.shape == (3, 64, 64, 3)
        col, row = ((ep.positions[0, :2] + 1) * 32).astype(int)
        window = np.abs(frames[0] - ep.background)[row - 3:row + 4, col - 3:col + 4]
        assert window.max() > 0.3, texture


# ------------------------------------------------------------------------------------------------------------
# physics


def step(pos, vel, radius, grip_from, grip_to, friction):
    """``synth.step_objects`` on arrays or lists: the new centres and displacements as (K, 2) arrays."""
    floats = [np.asarray(a, dtype=np.float64).tolist() for a in (pos, vel, radius, grip_from, grip_to)]
    new_pos, new_vel = synth.step_objects(*floats, float(friction))
    return np.array(new_pos, dtype=np.float64).reshape(-1, 2), np.array(new_vel, dtype=np.float64).reshape(-1, 2)


def test_object_at_rest_far_from_the_gripper_does_not_move():
    pos, vel = np.array([[0.6, 0.6]]), np.zeros((1, 2))
    grip = np.array([-0.8, -0.8, 0.0])
    for _ in range(20):
        nxt = grip + np.array([0.1, 0.0, 0.0])
        pos, vel = step(pos, vel, [0.15], grip, nxt, friction=0.2)
        grip = nxt
    np.testing.assert_array_equal(pos, [[0.6, 0.6]])
    np.testing.assert_array_equal(vel, 0.0)


def test_low_gripper_pushes_lifted_gripper_passes_over():
    start = np.array([[0.0, 0.0]])
    # low: pushed out to touching distance along the gripper's motion
    pos, vel = step(start, np.zeros((1, 2)), [0.15], [-0.4, 0.0, 0.0], [-0.1, 0.0, 0.0], 0.3)
    np.testing.assert_allclose(pos, [[-0.1 + 0.15 + synth.grip_radius(0.0), 0.0]])
    np.testing.assert_allclose(vel, pos - start)
    # lifted: no contact
    pos, vel = step(start, np.zeros((1, 2)), [0.15], [-0.4, 0.0, 0.8], [0.4, 0.0, 0.8], 0.3)
    np.testing.assert_array_equal(pos, start)


def test_fast_gripper_cannot_jump_over_an_object():
    pos, _ = step([[0.0, 0.0]], [[0.0, 0.0]], [0.13], [-0.6, 0.0, 0.0], [0.6, 0.0, 0.0], 0.3)
    assert pos[0, 0] > 0.6  # carried along in front of the gripper, not left behind it


def test_pushed_object_slides_with_friction():
    def slide(friction):
        pos, vel = step([[0.0, 0.0]], [[0.0, 0.0]], [0.15], [-0.4, 0, 0], [-0.2, 0, 0], friction)
        moved = []
        for _ in range(3):  # gripper stays put: free sliding
            new, vel = step(pos, vel, [0.15], [-0.2, 0, 0], [-0.2, 0, 0], friction)
            moved.append(new[0, 0] - pos[0, 0])
            pos = new
        return np.array(moved)

    slippery, sticky = slide(0.1), slide(0.5)
    np.testing.assert_allclose(slippery[1:] / slippery[:-1], 0.9)
    np.testing.assert_allclose(sticky[1:] / sticky[:-1], 0.5)
    assert slippery.sum() > 2 * sticky.sum()


def test_objects_stay_on_the_table_and_apart():
    far = [-0.9, -0.9, 0.0]
    # overlapping objects are pushed apart, half the overlap each
    pos, _ = step([[0.0, 0.0], [0.25, 0.0]], [[0.0, 0.0]] * 2, [0.15, 0.15], far, far, 0.2)
    np.testing.assert_allclose(pos, [[-0.025, 0.0], [0.275, 0.0]])
    # a fast object stops at the edge of the table
    pos, vel = step([[0.7, 0.0]], [[0.5, 0.0]], [0.15], far, far, 0.0)
    np.testing.assert_allclose(pos, [[0.85, 0.0]])
    np.testing.assert_allclose(vel, [[0.15, 0.0]])


def test_untouched_objects_in_generated_trajectories_stay_still():
    cfg = synth.SynthConfig(min_objects=3, max_objects=3)
    checked = 0
    for i in range(24):
        ep = synth.simulate(synth.trajectory_rng(1, "train", i), cfg)
        grip, low = ep.positions[:, :2].astype(np.float64), ep.positions[:, 2] < synth.CONTACT_HEIGHT
        for k in range(3):
            reach = ep.object_radius[k] + synth.grip_radius(1.0) + 0.25  # + the longest gripper step
            near_gripper = (np.hypot(*(ep.object_pos[:, k] - grip).T) < reach) & low
            near_object = [np.hypot(*(ep.object_pos[:, k] - ep.object_pos[:, j]).T).min()
                           < ep.object_radius[k] + ep.object_radius[j] + 0.25 for j in range(3) if j != k]
            if not near_gripper.any() and not any(near_object):
                checked += 1
                np.testing.assert_array_equal(ep.object_pos[:, k], np.broadcast_to(ep.object_pos[0, k], (30, 2)))
    assert checked > 0


def test_hidden_friction_varies_per_trajectory():
    cfg = synth.SynthConfig(seq_len=2)
    friction = np.array([synth.simulate(synth.trajectory_rng(0, "train", i), cfg).friction for i in range(32)])
    lo, hi = cfg.friction_range
    assert np.all((friction >= lo) & (friction <= hi))
    assert friction.std() > 0.2 * (hi - lo)
    fixed = synth.SynthConfig(seq_len=2, friction_range=(0.3, 0.3))
    assert {synth.simulate(synth.trajectory_rng(0, "train", i), fixed).friction for i in range(4)} == {0.3}


# ------------------------------------------------------------------------------------------------------------
# config


def test_config_round_trip_and_bad_values():
    cfg = synth.SynthConfig(seq_len=12, texture="wood", friction_range=[0.2, 0.4])
    assert cfg.friction_range == (0.2, 0.4)
    assert synth.SynthConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    bad = [dict(min_objects=3, max_objects=1), dict(max_objects=99), dict(seq_len=1), dict(speed=0.0),
           dict(texture="marble"), dict(friction_range=(0.5, 0.2)), dict(friction_range=(0.1, 1.0)),
           dict(seq_len=2.5), dict(image_size=16)]
    for kwargs in bad:
        with pytest.raises(ConfigError):
            synth.SynthConfig(**kwargs)
    with pytest.raises(ConfigError, match="colour"):
        synth.SynthConfig.from_dict({"colour": 1})
    with pytest.raises(ConfigError, match="n_train"):
        synth.write_dataset("unused", n_train=-1)
    with pytest.raises(ConfigError, match="workers"):
        synth.write_dataset("unused", n_train=1, workers=0)


# ------------------------------------------------------------------------------------------------------------
# on disk


def test_group_names_like_bair():
    assert synth.group_name(0, 256) == "traj_0_to_255"
    assert synth.group_name(300, 600) == "traj_256_to_511"
    assert synth.group_name(599, 600) == "traj_512_to_599"
    assert synth.group_name(3, 4) == "traj_0_to_3"


def test_written_dataset_reads_back_exactly(tmp_path):
    out = tmp_path / "push"
    info = synth.write_dataset(out, n_train=3, n_validate=2, n_test=1, seed=7, cfg=TINY, progress=False)
    assert info["counts"] == {"train": 3, "validate": 2, "test": 1}
    assert sorted(p.name for p in out.iterdir()) == ["synth_config.json", "test", "train", "validate"]
    for split, n in info["counts"].items():
        trajs = layout.list_trajectories(out, split)
        assert [t.name for t in trajs] == [str(i) for i in range(n)]
        assert {t.parent.name for t in trajs} == {f"traj_0_to_{n - 1}"}
        for i, traj in enumerate(trajs):
            frames, cond = read_trajectory(traj, TINY.seq_len)
            want_frames, want_actions, want_positions = _traj(7, split, i, TINY)
            np.testing.assert_array_equal(frames, want_frames)
            np.testing.assert_array_equal(cond, np.concatenate([want_actions, want_positions], axis=1))
    assert synth.is_complete(out, 3, 2, 1, seed=7, cfg=TINY)
    assert not synth.is_complete(out, 3, 2, 1, seed=8, cfg=TINY)
    assert not synth.is_complete(out, 4, 2, 1, seed=7, cfg=TINY)
    assert not synth.is_complete(out, 3, 2, 1, seed=7, cfg=synth.SynthConfig(seq_len=4, speed=2.0))
    assert not [p for p in tmp_path.iterdir() if p.name != "push"]  # no temporary folder left behind


def test_parallel_writing_gives_identical_files(tmp_path):
    cfg = synth.SynthConfig(seq_len=2, image_size=32)
    synth.write_dataset(tmp_path / "one", n_train=70, n_validate=3, n_test=0, cfg=cfg, progress=False)
    synth.write_dataset(tmp_path / "two", n_train=70, n_validate=3, n_test=0, cfg=cfg, workers=2, progress=False)
    assert _tree_bytes(tmp_path / "one") == _tree_bytes(tmp_path / "two")


def test_existing_destination(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        synth.write_dataset(mine, n_train=1, n_validate=0, n_test=0, cfg=TINY, progress=False)
    with pytest.raises(ConfigError, match="refusing"):
        synth.write_dataset(mine, n_train=1, n_validate=0, n_test=0, cfg=TINY, progress=False, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"

    out = tmp_path / "push"
    synth.write_dataset(out, n_train=1, n_validate=0, n_test=0, cfg=TINY, progress=False)
    synth.write_dataset(out, n_train=2, n_validate=0, n_test=0, cfg=TINY, progress=False, overwrite=True)
    assert synth.is_complete(out, 2, 0, 0, cfg=TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "push"]


def test_ensure_reuses_complete_and_regenerates_incomplete(tmp_path):
    counts = dict(n_train=2, n_validate=1, n_test=1, seed=3, cfg=TINY, progress=False)
    root = synth.ensure_synth_dataset(tmp_path, **counts)
    assert synth.is_complete(root, 2, 1, 1, seed=3, cfg=TINY)
    marker = root / "train" / "traj_0_to_1" / "0" / "0.png"
    stamp = marker.stat().st_mtime_ns

    assert synth.ensure_synth_dataset(tmp_path, **counts) == root
    assert marker.stat().st_mtime_ns == stamp  # reused, not rewritten

    other = synth.ensure_synth_dataset(tmp_path, **{**counts, "seed": 4})
    assert other != root and root.is_dir()  # a different data set gets its own folder

    (root / "train" / "traj_0_to_1" / "1" / "1.png").unlink()  # damage it
    assert not synth.is_complete(root, 2, 1, 1, seed=3, cfg=TINY)
    assert synth.ensure_synth_dataset(tmp_path, **counts) == root
    assert synth.is_complete(root, 2, 1, 1, seed=3, cfg=TINY)


def test_ensure_removes_abandoned_partial_folders(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    name = synth.cache_name(1, 0, 0, 0, TINY)
    abandoned = tmp_path / f".{name}.partial-{dead_pid}-abc"
    (abandoned / "train").mkdir(parents=True)
    synth.ensure_synth_dataset(tmp_path, 1, 0, 0, 0, TINY, progress=False)
    assert not abandoned.exists()


# ------------------------------------------------------------------------------------------------------------
# command line


def test_cli_writes_a_tiny_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    code = cli.main(["synth", "--out", str(out), "--n_train", "2", "--n_validate", "1", "--n_test", "1",
                     "--seq_len", "3", "--max_objects", "2", "--texture", "checker", "--speed", "1.5",
                     "--seed", "5"])
    assert code == 0
    assert "wrote 4 trajectories" in capsys.readouterr().out
    cfg = synth.SynthConfig(seq_len=3, max_objects=2, texture="checker", speed=1.5)
    assert synth.is_complete(out, 2, 1, 1, seed=5, cfg=cfg)
    assert len(layout.list_trajectories(out, "train")) == 2


@pytest.mark.parametrize("flags, message", [
    (["--min_objects", "3", "--max_objects", "1"], "min_objects"),
    (["--n_train", "-1"], "n_train"),
    (["--texture", "marble"], "texture"),
    (["--speed", "-2"], "speed"),
])
def test_cli_rejects_bad_values(tmp_path, capsys, flags, message):
    code = cli.main(["synth", "--out", str(tmp_path / "x"), "--n_train", "1", "--n_validate", "0",
                     "--n_test", "0", "--seq_len", "2"] + flags)
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("cvae-data synth: error:") and message in err
    assert not (tmp_path / "x").exists()
