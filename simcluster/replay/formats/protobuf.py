"""A minimal protobuf wire-format reader and writer, enough for Chakra execution traces.

Why not the ``protobuf`` package: Chakra files are a handful of small messages, and the wire format is four
encodings (Protocol Buffers encoding guide, developers.google.com/protocol-buffers/docs/encoding):
varint (wire type 0), 64-bit little-endian (1), length-delimited (2) and 32-bit little-endian (5). Reading
them in ~150 lines keeps simcluster free of a compiled dependency and of generated ``*_pb2`` modules.

A message is read into a list of ``(field_number, wire_type, value)`` where ``value`` is an ``int`` for
varint, fixed32 and fixed64 fields and ``bytes`` for length-delimited ones; the schema-aware code
(``chakra.py``) interprets them. Malformed input raises ``ProtobufError`` (a ValueError), which callers
turn into a ``ScenarioError`` naming the file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5

_MAX_VARINT_BYTES = 10  # a 64-bit value takes at most ceil(64 / 7) = 10 bytes
_UINT64_MASK = (1 << 64) - 1


class ProtobufError(ValueError):
    """Bytes that are not a well-formed protobuf message (truncated, bad wire type, overlong varint)."""


# --- reading -----------------------------------------------------------------------------------------------

def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` and the position after it."""
    result = 0
    shift = 0
    for count in range(_MAX_VARINT_BYTES):
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _UINT64_MASK, pos
        shift += 7
        if count == _MAX_VARINT_BYTES - 1:
            break
    raise ProtobufError("varint longer than 10 bytes")


def parse_message(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """All fields of one message, in file order (repeated fields appear once per occurrence)."""
    fields: list[tuple[int, int, int | bytes]] = []
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
        elif wire_type == FIXED64:
            if pos + 8 > end:
                raise ProtobufError("truncated fixed64 field")
            value = int.from_bytes(data[pos:pos + 8], "little")
            pos += 8
        elif wire_type == FIXED32:
            if pos + 4 > end:
                raise ProtobufError("truncated fixed32 field")
            value = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        elif wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(data, pos)
            if pos + length > end:
                raise ProtobufError(f"field {number} claims {length} bytes, only {end - pos} left")
            value = bytes(data[pos:pos + length])
            pos += length
        else:
            raise ProtobufError(f"unsupported wire type {wire_type} (field {number})")
        fields.append((number, wire_type, value))
    return fields


def read_delimited(data: bytes) -> Iterator[bytes]:
    """The messages of a varint-length-prefixed stream (the layout of Chakra ``.et`` files)."""
    pos = 0
    while pos < len(data):
        length, pos = read_varint(data, pos)
        if pos + length > len(data):
            raise ProtobufError(f"message claims {length} bytes, {len(data) - pos} left (truncated file?)")
        yield data[pos:pos + length]
        pos += length


# Scalar interpretations of a raw field value.
def as_int64(value: int) -> int:
    """Two's-complement reading of a varint (int32/int64 store negatives as 64-bit two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def as_sint(value: int) -> int:
    """ZigZag decoding of sint32/sint64: 0, -1, 1, -2 ... are stored as 0, 1, 2, 3 ..."""
    return (value >> 1) ^ -(value & 1)


def as_double(value: int) -> float:
    return struct.unpack("<d", _fixed_bytes(value, 8))[0]


def as_float(value: int) -> float:
    return struct.unpack("<f", _fixed_bytes(value, 4))[0]


def _fixed_bytes(value: int, width: int) -> bytes:
    """The little-endian bytes of a fixed-width field; a value that does not fit (a varint where a fixed32/fixed64
    belongs: a corrupt file) is refused."""
    if not 0 <= value < 1 << (8 * width):
        raise ProtobufError(f"a {8 * width}-bit fixed field holds {value}")
    return value.to_bytes(width, "little")


def as_sfixed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def unpack_repeated(raw: int | bytes, wire_type: int, element_wire_type: int) -> list[int]:
    """Elements of one occurrence of a repeated scalar field: packed (one length-delimited blob) or not."""
    if wire_type != LENGTH_DELIMITED or element_wire_type == LENGTH_DELIMITED:
        return [raw]  # type: ignore[list-item]
    assert isinstance(raw, bytes)
    values: list[int] = []
    pos = 0
    if element_wire_type == VARINT:
        while pos < len(raw):
            value, pos = read_varint(raw, pos)
            values.append(value)
        return values
    width = 8 if element_wire_type == FIXED64 else 4
    if len(raw) % width:
        raise ProtobufError("packed fixed-width field of wrong length")
    return [int.from_bytes(raw[i:i + width], "little") for i in range(0, len(raw), width)]


# --- writing -----------------------------------------------------------------------------------------------

def encode_varint(value: int) -> bytes:
    """Unsigned varint; negative ints are written as 64-bit two's complement (ten bytes), as protobuf does."""
    value &= _UINT64_MASK
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _key(number: int, wire_type: int) -> bytes:
    return encode_varint(number << 3 | wire_type)


class MessageWriter:
    """Builds one message field by field; ``bytes()`` gives the encoding."""

    def __init__(self) -> None:
        self._out = bytearray()

    def varint(self, number: int, value: int) -> MessageWriter:
        self._out += _key(number, VARINT) + encode_varint(value)
        return self

    def fixed64(self, number: int, value: int) -> MessageWriter:
        self._out += _key(number, FIXED64) + (value & _UINT64_MASK).to_bytes(8, "little")
        return self

    def fixed32(self, number: int, value: int) -> MessageWriter:
        self._out += _key(number, FIXED32) + (value & 0xFFFFFFFF).to_bytes(4, "little")
        return self

    def double(self, number: int, value: float) -> MessageWriter:
        self._out += _key(number, FIXED64) + struct.pack("<d", value)
        return self

    def bytes_field(self, number: int, value: bytes) -> MessageWriter:
        self._out += _key(number, LENGTH_DELIMITED) + encode_varint(len(value)) + value
        return self

    def string(self, number: int, value: str) -> MessageWriter:
        return self.bytes_field(number, value.encode())

    def message(self, number: int, value: MessageWriter) -> MessageWriter:
        return self.bytes_field(number, bytes(value))

    def packed_varints(self, number: int, values: list[int]) -> MessageWriter:
        """A repeated varint field, packed (the proto3 default for repeated scalars)."""
        if values:
            self.bytes_field(number, b"".join(encode_varint(v) for v in values))
        return self

    def __bytes__(self) -> bytes:
        return bytes(self._out)


def write_delimited(messages: list[bytes]) -> bytes:
    """A varint-length-prefixed stream of messages."""
    return b"".join(encode_varint(len(m)) + m for m in messages)
