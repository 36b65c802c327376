"""Make an MCAP file whose writer died readable again, in place.

An MCAP file is a sequence of records (opcode, length, content) that ends with a summary and a
footer; readers need the footer. A writer that was killed, or that stopped on a full disk, leaves
the data records without summary and footer, the last record possibly cut short. This module
scans the data section record by record (chunks are decompressed and parsed, so a damaged chunk
is detected), truncates the file after the last complete record and appends what a clean close
would have written: data end, summary (schemas, channels, chunk indexes, statistics, summary
offsets) and footer.

Working in place needs almost no free space: truncating the cut-off record frees more than the
summary takes, which is what makes recovery possible on the full disk that caused the failure.
Record layouts follow the MCAP specification (https://mcap.dev/spec).
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from lz4.frame import decompress as lz4_decompress

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

MAGIC = b"\x89MCAP0\r\n"

OP_HEADER = 0x01
OP_FOOTER = 0x02
OP_SCHEMA = 0x03
OP_CHANNEL = 0x04
OP_MESSAGE = 0x05
OP_CHUNK = 0x06
OP_MESSAGE_INDEX = 0x07
OP_CHUNK_INDEX = 0x08
OP_STATISTICS = 0x0B
OP_METADATA = 0x0C
OP_METADATA_INDEX = 0x0D
OP_SUMMARY_OFFSET = 0x0E
OP_DATA_END = 0x0F

# Records that belong to the data section and are kept; anything else (metadata, data end,
# summary records) marks the end of the data section, and is written anew.
_DATA_RECORDS = {OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_MESSAGE_INDEX}

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_RECORD_HEAD = struct.Struct("<BQ")
_MESSAGE_HEAD = struct.Struct("<HIQQ")
_CHUNK_HEAD = struct.Struct("<QQQI")


class McapRepairError(Exception):
    """The file is not an MCAP file, or cannot be repaired."""


@dataclass
class Schema:
    id: int
    name: str
    encoding: str
    data: bytes


@dataclass
class Channel:
    id: int
    schema_id: int
    topic: str
    message_encoding: str
    metadata: dict[str, str]


@dataclass
class ChunkInfo:
    start_offset: int
    length: int
    message_start_time: int
    message_end_time: int
    compression: str
    compressed_size: int
    uncompressed_size: int
    message_index_offsets: dict[int, int] = field(default_factory=dict)
    message_index_length: int = 0
    channels: set[int] = field(default_factory=set)  # channels with messages in the chunk


@dataclass
class McapContent:
    """What the complete records of a file's data section hold."""

    schemas: dict[int, Schema] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    chunks: list[ChunkInfo] = field(default_factory=list)
    message_counts: dict[int, int] = field(default_factory=dict)
    start_time: int = 0
    end_time: int = 0
    data_end: int = 0  # file offset just after the last complete data record
    file_size: int = 0
    complete: bool = False  # the file already had its data end record

    @property
    def message_count(self) -> int:
        return sum(self.message_counts.values())


class _TruncatedError(Exception):
    """A record runs past the end of the file or does not parse."""


def scan(path: Path) -> McapContent:
    """Read the data section of ``path`` up to its last complete record."""
    with open(path, "rb") as stream:
        return _scan(stream, os.fstat(stream.fileno()).st_size)


def repair(path: Path, metadata: dict[str, str] | None = None) -> McapContent:
    """Truncate ``path`` after its last complete record and append summary and footer.

    ``metadata`` becomes the "rosbag2" metadata record, as rosbag2 and rosbags write it.
    Returns what the repaired file holds.
    """
    with open(path, "r+b") as stream:
        content = _scan(stream, os.fstat(stream.fileno()).st_size)
        stream.truncate(content.data_end)
        stream.seek(content.data_end)
        _append_summary(stream, content, metadata or {})
        stream.flush()
        os.fsync(stream.fileno())
    return content


