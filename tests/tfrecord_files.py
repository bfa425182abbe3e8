"""Whole TFRecord files, written and read, which the package itself never needs (``cvae-data convert`` indexes
records and reads them one by one): the tests make BAIR-like files with these to convert, and check the package's
record and Example readers against them."""

import os
import struct
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from cvae_video.data.convert import ACTION_KEY, IMAGE_KEY, POSITION_KEY
from cvae_video.data.tfrecord import _FOOTER, _HEADER, _I32, _LEN, _VARINT, RecordSpan, _read_header, masked_crc32c, \
    parse_example, read_record
from cvae_video.errors import DataError


def iter_records(path: str | Path, check_crc: bool = True) -> Iterator[bytes]:
    """Payloads of a TFRecord file in order; DataError naming file and record at the first bad or cut record."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos, index = 0, 0
        while pos < size:
            length = _read_header(f, path, index, pos, size, check_crc)
            yield read_record(f, RecordSpan(index, pos + _HEADER, length), path, check_crc)
            pos += _HEADER + length + _FOOTER
            index += 1
            f.seek(pos)


def frame_record(payload: bytes) -> bytes:
    """One record as it sits in a TFRecord file."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc32c(length)) + bytes(payload) + \
        struct.pack("<I", masked_crc32c(payload))


def write_records(path: str | Path, payloads: Iterable[bytes]) -> int:
    """Write a TFRecord file (uncompressed); returns the number of records."""
    n = 0
    with open(path, "wb") as f:
        for payload in payloads:
            f.write(frame_record(payload))
            n += 1
    return n


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def len_field(field: int, payload: bytes) -> bytes:
    return varint((field << 3) | _LEN) + varint(len(payload)) + payload


def classify(key: str, value) -> tuple[str, list]:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes", [bytes(value)]
    if isinstance(value, str):
        return "bytes", [value.encode("utf-8")]
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return "float", value.ravel().tolist()
        if value.dtype.kind in "iub":
            return "int", [int(v) for v in value.ravel()]
        if value.dtype.kind == "S":
            return "bytes", [bytes(v) for v in value.ravel()]
        raise ValueError(f"feature {key!r}: cannot encode an array of dtype {value.dtype}")
    items = list(value)
    if not items:
        raise ValueError(f"feature {key!r}: empty list, its kind cannot be inferred (pass an empty NumPy array "
                         f"of the intended dtype)")
    if all(isinstance(v, (bytes, bytearray, memoryview)) for v in items):
        return "bytes", [bytes(v) for v in items]
    if all(isinstance(v, (int, np.integer)) for v in items):
        return "int", [int(v) for v in items]
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in items):
        return "float", [float(v) for v in items]
    raise ValueError(f"feature {key!r}: values must be all bytes, all integers or all numbers")


def encode_example(features: dict, packed: bool = True) -> bytes:
    """Serialize {name: values} as a ``tf.train.Example``.

    The kind follows the values: bytes (or a list of bytes) -> bytes_list; a float array or a list holding any
    float -> float_list (stored as float32); an integer array or a list of ints -> int64_list. Give NumPy arrays
    to make the kind explicit (``[0, 1]`` is an int64_list, ``np.float32([0, 1])`` a float_list).
    ``packed=False`` writes repeated numbers one field each, as old writers did; readers accept both.
    """
    entries = []
    for key, value in features.items():
        kind, items = classify(key, value)
        if kind == "bytes":
            feature = len_field(1, b"".join(len_field(1, v) for v in items))
        elif kind == "float":
            if packed:
                inner = len_field(1, np.asarray(items, dtype="<f4").tobytes()) if items else b""
            else:
                tag = varint((1 << 3) | _I32)
                inner = b"".join(tag + struct.pack("<f", v) for v in items)
            feature = len_field(2, inner)
        else:
            if packed:
                inner = len_field(1, b"".join(varint(v) for v in items)) if items else b""
            else:
                tag = varint((1 << 3) | _VARINT)
                inner = b"".join(tag + varint(v) for v in items)
            feature = len_field(3, inner)
        entries.append(len_field(1, len_field(1, key.encode("utf-8")) + len_field(2, feature)))
    return len_field(1, b"".join(entries))


def read_examples(path: str | Path, check_crc: bool = True) -> Iterator[dict[str, list]]:
    """Parsed examples of a TFRecord file, in order; DataError names file and record on any problem."""
    for index, payload in enumerate(iter_records(path, check_crc)):
        try:
            yield parse_example(payload)
        except DataError as e:
            raise DataError(f"{Path(path)}: record {index}: {e}") from None


def encode_bair_example(frames: np.ndarray, actions: np.ndarray, positions: np.ndarray) -> bytes:
    """A serialized tf.train.Example with the BAIR features: frames (T, 64, 64, 3) uint8, actions (T, 4),
    positions (T, 3). The inverse of ``convert.decode_bair_example``."""
    frames = np.asarray(frames, dtype=np.uint8)
    features = {}
    for i in range(len(frames)):
        features[IMAGE_KEY.format(i)] = frames[i].tobytes()
        features[ACTION_KEY.format(i)] = np.asarray(actions[i], dtype=np.float32)
        features[POSITION_KEY.format(i)] = np.asarray(positions[i], dtype=np.float32)
    return encode_example(features)
