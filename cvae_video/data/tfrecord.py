"""TFRecord files and ``tf.train.Example`` records, read without TensorFlow.

A TFRecord file is a sequence of records, each framed as::

    uint64 length            little-endian
    uint32 masked_crc32c(length bytes)
    bytes  payload[length]
    uint32 masked_crc32c(payload)

where ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xA282EAD8`` (mod 2**32) and CRC32C is the Castagnoli CRC of
RFC 3720. The payload of the BAIR release is a serialized ``tf.train.Example``::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }   # map entry: key = 1, value = 2
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

Why a reader of our own for the protobuf part: the ``protobuf`` package can only parse these messages through
generated ``example_pb2`` code, which has to match the installed protobuf runtime (generated files from one protoc
generation refuse to load under another), and it would be a dependency for six tiny messages. The subset above is
about a hundred lines of wire-format code here: varints, length-delimited fields, packed and unpacked floats and
integers, unknown fields skipped, repeated message fields merged as protobuf does. The tests check it against the
``tfrecord`` package from PyPI (which uses ``protobuf``) when that is installed.

CRC32C: the ``crc32c`` package (or ``google-crc32c``) is used when installed, since it runs at memory speed with the
processor's CRC instructions; otherwise a NumPy fallback computes it (see ``_crc32c_numpy``), which is slower but
fast enough to convert BAIR. Both are checked against the RFC 3720 test vectors in the tests.

Record numbers in messages count from 0, as the trajectory folders that ``cvae-data convert`` writes do.
"""

from __future__ import annotations

import functools
import math
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np

from ..errors import DataError

# ----------------------------------------------------------------------------------------------------------------
# CRC32C

_POLY = 0x82F63B78  # Castagnoli polynomial, bit-reversed
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (_POLY if c & 1 else 0)
        table.append(c)
    return table


_TABLE = _make_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)


def _update_python(register: int, data) -> int:
    """The bare CRC register after feeding ``data`` (no initial or final inversion)."""
    table = _TABLE
    for b in bytes(data):
        register = table[(register ^ b) & 0xFF] ^ (register >> 8)
    return register


@functools.lru_cache(maxsize=16)
def _zeros_operator(n_bytes: int) -> np.ndarray:
    """Tables (4, 256) for the linear map 'feed n_bytes zero bytes to the register'.

    The register update is linear over GF(2), so the map is fixed by its value on each byte of the register:
    shift(r) = T[0][r & 0xFF] ^ T[1][(r >> 8) & 0xFF] ^ T[2][(r >> 16) & 0xFF] ^ T[3][r >> 24].
    """
    r = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]).ravel()
    for _ in range(n_bytes):
        r = _TABLE_NP[r & 0xFF] ^ (r >> 8)
    return r.reshape(4, 256)


def _crc32c_numpy(data, value: int = 0) -> int:
    """CRC32C with NumPy: cut the data into m blocks of L bytes, run the m registers side by side (L vectorized
    steps instead of m * L Python steps), then chain the blocks: crc(A + B) = shift_len(B)(crc(A)) ^ crc0(B)."""
    n = len(data)
    if n < 2048:
        return _update_python(value ^ _U32, data) ^ _U32
    block = 1 << max(6, min(13, round(math.log2(math.sqrt(n)))))
    m = n // block
    blocks = np.frombuffer(data, dtype=np.uint8, count=m * block).reshape(m, block).T.copy()  # (L, m)
    regs = np.zeros(m, dtype=np.uint32)
    for column in blocks:
        regs = _TABLE_NP[(regs ^ column) & 0xFF] ^ (regs >> 8)
    shift = _zeros_operator(block).tolist()
    t0, t1, t2, t3 = shift
    register = value ^ _U32
    for c in regs.tolist():
        register = t0[register & 0xFF] ^ t1[(register >> 8) & 0xFF] ^ t2[(register >> 16) & 0xFF] \
            ^ t3[register >> 24] ^ c
    register = _update_python(register, memoryview(data)[m * block:])
    return register ^ _U32


def _crc32c_fast():
    try:
        import crc32c as _mod  # PyPI "crc32c": hardware CRC instructions where available

        return "crc32c", lambda data, value=0: _mod.crc32c(data, value)
    except ImportError:
        pass
    try:
        import google_crc32c as _gmod  # PyPI "google-crc32c"

        return "google-crc32c", lambda data, value=0: _gmod.extend(value, bytes(data))
    except ImportError:
        return None


_FAST = _crc32c_fast()
CRC32C_BACKEND = _FAST[0] if _FAST else "numpy"