def _scan(stream: BinaryIO, size: int) -> McapContent:
    content = McapContent(file_size=size)
    if stream.read(len(MAGIC)) != MAGIC:
        raise McapRepairError("not an MCAP file (no MCAP magic at its start)")
    offset = len(MAGIC)
    content.data_end = offset
    last_chunk: ChunkInfo | None = None
    first = True
    while True:
        try:
            opcode, length = _RECORD_HEAD.unpack(_read(stream, _RECORD_HEAD.size))
            if offset + _RECORD_HEAD.size + length > size:
                raise _TruncatedError
            if first:
                if opcode != OP_HEADER:
                    raise McapRepairError("not an MCAP file (no header record after the magic)")
                stream.seek(length, os.SEEK_CUR)
                first = False
            elif opcode not in _DATA_RECORDS:
                content.complete = opcode == OP_DATA_END
                break
            else:
                body = _read(stream, length)
                record_offset = offset
                if opcode == OP_CHUNK:
                    last_chunk = _scan_chunk(body, record_offset, length, content)
                elif opcode == OP_MESSAGE_INDEX:
                    if last_chunk is not None:
                        (channel_id,) = _U16.unpack_from(body)
                        last_chunk.message_index_offsets[channel_id] = record_offset
                        last_chunk.message_index_length += _RECORD_HEAD.size + length
                else:
                    last_chunk = None
                    _apply_record(opcode, body, content)
        except (_TruncatedError, struct.error, UnicodeDecodeError):
            break
        offset += _RECORD_HEAD.size + length
        content.data_end = offset
    if first:
        raise McapRepairError("not an MCAP file (its header record is incomplete)")
    for chunk in content.chunks:
        # Message indexes are optional; a partial set (cut off by the end of the file) is not.
        if set(chunk.message_index_offsets) != chunk.channels:
            chunk.message_index_offsets.clear()
            chunk.message_index_length = 0
    return content


def _scan_chunk(body: bytes, offset: int, length: int, content: McapContent) -> ChunkInfo:
    start_time, end_time, uncompressed_size, _crc = _CHUNK_HEAD.unpack_from(body)
    position = _CHUNK_HEAD.size
    compression, position = _string(body, position)
    (compressed_size,) = _U64.unpack_from(body, position)
    position += _U64.size
    compressed = body[position : position + compressed_size]
    if len(compressed) != compressed_size:
        raise _TruncatedError
    try:
        records = _decompress(compressed, compression)
    except Exception as error:  # a damaged chunk ends the readable part, whatever the codec says
        raise _TruncatedError from error
    if len(records) != uncompressed_size:
        raise _TruncatedError
    # Parse into a scratch copy first: a chunk counts only if every record in it is complete.
    scratch = McapContent(
        schemas=dict(content.schemas),
        channels=dict(content.channels),
        message_counts=dict(content.message_counts),
        start_time=content.start_time,
        end_time=content.end_time,
    )
    channels = set()
    for opcode, record in _records(records):
        _apply_record(opcode, record, scratch)
        if opcode == OP_MESSAGE:
            channels.add(_U16.unpack_from(record)[0])
    content.schemas, content.channels = scratch.schemas, scratch.channels
    content.message_counts = scratch.message_counts
    content.start_time, content.end_time = scratch.start_time, scratch.end_time
    chunk = ChunkInfo(
        start_offset=offset,
        length=_RECORD_HEAD.size + length,
        message_start_time=start_time,
        message_end_time=end_time,
        compression=compression,
        compressed_size=compressed_size,
        uncompressed_size=uncompressed_size,
        channels=channels,
    )
    content.chunks.append(chunk)
    return chunk


def _records(data: bytes) -> Iterator[tuple[int, bytes]]:
    position = 0
    while position < len(data):
        if position + _RECORD_HEAD.size > len(data):
            raise _TruncatedError
        opcode, length = _RECORD_HEAD.unpack_from(data, position)
        position += _RECORD_HEAD.size
        if position + length > len(data):
            raise _TruncatedError
        yield opcode, data[position : position + length]
        position += length


def _apply_record(opcode: int, body: bytes, content: McapContent) -> None:
    if opcode == OP_SCHEMA:
        (schema_id,) = _U16.unpack_from(body)
        name, position = _string(body, _U16.size)
        encoding, position = _string(body, position)
        data, _ = _bytes(body, position)
        content.schemas[schema_id] = Schema(schema_id, name, encoding, data)
    elif opcode == OP_CHANNEL:
        channel_id, schema_id = struct.unpack_from("<HH", body)
        topic, position = _string(body, 4)
        encoding, position = _string(body, position)
        metadata, _ = _string_map(body, position)
        content.channels[channel_id] = Channel(channel_id, schema_id, topic, encoding, metadata)
    elif opcode == OP_MESSAGE:
        channel_id, _sequence, log_time, _publish_time = _MESSAGE_HEAD.unpack_from(body)
        if not content.message_count:
            content.start_time = content.end_time = log_time
        content.start_time = min(content.start_time, log_time)
        content.end_time = max(content.end_time, log_time)
        content.message_counts[channel_id] = content.message_counts.get(channel_id, 0) + 1


def _decompress(data: bytes, compression: str) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        return zstd.decompress(data)
    if compression == "lz4":
        return lz4_decompress(data)
    raise McapRepairError(f"unsupported chunk compression {compression!r}")


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise _TruncatedError
    return data


def _string(data: bytes, position: int) -> tuple[str, int]:
    raw, position = _bytes(data, position)
    return raw.decode("utf-8"), position


def _bytes(data: bytes, position: int) -> tuple[bytes, int]:
    (length,) = _U32.unpack_from(data, position)
    position += _U32.size
    if position + length > len(data):
        raise _TruncatedError
    return data[position : position + length], position + length


