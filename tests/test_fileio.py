"""The one atomic writer and the readers of the JSON files a run writes."""

import os
import stat

import pytest

from cvae_video.data import pack, synth
from cvae_video.fileio import BadFile, atomic_folder, atomic_write, atomic_write_json, atomic_write_text, read_json, \
    read_json_lines, remove_stale_temp_files


def test_written_files_get_the_users_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644      # mkstemp would give 0600


def test_generated_and_packed_data_sets_get_the_users_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        root = tmp_path / "world"
        synth.write_dataset(root, 2, 1, 1, seed=0, progress=False)
        pack.pack(root, ["train"], progress=False)
    finally:
        os.umask(old)
    for folder in (root, root / "train", pack.packed_dir(root, "train")):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder   # mkdtemp would give 0700


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "set"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "half").write_text("of the files")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []                   # nothing published, the temporary folder gone
    with atomic_folder(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(OSError):                            # a non-empty folder is not replaced unless asked
        with atomic_folder(target) as tmp:
            (tmp / "b").write_text("new")
    assert [p.name for p in target.iterdir()] == ["a"]
    with atomic_folder(target, replace=True) as tmp:
        (tmp / "b").write_text("new")
    assert [p.name for p in target.iterdir()] == ["b"] and list(tmp_path.iterdir()) == [target]


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = atomic_write_text(tmp_path / "a.json", "old")

    def broken(f):
        f.write(b"half of the new")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_parent_folder_is_created_and_stale_temp_files_are_found(tmp_path):
    path = atomic_write_json(tmp_path / "sub" / "x.json", {"a": 1})
    assert read_json(path) == {"a": 1}
    stale = path.with_name(".x.json.123.abcd.tmp")
    stale.write_bytes(b"left by a killed process")
    assert remove_stale_temp_files(path.parent) == [stale] and not stale.exists() and path.exists()


def test_truncated_json_names_the_file_and_the_place(tmp_path):
    path = tmp_path / "done.json"
    path.write_text('{"run_id": "base", "config_di')
    with pytest.raises(BadFile, match=r"done.json: not valid JSON \(line 1"):
        read_json(path)


def test_json_lines_name_the_bad_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert read_json_lines(path) == []
    path.write_text('{"epoch": 0}\n\n{"epoch": 1}\n{"epo\n')
    with pytest.raises(BadFile, match="metrics.jsonl: line 4 is not valid JSON"):
        read_json_lines(path)
    path.write_text('{"epoch": 0}\n\n{"epoch": 1}\n')
    assert read_json_lines(path) == [{"epoch": 0}, {"epoch": 1}]
