"""TFRecord files without TensorFlow: records read one at a time with both CRC-32C checks, and the
``tf.train.Example`` protobuf (used by :mod:`vidplan_core.data.rlds` for TFDS / RLDS datasets).

Framing (TensorFlow's ``python_io`` guide, tensorflow/docs ``site/en/api_guides/python/python_io.md``): a file is a
sequence of records ``uint64 length`` (little endian), ``uint32 masked_crc32c(length bytes)``, ``byte data[length]``,
``uint32 masked_crc32c(data)``; CRC-32C (Castagnoli), ``masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8``
(mod 2^32).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidplan_core.data.schema import DatasetError

__all__ = ["TFRecordError", "example_pb2", "iter_records", "masked_crc32c", "read_record", "scan_records"]

_MASK_DELTA = 0xA282EAD8
_HEADER = 12  # uint64 length + uint32 masked CRC of the length


class TFRecordError(DatasetError):
    """A TFRecord record that cannot be read: CRC mismatch (corrupt) or a file that ends inside it (truncated).

    Attributes:
        path: the shard file; offset: the byte offset of the record's header in it.
    """

    def __init__(self, path: str | Path, offset: int, problem: str):
        self.path, self.offset = Path(path), int(offset)
        super().__init__(path, [f"record at byte offset {offset}: {problem}"])


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The masked CRC-32C TFRecord stores for ``data`` (uint32)."""
    import crc32c

    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _read_header(f: Any, path: Path, offset: int, size: int) -> int | None:
    """The data length of the record at ``offset`` (its length CRC checked), or None at the end of the file."""
    head = f.read(_HEADER)
    if not head:
        return None
    if len(head) < _HEADER:
        raise TFRecordError(path, offset, f"truncated: the file ends {len(head)} bytes into the 12-byte header")
    length, crc = struct.unpack("<QI", head)
    if masked_crc32c(head[:8]) != crc:
        raise TFRecordError(path, offset, "corrupt: the CRC of the length field does not match")
    if offset + _HEADER + length + 4 > size:
        raise TFRecordError(path, offset, f"truncated: the record needs {length} data bytes + 4 CRC bytes, the file "
                                          f"ends after {size - offset - _HEADER}")
    return int(length)


def iter_records(path: str | Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """The records of a TFRecord file from byte ``start``, one at a time: ``(offset, data)`` with both CRCs checked.

    Raises:
        TFRecordError: at the first corrupt (CRC mismatch) or truncated record, naming the file and its offset —
            after yielding every record before it.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(start)
        offset = start
        while (length := _read_header(f, path, offset, size)) is not None:
            data = f.read(length)
            (crc,) = struct.unpack("<I", f.read(4))
            if masked_crc32c(data) != crc:
                raise TFRecordError(path, offset, f"corrupt: the CRC of the {length} data bytes does not match")
            yield offset, data
            offset += _HEADER + length + 4


def read_record(path: str | Path, offset: int) -> bytes:
    """The data of the record whose header is at byte ``offset`` (both CRCs checked; raises :class:`TFRecordError`)."""
    for _, data in iter_records(path, offset):
        return data
    raise TFRecordError(path, offset, "no record here (end of file)")


def scan_records(path: str | Path) -> tuple[list[int], TFRecordError | None]:
    """Byte offsets of a file's records from their headers only (length CRCs checked; data neither read nor checked).

    Returns:
        (offsets of the complete records, the error at the first bad header or truncated record, or None): the
        records before a bad one stay readable.
    """
    path = Path(path)
    size = path.stat().st_size
    offsets: list[int] = []
    with path.open("rb") as f:
        offset = 0
        try:
            while (length := _read_header(f, path, offset, size)) is not None:
                offsets.append(offset)
                offset += _HEADER + length + 4
                f.seek(offset)
        except TFRecordError as exc:
            return offsets, exc
    return offsets, None


def example_pb2() -> Any:
    """The ``tf.train.Example`` protobuf module (the ``tfrecord`` package's; no TensorFlow)."""
    # lazily: the tfrecord package imports torch when it is installed (its optional torch dataset module)
    from tfrecord import example_pb2

    return example_pb2
