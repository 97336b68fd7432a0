"""The embedded back end's wire format, sans-IO: messages to bytes and bytes to messages.

Every frame is a 4-byte big-endian length, then a 1-byte type, then the body.  A
replica opens with ``HELLO(store_id, seq)`` (the store it copies and the last sequence
number it applied; an empty id when it has none); the writer answers with its own
``HELLO(store_id, head)``, then maybe one ``SNAPSHOT``, then ``BATCH`` frames in
sequence order for as long as the connection lives.  A client that writes (the
command line's ``anyedge store put``) opens with ``WRITE(changes)`` instead, and gets
``ACK(seq)`` for each write, in order.

Strings are UTF-8 with a 4-byte length; a change is a flag (0 put, 1 delete), the key,
and for a put the value.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from .api import Batch, Change, ProtocolError, Snapshot

HELLO, SNAPSHOT, BATCH, WRITE, ACK = 1, 2, 3, 4, 5
MAX_FRAME = 1 << 30

_HEAD = struct.Struct(">IB")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class Hello:
    store_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class Write:
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


Message = Hello | Snapshot | Batch | Write | Ack


def _str(b: bytes) -> bytes:
    return _U32.pack(len(b)) + b


def encode_changes(changes: Iterable[Change]) -> bytes:
    parts = []
    n = 0
    for c in changes:
        n += 1
        k = c.key.encode()
        if c.value is None:
            parts.append(b"\x01" + _str(k))
        else:
            parts.append(b"\x00" + _str(k) + _str(c.value))
    return _U32.pack(n) + b"".join(parts)


def encode_items(items: Mapping[str, bytes]) -> bytes:
    return encode_changes(Change(k, v) for k, v in items.items())


def _frame(kind: int, body: bytes) -> bytes:
    return _HEAD.pack(len(body) + 1, kind) + body


def encode(msg: Message) -> bytes:
    """The frame for one message."""
    if isinstance(msg, Batch):
        return _frame(BATCH, _U64.pack(msg.seq) + encode_changes(msg.changes))
    if isinstance(msg, Snapshot):
        return _frame(SNAPSHOT, _U64.pack(msg.seq) + encode_items(msg.items))
    if isinstance(msg, Write):
        return _frame(WRITE, encode_changes(msg.changes))
    if isinstance(msg, Ack):
        return _frame(ACK, _U64.pack(msg.seq))
    return _frame(HELLO, _U64.pack(msg.seq) + _str(msg.store_id.encode()))


def encode_batch(seq: int, body: bytes) -> bytes:
    """A batch frame from changes already encoded (the writer's log keeps them so)."""
    return _frame(BATCH, _U64.pack(seq) + body)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ProtocolError("frame ends inside a field")
        out = bytes(self.data[self.at : self.at + n])
        self.at += n
        return out

    def u32(self) -> int:
        (v,) = _U32.unpack(self.take(4))
        return int(v)

    def u64(self) -> int:
        (v,) = _U64.unpack(self.take(8))
        return int(v)

    def blob(self) -> bytes:
        return self.take(self.u32())

    def text(self) -> str:
        try:
            return self.blob().decode()
        except UnicodeDecodeError as e:
            raise ProtocolError("a key is not UTF-8") from e

    def end(self) -> None:
        if self.at != len(self.data):
            raise ProtocolError("bytes left over after the last field")


def _changes(r: _Reader) -> Iterator[Change]:
    for _ in range(r.u32()):
        flag = r.take(1)
        key = r.text()
        if flag == b"\x00":
            yield Change(key, r.blob())
        elif flag == b"\x01":
            yield Change(key, None)
        else:
            raise ProtocolError(f"unknown change flag {flag!r}")


def decode_changes(body: bytes) -> tuple[Change, ...]:
    r = _Reader(body)
    out = tuple(_changes(r))
    r.end()
    return out


def decode(kind: int, body: bytes) -> Message:
    """One message from a frame's type and body."""
    r = _Reader(body)
    msg: Message
    if kind == BATCH:
        seq = r.u64()
        msg = Batch(seq, tuple(_changes(r)))
    elif kind == SNAPSHOT:
        seq = r.u64()
        msg = Snapshot(seq, {c.key: c.value or b"" for c in _changes(r)})
    elif kind == HELLO:
        seq = r.u64()
        msg = Hello(r.text(), seq)
    elif kind == WRITE:
        msg = Write(tuple(_changes(r)))
    elif kind == ACK:
        msg = Ack(r.u64())
    else:
        raise ProtocolError(f"unknown frame type {kind}")
    r.end()
    return msg


class Decoder:
    """Bytes in (any split), messages out."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.pending: list[Message] = []  # decoded, not yet handled (the reader's to use)

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= _HEAD.size:
            length, kind = _HEAD.unpack_from(self._buf)
            if length < 1 or length > MAX_FRAME:
                raise ProtocolError(f"frame length {length} out of range")
            if len(self._buf) < 4 + length:
                break
            body = bytes(self._buf[_HEAD.size : 4 + length])
            del self._buf[: 4 + length]
            out.append(decode(kind, body))
        return out
