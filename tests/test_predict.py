"""`cvae-predict` on frames and conditions of one's own: folders and videos, CSV layouts, outputs, bad input."""

import numpy as np
import pytest
from PIL import Image

from cvae_video import predict, train
from cvae_video.data import layout
from cvae_video.errors import DataError
from helpers import TINY_FLAGS, read_trajectory

N_FUTURE, N_SAMPLES = 3, 2


@pytest.fixture(scope="module")
def ckpt(synth_root, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("predict_run")
    assert train.main(["--data_root", str(synth_root), "--log_dir", str(log_dir), "--niter", "1", "--epoch_size", "2",
                       "--n_pictures", "0", *TINY_FLAGS]) == 0
    return log_dir / "best.pt"


@pytest.fixture
def own(synth_root, tmp_path):
    """A test trajectory as a user would have it: 4 frames of 96x128 pixels (the 64x64 frame in the middle of a
    red border), and the BAIR CSVs with rows for the 4 given and the 3 predicted frames."""
    traj = layout.list_trajectories(synth_root, "test")[0]
    frames, cond = read_trajectory(traj, 4 + N_FUTURE)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(4):
        canvas = np.zeros((96, 128, 3), np.uint8)
        canvas[..., 0] = 255
        canvas[16:80, 32:96] = np.asarray(Image.fromarray(frames[t]).resize((64, 64)))
        Image.fromarray(canvas).save(folder / f"frame_{t + 1}.png")   # natural order: frame_2 before frame_10
    np.savetxt(tmp_path / "actions.csv", cond[:, :4], delimiter=",")
    np.savetxt(tmp_path / "positions.csv", cond[:, 4:], delimiter=",")
    np.savetxt(tmp_path / "both.csv", cond, delimiter=",")
    return tmp_path, frames


def test_centre_crop_then_resize():
    wide = np.zeros((64, 192, 3), np.uint8)
    wide[:, 64:128] = (0, 200, 0)                        # the centred square is green, the sides black
    out = predict.to_model_size(Image.fromarray(wide))
    assert out.shape == (64, 64, 3) and (out[..., 1] > 190).all() and (out[..., 0] < 10).all()
    grey = Image.fromarray(np.full((32, 32), 7, np.uint8))
    assert predict.to_model_size(grey).shape == (64, 64, 3)   # grey becomes RGB, small becomes 64x64


def test_predicts_from_a_folder_and_writes_pngs_gifs_and_videos(ckpt, own, tmp_path):
    root, _ = own
    out = tmp_path / "out"
    assert predict.main(["--ckpt", str(ckpt), "--frames", str(root / "frames"), "--actions", str(root / "actions.csv"),
                         "--positions", str(root / "positions.csv"), "--n_future", str(N_FUTURE), "--n_samples",
                         str(N_SAMPLES), "--out", str(out), "--precision", "fp32"]) == 0
    for k in range(N_SAMPLES):
        pngs = sorted((out / f"sample{k}").glob("*.png"))
        assert [p.name for p in pngs] == ["4.png", "5.png", "6.png"]
        assert all(Image.open(p).size == (64, 64) for p in pngs)
        gif = Image.open(out / f"sample{k}.gif")   # identical neighbours are merged: count the time they show
        shown = 0
        for i in range(gif.n_frames):
            gif.seek(i)
            shown += gif.info["duration"]
        assert shown == (4 + N_FUTURE) * 250
        import imageio.v3 as iio
        assert iio.imread(out / f"sample{k}.mp4", index=None).shape[:3] == (4 + N_FUTURE, 64, 64)
    # the same as the model predicts from the last n_past (2) frames and the rows of frames 2 .. 6, normalised
    import torch
    from cvae_video.inference import open_for_inference
    from cvae_video.runtime import derive_seed
    trained = open_for_inference(ckpt)
    given = predict.read_frames(root / "frames")
    cond = np.loadtxt(root / "both.csv", delimiter=",", dtype=np.float32)
    x = torch.from_numpy(given[2:]).permute(0, 3, 1, 2).float().div(255)[None]
    c = torch.from_numpy(trained.stats.normalize(cond[2:7]))[None]
    with torch.inference_mode():
        # the latents as predict_batch draws them: seed 0 with the index of the (one) sequence, 0
        want = trained.model.predict(x, c, N_FUTURE, n_samples=N_SAMPLES,
                                     generator=torch.Generator().manual_seed(derive_seed(0, 0)))
    want = (want[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    for k in range(N_SAMPLES):
        for j in range(N_FUTURE):
            assert np.array_equal(np.asarray(Image.open(out / f"sample{k}" / f"{4 + j}.png")), want[k, j])


def test_a_video_and_seven_column_conditions(ckpt, own, tmp_path):
    root, frames = own
    import imageio.v3 as iio
    video = tmp_path / "past.mp4"
    iio.imwrite(video, frames[:4], fps=4, codec="libx264", macro_block_size=1)
    got = predict.read_frames(video)
    assert got.shape == (4, 64, 64, 3) and np.abs(got.astype(int) - frames[:4]).mean() < 12   # lossy codec
    out = tmp_path / "out"
    assert predict.main(["--ckpt", str(ckpt), "--frames", str(video), "--actions", str(root / "both.csv"),
                         "--n_future", "2", "--n_samples", "1", "--out", str(out), "--precision", "fp32"]) == 0
    assert sorted(p.name for p in (out / "sample0").glob("*.png")) == ["4.png", "5.png"]


def test_without_positions_the_training_mean_stands_in(ckpt, own, tmp_path, capsys):
    root, _ = own
    assert predict.main(["--ckpt", str(ckpt), "--frames", str(root / "frames"), "--actions", str(root / "actions.csv"),
                         "--n_future", "1", "--n_samples", "1", "--out", str(tmp_path / "o"), "--precision",
                         "fp32"]) == 0
    assert "training mean position" in capsys.readouterr().err


@pytest.mark.parametrize("case, expect", [
    ("too_few_frames", "frames: 1 frame(s), but the model starts from 2"),
    ("too_few_rows", "actions.csv: 5 rows, but 7 are needed"),
    ("wrong_columns", "positions.csv, line 2: expected 3 columns, found 2"),
    ("not_an_image", "frame_3.png: not a readable image"),
    ("not_a_video", "notes.txt: not a folder of images or a video file"),
])
def test_bad_input_names_the_file(ckpt, own, tmp_path, capsys, case, expect):
    root, _ = own
    frames, actions, positions = root / "frames", root / "actions.csv", root / "positions.csv"
    if case == "too_few_frames":
        for p in sorted(frames.iterdir())[1:]:
            p.unlink()
    elif case == "too_few_rows":
        actions.write_text("".join(actions.read_text().splitlines(True)[:5]))
    elif case == "wrong_columns":
        lines = positions.read_text().splitlines(True)
        positions.write_text(lines[0] + "1,2\n" + "".join(lines[2:]))
    elif case == "not_an_image":
        (frames / "frame_3.png").write_bytes(b"not a png")
    else:
        frames = root / "notes.txt"
        frames.write_text("hello")
    rc = predict.main(["--ckpt", str(ckpt), "--frames", str(frames), "--actions", str(actions), "--positions",
                       str(positions), "--n_future", str(N_FUTURE), "--out", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err
    assert expect in err and err.count("\n") == 1, err
    with pytest.raises(DataError):
        predict.read_frames(tmp_path / "missing")
