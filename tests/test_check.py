"""`cvae-data check`: every kind of damage is found, with the right kind and path; exit codes and JSON output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvae_video.data import check, layout, problems
from cvae_video.data.dataset import VideoDataset
from cvae_video.data.cli import main
from cvae_video.errors import DataError
from helpers import breakable_data, edit_line

T = 6  # frames per trajectory of the test data set
GROUP = "train/traj_0_to_5"
LAYOUT_KINDS = {"missing_split", "empty_split", "empty_group", "stray_entry"}


clean_root, root = breakable_data("check", T, 6, 2, 2, seed=1)   # the data set, and a fresh copy per test to break


def _scan(root: Path, **kw) -> check.ScanReport:
    return check.scan_dataset(root, progress=False, **kw)


def _found(report: check.ScanReport, root: Path) -> list[tuple[str, str]]:
    return [(p.kind, Path(p.path).relative_to(root).as_posix()) for p in report.problems]


def _save(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# each: (name, how to break the data set, expected problems as (kind, path relative to the root))
BREAKS = [
    ("missing frame", lambda r: (r / GROUP / "1/3.png").unlink(),
     [("missing_frame", f"{GROUP}/1/3.png")]),
    ("stray frame after a gap", lambda r: shutil.copy(r / GROUP / "1/0.png", r / GROUP / "1/31.png"),
     [("extra_frame", f"{GROUP}/1/31.png")]),
    ("one frame too many", lambda r: shutil.copy(r / GROUP / "1/0.png", r / GROUP / f"1/{T}.png"),
     [("frame_count_mismatch", f"{GROUP}/1")]),
    ("no frames", lambda r: [p.unlink() for p in (r / GROUP / "2").glob("*.png")],
     [("no_frames", f"{GROUP}/2")]),
    ("non-frame files", lambda r: [(r / GROUP / "2" / n).write_bytes(b"x") for n in ("01.png", "a.png", "notes")],
     [("extra_file", f"{GROUP}/2/01.png"), ("extra_file", f"{GROUP}/2/a.png"), ("extra_file", f"{GROUP}/2/notes")]),
    ("wrong size", lambda r: _save(r / GROUP / "0/2.png", np.zeros((32, 32, 3), np.uint8)),
     [("wrong_size", f"{GROUP}/0/2.png")]),
    ("grayscale", lambda r: _save(r / GROUP / "0/2.png", np.zeros((64, 64), np.uint8)),
     [("wrong_mode", f"{GROUP}/0/2.png")]),
    ("RGBA", lambda r: _save(r / GROUP / "0/2.png", np.zeros((64, 64, 4), np.uint8)),
     [("wrong_mode", f"{GROUP}/0/2.png")]),
    ("truncated PNG", lambda r: _truncate(r / GROUP / "0/4.png"),
     [("unreadable_image", f"{GROUP}/0/4.png")]),
    ("garbage PNG", lambda r: (r / GROUP / "0/4.png").write_bytes(b"not a png at all"),
     [("unreadable_image", f"{GROUP}/0/4.png")]),
    ("CSV columns", lambda r: edit_line(r / GROUP / "3/actions.csv", 2, "0.1,0.2,0.3"),
     [("csv_columns", f"{GROUP}/3/actions.csv")]),
    ("CSV row missing", lambda r: edit_line(r / GROUP / "3/endeffector_positions.csv", T, None),
     [("csv_rows", f"{GROUP}/3/endeffector_positions.csv")]),
    ("CSV not a number", lambda r: edit_line(r / GROUP / "3/actions.csv", 1, "0.1,abc,0.3,1"),
     [("csv_not_a_number", f"{GROUP}/3/actions.csv")]),
    ("CSV NaN", lambda r: edit_line(r / GROUP / "3/endeffector_positions.csv", 4, "0.1,nan,0.3"),
     [("csv_non_finite", f"{GROUP}/3/endeffector_positions.csv")]),
    ("CSV missing", lambda r: (r / GROUP / "4/actions.csv").unlink(),
     [("csv_missing", f"{GROUP}/4/actions.csv")]),
    ("CSV binary", lambda r: (r / GROUP / "4/actions.csv").write_bytes(b"\xff\xfe\x00garbage"),
     [("csv_unreadable", f"{GROUP}/4/actions.csv")]),
    ("empty group", lambda r: (r / "train/traj_6_to_9").mkdir(),
     [("empty_group", "train/traj_6_to_9")]),
    ("stray entries", lambda r: [(r / GROUP / "README").write_text("x"), (r / GROUP / "x").mkdir(),
                                 (r / "train/list.txt").write_text("x"), (r / GROUP / ".DS_Store").write_text("x"),
                                 (r / GROUP / ".7.partial").mkdir()],
     [("stray_entry", "train/list.txt"), ("stray_entry", f"{GROUP}/.7.partial"), ("stray_entry", f"{GROUP}/README"),
      ("stray_entry", f"{GROUP}/x")]),
    ("empty split", lambda r: shutil.rmtree(r / "test/traj_0_to_1"),
     [("empty_split", "test")]),
    ("missing split", lambda r: shutil.rmtree(r / "validate"),
     [("missing_split", "validate")]),
]


def test_clean_data_set_has_no_problems(clean_root):
    report = _scan(clean_root)
    assert report.ok, report.problems
    assert (report.trajectories, report.frames, report.bad_trajectories) == (10, 10 * T, 0)


@pytest.mark.parametrize("name,damage,expected", BREAKS, ids=[b[0] for b in BREAKS])
def test_each_kind_of_damage_is_found(root, name, damage, expected):
    damage(root)
    report = _scan(root)
    assert sorted(_found(report, root)) == sorted(expected)
    # each break touches at most one trajectory; it is unusable unless the reader tolerates the problem
    unusable = any(kind not in LAYOUT_KINDS | problems.TOLERATED for kind, _ in expected)
    assert report.bad_trajectories == int(unusable)
    assert report.flagged_trajectories == int(any(kind not in LAYOUT_KINDS for kind, _ in expected))


def test_details_name_lines_and_counts(root):
    for line in (2, 5):
        edit_line(root / GROUP / "0/actions.csv", line, "nan,0,0,0")
    (report_problem,) = problems.scan_trajectory(root / GROUP / "0").problems
    assert report_problem.kind == "csv_non_finite"
    assert report_problem.detail.startswith("line 2: non-finite value") and report_problem.detail.endswith("(2 lines)")


def test_quick_mode_still_finds_truncated_and_corrupted_frames(root):
    _truncate(root / GROUP / "0/1.png")
    data = bytearray((root / GROUP / "0/2.png").read_bytes())
    data[100] ^= 0xFF  # inside the pixel data: its chunk checksum no longer matches
    (root / GROUP / "0/2.png").write_bytes(bytes(data))
    for decode in (True, False):
        kinds = _found(_scan(root, decode=decode), root)
        assert kinds == [("unreadable_image", f"{GROUP}/0/1.png"), ("unreadable_image", f"{GROUP}/0/2.png")]


def test_too_short_and_images_skipped(root):
    _save(root / GROUP / "0/2.png", np.zeros((32, 32, 3), np.uint8))
    report = _scan(root, min_frames=T + 1, check_images=False)
    assert {k for k, _ in _found(report, root)} == {"too_short"}
    assert report.bad_trajectories == report.trajectories == 10


def test_cli_clean_exits_0_with_one_ok_line(clean_root, capsys):
    assert main(["check", "--data_root", str(clean_root), "--no_progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("ok: ") and "10 trajectories" in out[0]


def test_cli_broken_exits_1_with_summary_and_json(root, tmp_path, capsys):
    for t in range(5):  # 5 missing frames: 3 shown, "2 more"
        (root / GROUP / f"{t}/3.png").unlink()
    edit_line(root / GROUP / "5/actions.csv", 1, "nan,0,0,0")
    out_json = tmp_path / "report.json"
    assert main(["check", "--data_root", str(root), "--quick", "--json", str(out_json), "--no_progress"]) == 1
    out = capsys.readouterr().out
    assert "6 problems; 6 trajectories affected, 6 of them unusable" in out
    assert "missing_frame" in out and "... and 2 more" in out
    assert f"{GROUP}/0/3.png: frame missing" in out
    assert f"{GROUP}/5/actions.csv: line 1: non-finite value" in out
    report = json.loads(out_json.read_text())
    assert report["ok"] is False and report["images"] == "checksums"
    assert report["counts"] == {"missing_frame": 5, "csv_non_finite": 1}
    assert len(report["problems"]) == 6 and report["problems"][0]["kind"] == "missing_frame"


def test_cli_rejects_bad_flags(clean_root, capsys):
    assert main(["check", "--data_root", str(clean_root), "--min_frames", "0"]) == 1
    assert "--min_frames" in capsys.readouterr().err


def _unusable(report: check.ScanReport, trajectories: list[Path]) -> set[Path]:
    return {t for t in trajectories if any(p.fatal and Path(p.path).is_relative_to(t) for p in report.problems)}


def test_the_reader_leaves_out_exactly_what_check_calls_unusable(root):
    (root / GROUP / "1/3.png").unlink()
    edit_line(root / GROUP / "3/endeffector_positions.csv", 2, "0,inf,0")
    _save(root / GROUP / "4/0.png", np.zeros((64, 64), np.uint8))         # grayscale: still readable
    _save(root / GROUP / "5/0.png", np.zeros((32, 32, 3), np.uint8))      # found only when images are checked
    (root / GROUP / "2/notes.txt").write_text("ignored by the reader")
    trajectories = layout.list_trajectories(root, "train")

    listing = VideoDataset(root, "train", T, use_packed=False, on_bad_sample="skip")
    assert set(listing.skipped) == {trajectories[1], trajectories[3]}
    assert set(listing.skipped) == _unusable(_scan(root, splits=("train",), check_images=False), trajectories)
    assert listing.skipped[trajectories[1]] == f"{trajectories[1] / '3.png'}: frame missing"
    assert "non-finite" in listing.skipped[trajectories[3]]

    with_images = VideoDataset(root, "train", T, use_packed=False, check_frames=True, on_bad_sample="skip")
    assert set(with_images.skipped) == {trajectories[1], trajectories[3], trajectories[5]}
    assert set(with_images.skipped) == _unusable(_scan(root, splits=("train",), decode=False), trajectories)
    assert "expected 64x64" in with_images.skipped[trajectories[5]]

    short = problems.scan_trajectory(trajectories[0], min_frames=T + 1, check_images=False)
    assert short.fatal.kind == "too_short" and short.conditions is not None
    ok = problems.scan_trajectory(trajectories[0], min_frames=T)
    assert ok.fatal is None and ok.conditions.shape == (T, layout.COND_DIM)
    assert np.array_equal(ok.conditions, layout.read_conditions(trajectories[0], T))


def test_read_csv_raises_the_first_problem_as_before(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("1,2,3,4\n1,2\nx,1,2,3\n")
    with pytest.raises(DataError, match=r"a\.csv, line 2: expected 4 columns, found 2"):
        layout.read_csv(path, 3, 4)
    path.write_text("1,2,3,4\n\n5,6,7,8\n")
    assert layout.read_csv(path, 2, 4).tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    with pytest.raises(DataError, match=r"a\.csv: expected 3 rows \(one per frame\), found 2"):
        layout.read_csv(path, 3, 4)
    with pytest.raises(DataError, match=r"b\.csv: file not found"):
        layout.read_csv(tmp_path / "b.csv", 3, 4)
    scan = layout.scan_csv(path.parent / "c.csv", 4)
    assert [i.kind for i in scan.problems] == ["missing"]