def _string_map(data: bytes, position: int) -> tuple[dict[str, str], int]:
    (length,) = _U32.unpack_from(data, position)
    position += _U32.size
    end = position + length
    if end > len(data):
        raise _TruncatedError
    result = {}
    while position < end:
        key, position = _string(data, position)
        value, position = _string(data, position)
        result[key] = value
    return result, end


# Writing ---------------------------------------------------------------------------------------


def _put_string(out: BytesIO, text: str) -> None:
    _put_bytes(out, text.encode("utf-8"))


def _put_bytes(out: BytesIO, data: bytes) -> None:
    out.write(_U32.pack(len(data)))
    out.write(data)


def _put_string_map(out: BytesIO, mapping: dict[str, str]) -> None:
    body = BytesIO()
    for key, value in mapping.items():
        _put_string(body, key)
        _put_string(body, value)
    _put_bytes(out, body.getvalue())


def _record(opcode: int, body: bytes) -> bytes:
    return _RECORD_HEAD.pack(opcode, len(body)) + body


def _schema_record(schema: Schema) -> bytes:
    body = BytesIO()
    body.write(_U16.pack(schema.id))
    _put_string(body, schema.name)
    _put_string(body, schema.encoding)
    _put_bytes(body, schema.data)
    return _record(OP_SCHEMA, body.getvalue())


def _channel_record(channel: Channel) -> bytes:
    body = BytesIO()
    body.write(struct.pack("<HH", channel.id, channel.schema_id))
    _put_string(body, channel.topic)
    _put_string(body, channel.message_encoding)
    _put_string_map(body, channel.metadata)
    return _record(OP_CHANNEL, body.getvalue())


def _chunk_index_record(chunk: ChunkInfo) -> bytes:
    body = BytesIO()
    body.write(
        struct.pack(
            "<QQQQ",
            chunk.message_start_time,
            chunk.message_end_time,
            chunk.start_offset,
            chunk.length,
        )
    )
    offsets = b"".join(
        struct.pack("<HQ", channel_id, offset)
        for channel_id, offset in sorted(chunk.message_index_offsets.items())
    )
    _put_bytes(body, offsets)
    body.write(_U64.pack(chunk.message_index_length))
    _put_string(body, chunk.compression)
    body.write(_U64.pack(chunk.compressed_size))
    body.write(_U64.pack(chunk.uncompressed_size))
    return _record(OP_CHUNK_INDEX, body.getvalue())


def _append_summary(stream: BinaryIO, content: McapContent, metadata: dict[str, str]) -> None:
    position = content.data_end

    def emit(data: bytes) -> None:
        nonlocal position
        stream.write(data)
        position += len(data)

    metadata_start = position
    body = BytesIO()
    _put_string(body, "rosbag2")
    _put_string_map(body, metadata)
    emit(_record(OP_METADATA, body.getvalue()))
    metadata_length = position - metadata_start
    emit(_record(OP_DATA_END, _U32.pack(0)))

    summary_start = position
    groups: list[tuple[int, int, int]] = []

    def group(opcode: int, records: list[bytes]) -> None:
        if records:
            start = position
            for record in records:
                emit(record)
            groups.append((opcode, start, position - start))

    group(OP_SCHEMA, [_schema_record(s) for s in content.schemas.values()])
    group(OP_CHANNEL, [_channel_record(c) for c in content.channels.values()])
    group(OP_CHUNK_INDEX, [_chunk_index_record(c) for c in content.chunks])
    metadata_index = BytesIO()
    metadata_index.write(_U64.pack(metadata_start))
    metadata_index.write(_U64.pack(metadata_length))
    _put_string(metadata_index, "rosbag2")
    group(OP_METADATA_INDEX, [_record(OP_METADATA_INDEX, metadata_index.getvalue())])
    statistics = BytesIO()
    statistics.write(_U64.pack(content.message_count))
    statistics.write(_U16.pack(len(content.schemas)))
    statistics.write(struct.pack("<IIII", len(content.channels), 0, 1, len(content.chunks)))
    statistics.write(_U64.pack(content.start_time))
    statistics.write(_U64.pack(content.end_time))
    counts = b"".join(
        struct.pack("<HQ", channel_id, count)
        for channel_id, count in sorted(content.message_counts.items())
    )
    _put_bytes(statistics, counts)
    group(OP_STATISTICS, [_record(OP_STATISTICS, statistics.getvalue())])

    summary_offset_start = position
    for opcode, start, length in groups:
        emit(_record(OP_SUMMARY_OFFSET, struct.pack("<BQQ", opcode, start, length)))
    emit(_record(OP_FOOTER, struct.pack("<QQI", summary_start, summary_offset_start, 0)))
    emit(MAGIC)
