"""TFRecord reading and writing without TensorFlow, and the `cvae-data convert` verb."""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np
import pytest

from cvae_video.data import convert as conv
from cvae_video.data import tfrecord as tfr
from cvae_video.data.layout import list_trajectories
from cvae_video.errors import ConfigError, DataError
import tfrecord_files as tfw
from helpers import read_trajectory

STEPS = 5

# RFC 3720 appendix B.4, plus the usual check value of "123456789"
CRC32C_VECTORS = [
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"123456789", 0xE3069283),
]


def _implementations():
    impls = [("numpy", tfr._crc32c_numpy),
             ("python", lambda d, v=0: tfr._update_python(v ^ 0xFFFFFFFF, d) ^ 0xFFFFFFFF)]
    if tfr._FAST is not None:
        impls.append((tfr._FAST[0], tfr._FAST[1]))
    return impls


@pytest.mark.parametrize("name,fn", _implementations())
def test_crc32c_test_vectors(name, fn):
    for data, expected in CRC32C_VECTORS:
        assert fn(data) == expected, (name, data[:4])


def test_crc32c_numpy_matches_bytewise_on_long_data():
    rng = np.random.default_rng(0)
    for n in (0, 1, 2047, 2048, 5003, 70001):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        expected = tfr._update_python(0xFFFFFFFF, data) ^ 0xFFFFFFFF
        assert tfr._crc32c_numpy(data) == expected, n
        assert tfr._crc32c_numpy(data[n // 3:], tfr._crc32c_numpy(data[: n // 3])) == expected, n


def test_example_round_trip_packed_and_unpacked():
    features = {
        "img": b"\x00\x01\xff",
        "several": [b"a", b"", b"ccc"],
        "f": np.array([0.1, -2.5, 3e38, np.inf], dtype=np.float32),
        "i": np.array([0, 1, -1, 2**63 - 1, -(2**63), 300], dtype=np.int64),
        "mixed": [1, 2.5],
        "empty": np.zeros(0, dtype=np.float32),
    }
    for packed in (True, False):
        parsed = tfr.parse_example(tfw.encode_example(features, packed=packed))
        assert parsed["img"] == [b"\x00\x01\xff"]
        assert parsed["several"] == [b"a", b"", b"ccc"]
        assert np.array_equal(np.float32(parsed["f"]), features["f"])
        assert parsed["i"] == [0, 1, -1, 2**63 - 1, -(2**63), 300]
        assert parsed["mixed"] == [1.0, 2.5]
        assert parsed["empty"] == []


def test_parse_example_skips_unknown_fields_and_rejects_garbage():
    payload = tfw.encode_example({"a": np.float32([1.5])})
    # an unknown varint field (number 7) and an unknown fixed64 field (number 9) after the features
    extra = tfw.varint(7 << 3) + tfw.varint(12345) + tfw.varint((9 << 3) | 1) + bytes(8)
    assert tfr.parse_example(payload + extra) == {"a": [1.5]}
    with pytest.raises(DataError, match="malformed"):
        tfr.parse_example(payload[:-2])


def test_records_round_trip_and_framing(tmp_path):
    payloads = [b"", b"x", bytes(range(256)) * 50]
    path = tmp_path / "a.tfrecords"
    assert tfw.write_records(path, payloads) == 3
    assert list(tfw.iter_records(path)) == payloads
    raw = path.read_bytes()
    # first record: length 0, masked CRC of the 8 length bytes, no payload, masked CRC of b""
    assert raw[:8] == bytes(8)
    assert struct.unpack("<I", raw[8:12])[0] == tfr.masked_crc32c(bytes(8))
    assert struct.unpack("<I", raw[12:16])[0] == (((0 >> 15) | (0 << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    spans, error = tfr.index_records(path)
    assert error is None and [s.length for s in spans] == [0, 1, 12800]


def test_against_independent_tfrecord_package(tmp_path):
    pytest.importorskip("tfrecord")
    from tfrecord.reader import tfrecord_loader
    from tfrecord.writer import TFRecordWriter

    # our writer -> their protobuf-based reader
    rng = np.random.default_rng(1)
    ours = tmp_path / "ours.tfrecords"
    frames = rng.integers(0, 256, (STEPS, 64, 64, 3), dtype=np.uint8)
    actions = rng.normal(size=(STEPS, 4)).astype(np.float32)
    positions = rng.normal(size=(STEPS, 3)).astype(np.float32)
    tfw.write_records(ours, [tfw.encode_bair_example(frames, actions, positions)])
    description = {conv.IMAGE_KEY.format(1): "byte", conv.ACTION_KEY.format(2): "float",
                   conv.POSITION_KEY.format(4): "float"}
    (theirs_parsed,) = list(tfrecord_loader(str(ours), None, description))
    assert bytes(theirs_parsed[conv.IMAGE_KEY.format(1)]) == frames[1].tobytes()
    assert np.array_equal(theirs_parsed[conv.ACTION_KEY.format(2)], actions[2])
    assert np.array_equal(theirs_parsed[conv.POSITION_KEY.format(4)], positions[4])

    # their writer -> our reader (which checks both CRCs of every record)
    theirs = tmp_path / "theirs.tfrecords"
    writer = TFRecordWriter(str(theirs))
    writer.write({"img": (b"\x01\x02", "byte"), "f": ([0.25, -1.0], "float"), "i": ([5, -7], "int")})
    writer.close()
    (parsed,) = list(tfw.read_examples(theirs))
    assert parsed == {"img": [b"\x01\x02"], "f": [0.25, -1.0], "i": [5, -7]}
    # and the masked CRC bytes agree for the same payload
    payload = b"some payload" * 10
    assert struct.pack("<I", tfr.masked_crc32c(payload)) == TFRecordWriter.masked_crc(payload)


# ----------------------------------------------------------------------------------------------------------------
# convert


def _trajectory(rng, steps=STEPS):
    frames = rng.integers(0, 256, (steps, 64, 64, 3), dtype=np.uint8)
    actions = rng.normal(size=(steps, 4)).astype(np.float32)
    positions = rng.normal(size=(steps, 3)).astype(np.float32)
    return frames, actions, positions


def make_release(base: Path, layout: dict[str, dict[str, int]], seed: int = 0) -> dict:
    """Write DIR/{split}/{name}.tfrecords with the given record counts; returns {(split, group, index): traj}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for split, files in layout.items():
        (base / split).mkdir(parents=True, exist_ok=True)
        for name, count in files.items():
            trajs = [_trajectory(rng) for _ in range(count)]
            tfw.write_records(base / split / f"{name}.tfrecords", [tfw.encode_bair_example(*t) for t in trajs])
            for i, t in enumerate(trajs):
                truth[(split, name, i)] = t
    return truth


# natural order puts traj_2_to_5 before traj_10_to_13 (a plain string sort would not)
LAYOUT = {"train": {"traj_10_to_13": 4, "traj_2_to_5": 4}, "test": {"traj_0_to_2": 3}}


@pytest.fixture()
def release(tmp_path):
    src = tmp_path / "softmotion30_44k"
    return src, make_release(src, LAYOUT)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_convert_round_trip_and_validate_split(release, tmp_path):
    src, truth = release
    out = tmp_path / "data"
    report = conv.convert(src, out, validate_count=5, progress=False)
    assert report.written == {"train": 3, "validate": 5, "test": 3} and not report.skipped

    names = {split: [str(p.relative_to(out / split)) for p in list_trajectories(out, split)]
             for split in ("train", "validate", "test")}
    assert names["validate"] == ["traj_2_to_5/0", "traj_2_to_5/1", "traj_2_to_5/2", "traj_2_to_5/3",
                                 "traj_10_to_13/0"]
    assert names["train"] == ["traj_10_to_13/1", "traj_10_to_13/2", "traj_10_to_13/3"]
    assert names["test"] == ["traj_0_to_2/0", "traj_0_to_2/1", "traj_0_to_2/2"]

    source_split = {"train": "train", "validate": "train", "test": "test"}
    for split, rels in names.items():
        for rel in rels:
            group, index = rel.split("/")
            frames, actions, positions = truth[(source_split[split], group, int(index))]
            got_frames, cond = read_trajectory(out / split / group / index, STEPS)
            assert np.array_equal(got_frames, frames)
            assert np.array_equal(cond[:, :4], actions)  # float32 exact
            assert np.array_equal(cond[:, 4:], positions)
    assert not list(out.rglob("*.partial"))


def test_parent_folder_is_accepted(release, tmp_path):
    src, _ = release
    report = conv.convert(src.parent, tmp_path / "data", validate_count=0, progress=False)
    assert report.written == {"train": 8, "validate": 0, "test": 3}


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def _record_offset(path: Path, index: int) -> int:
    spans, _ = tfr.index_records(path)
    return spans[index].offset


def test_flipped_payload_byte_names_file_and_record(release, tmp_path):
    src, _ = release
    bad = src / "train" / "traj_2_to_5.tfrecords"
    _flip(bad, _record_offset(bad, 2) + 1000)
    with pytest.raises(DataError, match=r"traj_2_to_5\.tfrecords: record 2: corrupt record \(payload CRC"):
        conv.convert(src, tmp_path / "data", validate_count=0, progress=False)
    with pytest.raises(DataError, match=r"traj_2_to_5\.tfrecords: record 2: corrupt"):  # raised in a worker
        conv.convert(src, tmp_path / "data2", validate_count=0, workers=2, progress=False)
    with pytest.raises(DataError, match="record 2: corrupt"):
        list(tfw.iter_records(bad))


def test_flipped_header_byte_names_file_and_record(release, tmp_path):
    src, _ = release
    bad = src / "test" / "traj_0_to_2.tfrecords"
    _flip(bad, _record_offset(bad, 1) - 12)  # the length field of record 1
    with pytest.raises(DataError, match=r"traj_0_to_2\.tfrecords: record 1: corrupt record header"):
        conv.convert(src, tmp_path / "data", validate_count=0, progress=False)


def test_truncated_file_names_file_and_record(release, tmp_path):
    src, _ = release
    bad = src / "train" / "traj_10_to_13.tfrecords"
    raw, offset = bad.read_bytes(), _record_offset(bad, 3)
    bad.write_bytes(raw[: offset + 100])
    with pytest.raises(DataError, match=r"traj_10_to_13\.tfrecords: record 3: truncated"):
        conv.convert(src, tmp_path / "data", validate_count=0, progress=False)
    bad.write_bytes(raw[: offset - 5])  # cut inside the header
    with pytest.raises(DataError, match="record 3: truncated"):
        list(tfw.iter_records(bad))


def test_malformed_example_names_file_record_and_key(tmp_path):
    rng = np.random.default_rng(3)
    frames, actions, positions = _trajectory(rng)
    features = tfr.parse_example(tfw.encode_bair_example(frames, actions, positions))
    del features["3/action"]
    wrong_size = dict(features)
    wrong_size["1/endeffector_pos"] = np.float32([1, 2])
    src = tmp_path / "src"
    (src / "test").mkdir(parents=True)
    tfw.write_records(src / "test" / "t.tfrecords",
                      [tfw.encode_example({k: np.float32(v) if k.endswith(("action", "pos")) else v[0]
                                           for k, v in f.items()}) for f in (features, wrong_size)])
    with pytest.raises(DataError, match=r"t\.tfrecords: record 0: feature '3/action' missing"):
        conv.convert(src, tmp_path / "data", validate_count=0, progress=False)
    report = conv.convert(src, tmp_path / "data", validate_count=0, skip_corrupt=True, progress=False)
    assert report.n_written == 0
    assert len(report.skipped) == 2 and "record 1: feature '1/endeffector_pos': 2 values" in report.skipped[1]


def _parser():
    parser = argparse.ArgumentParser()
    conv.add_parser(parser.add_subparsers(dest="verb"))
    return parser


def test_skip_corrupt_via_command_line(release, tmp_path, capsys):
    src, truth = release
    bad = src / "train" / "traj_2_to_5.tfrecords"
    _flip(bad, _record_offset(bad, 1) + 50)
    cut = src / "test" / "traj_0_to_2.tfrecords"
    cut.write_bytes(cut.read_bytes()[: _record_offset(cut, 2) + 10])
    out = tmp_path / "data"
    args = _parser().parse_args(["convert", "--tfrecords", str(src), "--out", str(out), "--validate_count", "2",
                                 "--skip_corrupt"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "records/s" in printed and "skipped 2 corrupt" in printed
    assert "traj_2_to_5.tfrecords: record 1: corrupt record" in printed
    assert "traj_0_to_2.tfrecords: record 2: truncated" in printed
    assert [p.name for p in (out / "validate" / "traj_2_to_5").iterdir()] == ["0"]  # record 1 skipped
    assert len(list_trajectories(out, "test")) == 2 and len(list_trajectories(out, "train")) == 6


def test_resume_skips_complete_and_redoes_partial(release, tmp_path):
    src, truth = release
    out = tmp_path / "data"
    conv.convert(src, out, validate_count=2, progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}

    again = conv.convert(src, out, validate_count=2, progress=False)
    assert again.n_written == 0 and again.existing == 11
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before

    # an interrupted write: the trajectory's folder never appeared, its partial folder did
    victim = out / "train" / "traj_10_to_13" / "2"
    reference = _tree(victim)
    for p in victim.iterdir():
        p.unlink()
    victim.rmdir()
    partial = victim.parent / ".2.partial"
    partial.mkdir()
    (partial / "0.png").write_bytes(b"half")
    third = conv.convert(src, out, validate_count=2, progress=False)
    assert third.written == {"train": 1, "validate": 0, "test": 0} and third.existing == 10
    assert not partial.exists() and _tree(victim) == reference

    with pytest.raises(ConfigError, match="--validate_count 2"):
        conv.convert(src, out, validate_count=3, progress=False)


def test_workers_give_identical_output(release, tmp_path):
    src, _ = release
    one, two = tmp_path / "one", tmp_path / "two"
    conv.convert(src, one, validate_count=3, workers=1, progress=False)
    report = conv.convert(src, two, validate_count=3, workers=2, progress=False)
    assert report.n_written == 11
    a, b = _tree(one), _tree(two)
    a.pop("convert.json"), b.pop("convert.json")
    assert a == b and len(a) == 11 * (STEPS + 2)


def test_bad_settings(release, tmp_path):
    src, _ = release
    with pytest.raises(ConfigError, match="more than the 8 train records"):
        conv.convert(src, tmp_path / "data", validate_count=9, progress=False)
    with pytest.raises(ConfigError, match="--workers"):
        conv.convert(src, tmp_path / "data", workers=0, progress=False)
    with pytest.raises(DataError, match="no \\*.tfrecords"):
        (tmp_path / "empty").mkdir()
        conv.convert(tmp_path / "empty", tmp_path / "out", progress=False)


def test_numpy_crc_fallback_reads_and_checks(monkeypatch, tmp_path):
    monkeypatch.setattr(tfr, "_FAST", None)
    rng = np.random.default_rng(4)
    payloads = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (10, 370_000)]
    path = tmp_path / "f.tfrecords"
    tfw.write_records(path, payloads)
    assert list(tfw.iter_records(path)) == payloads
    _flip(path, _record_offset(path, 1) + 123_456)
    with pytest.raises(DataError, match="record 1: corrupt record"):
        list(tfw.iter_records(path))