def crc32c(data, value: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``; ``value`` continues a previous result: crc32c(b, crc32c(a)) == crc32c(a + b)."""
    if _FAST is not None:
        return _FAST[1](data, value)
    return _crc32c_numpy(data, value)


def masked_crc32c(data) -> int:
    """The CRC as TFRecord stores it: rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


# ----------------------------------------------------------------------------------------------------------------
# TFRecord framing

_HEADER = 12  # uint64 length + uint32 crc
_FOOTER = 4


@dataclass(frozen=True)
class RecordSpan:
    """Where one record's payload sits in its file."""

    index: int
    offset: int
    length: int


def _read_header(f: BinaryIO, path, index: int, pos: int, size: int, check_crc: bool) -> int:
    """Payload length of the record starting at ``pos``; DataError if the header is truncated or corrupt."""
    header = f.read(_HEADER)
    if len(header) < _HEADER:
        raise DataError(f"{path}: record {index}: truncated (the file ends {size - pos} bytes into the "
                        f"{_HEADER}-byte record header)")
    (length,) = struct.unpack("<Q", header[:8])
    if check_crc and masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
        raise DataError(f"{path}: record {index}: corrupt record header (length CRC mismatch)")
    end = pos + _HEADER + length + _FOOTER
    if end > size:
        raise DataError(f"{path}: record {index}: truncated (the record needs {end - pos} bytes, the file has "
                        f"{size - pos} left)")
    return length


def index_records(path: str | os.PathLike, check_crc: bool = True) -> tuple[list[RecordSpan], DataError | None]:
    """Where every record of a TFRecord file is, reading only the 12-byte headers.

    Returns the spans found and, if the file is cut short or a header is corrupt, the DataError that stopped the
    scan (records after a bad header cannot be found: its length is not trusted). Payload CRCs are checked when the
    payload is read (``read_record``).
    """
    spans: list[RecordSpan] = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                length = _read_header(f, path, len(spans), pos, size, check_crc)
            except DataError as e:
                return spans, e
            spans.append(RecordSpan(len(spans), pos + _HEADER, length))
            pos += _HEADER + length + _FOOTER
            f.seek(pos)
    return spans, None


def read_record(f: BinaryIO, span: RecordSpan, path, check_crc: bool = True) -> bytes:
    """The payload of one record of an open file; DataError naming file and record if its CRC does not match."""
    f.seek(span.offset)
    data = f.read(span.length + _FOOTER)
    if len(data) < span.length + _FOOTER:
        raise DataError(f"{path}: record {span.index}: truncated (file shorter than when it was indexed)")
    payload, footer = data[:span.length], data[span.length:]
    if check_crc and masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
        raise DataError(f"{path}: record {span.index}: corrupt record (payload CRC mismatch)")
    return payload


# ----------------------------------------------------------------------------------------------------------------
# Protobuf wire format, the tf.train.Example subset

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise DataError("malformed tf.train.Example: varint runs past the end of its message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise DataError("malformed tf.train.Example: varint longer than 10 bytes")


def _fields(buf: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or start, stop) for each field of the message in buf[pos:end].

    For length-delimited fields the payload is buf[start:stop]; for varints the value is returned and stop is
    unused; fixed-size fields give their byte range.
    """
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos, end)
            yield field, wire, value, pos
            continue
        if wire == _LEN:
            length, pos = _read_varint(buf, pos, end)
        elif wire == _I64:
            length = 8
        elif wire == _I32:
            length = 4
        else:
            raise DataError(f"malformed tf.train.Example: unsupported wire type {wire} (field {field})")
        if pos + length > end:
            raise DataError(f"malformed tf.train.Example: field {field} runs past the end of its message")
        yield field, wire, pos, pos + length
        pos += length


def _signed64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse_feature(buf: memoryview, pos: int, end: int, kind: int, values: list) -> tuple[int, list]:
    """Merge one serialized Feature into (kind, values): oneof semantics, a new kind replaces the old list."""
    for field, wire, a, b in _fields(buf, pos, end):
        if field not in (1, 2, 3) or wire != _LEN:
            continue
        if field != kind:
            kind, values = field, []
        for f2, w2, c, d in _fields(buf, a, b):
            if f2 != 1:
                continue
            if field == 1 and w2 == _LEN:
                values.append(bytes(buf[c:d]))
            elif field == 2 and w2 == _LEN:
                if (d - c) % 4:
                    raise DataError("malformed tf.train.Example: packed float list length is not a multiple of 4")
                values.extend(np.frombuffer(buf[c:d], dtype="<f4").tolist())
            elif field == 2 and w2 == _I32:
                values.append(struct.unpack("<f", buf[c:d])[0])
            elif field == 3 and w2 == _LEN:
                p = c
                while p < d:
                    v, p = _read_varint(buf, p, d)
                    values.append(_signed64(v))
            elif field == 3 and w2 == _VARINT:
                values.append(_signed64(c))
            else:
                raise DataError(f"malformed tf.train.Example: wire type {w2} in a "
                                f"{('', 'bytes', 'float', 'int64')[field]} list")
    return kind, values


def parse_example(data: bytes) -> dict[str, list]:
    """A serialized ``tf.train.Example`` as {feature name: values}.

    Values are ``list[bytes]`` for a bytes_list, ``list[float]`` for a float_list (each a float32 value held in a
    Python float, so exact) and ``list[int]`` for an int64_list; a feature with no kind set is an empty list.
    Unknown fields are skipped. DataError if the bytes are not a well-formed message.
    """
    buf = memoryview(data).cast("B")
    end = len(buf)
    found: dict[str, tuple[int, list]] = {}
    for field, wire, a, b in _fields(buf, 0, end):
        if field != 1 or wire != _LEN:
            continue
        for f2, w2, c, d in _fields(buf, a, b):  # Features
            if f2 != 1 or w2 != _LEN:
                continue
            key, value_ranges = "", []
            for f3, w3, e, g in _fields(buf, c, d):  # map entry
                if f3 == 1 and w3 == _LEN:
                    try:
                        key = bytes(buf[e:g]).decode("utf-8")
                    except UnicodeDecodeError:
                        raise DataError("malformed tf.train.Example: feature name is not UTF-8") from None
                elif f3 == 2 and w3 == _LEN:
                    value_ranges.append((e, g))
            kind, values = 0, []  # a repeated map key replaces the earlier entry, as protobuf maps do
            for e, g in value_ranges:
                kind, values = _parse_feature(buf, e, g, kind, values)
            found[key] = (kind, values)
    return {key: values for key, (_, values) in found.items()}
