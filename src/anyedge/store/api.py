"""The store's vocabulary and its two roles: one :class:`Writer`, many :class:`Replica`.

A change is a key and the bytes it now holds (``None``: the key was deleted).  The
writer turns each ``put``, ``delete`` or ``txn`` into one :class:`Batch` with the next
sequence number and returns that number; every replica applies the batches in sequence
order, a whole batch at once, so a reader never sees half a transaction.  A replica that
fell too far behind gets a :class:`Snapshot` (the whole store at one sequence number)
and then the batches after it.

Reads go to the local replica only.  To read your own write, wait for its sequence
number: ``replica.wait(writer.put(k, v), timeout=5)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class StoreError(Exception):
    """The store cannot do what was asked (the back end is unreachable, a write failed)."""


class ProtocolError(StoreError):
    """The peer broke the replication protocol (bad frame, a gap in sequence numbers)."""


@dataclass(frozen=True, slots=True)
class Change:
    """``key`` now holds ``value``; ``value`` is ``None`` when the key was deleted."""

    key: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Batch:
    """The changes of one write (a put, a delete or a transaction), applied as one."""

    seq: int
    changes: tuple[Change, ...]

    def __iter__(self) -> Iterator[Any]:
        """``seq, changes = batch``."""
        return iter((self.seq, self.changes))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole store as it was at ``seq``."""

    seq: int
    items: Mapping[str, bytes]


class Watch(Protocol):
    """Batches a replica applied, restricted to a key prefix, in sequence order."""

    def __iter__(self) -> Iterator[Batch]: ...
    def get(self, timeout: float | None = None) -> Batch | None: ...
    def close(self) -> None: ...


class Writer(Protocol):
    """The one writer.  Each call returns the sequence number its change got."""

    def put(self, key: str, value: bytes) -> int: ...
    def delete(self, key: str) -> int: ...
    def txn(self, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = ()) -> int: ...
    def close(self) -> None: ...


class Replica(Protocol):
    """A full local copy.  Reads never leave the machine."""

    @property
    def seq(self) -> int: ...
    def get(self, key: str) -> bytes | None: ...
    def items(self, prefix: str = "") -> dict[str, bytes]: ...
    def watch(self, prefix: str = "", callback: Callable[[Batch], None] | None = None) -> Watch: ...
    def wait(self, seq: int, timeout: float | None = None) -> bool: ...
    def close(self) -> None: ...


def changes_of(puts: Mapping[str, bytes] | None, deletes: Iterable[str]) -> tuple[Change, ...]:
    """One transaction's changes; a key may be put or deleted, not both, and only once."""
    puts = puts or {}
    out = [Change(k, bytes(v)) for k, v in puts.items()]
    seen = set(puts)
    for k in deletes:
        if k in seen:
            raise ValueError(f"key {k!r} is both put and deleted (or deleted twice) in one txn")
        seen.add(k)
        out.append(Change(k, None))
    for c in out:
        if not isinstance(c.key, str) or not c.key:
            raise ValueError(f"a key is a non-empty string, not {c.key!r}")
    return tuple(out)


def dumps(obj: Any) -> bytes:
    """JSON as the store keeps it: UTF-8, keys sorted, no spaces (equal objects, equal bytes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def loads(value: bytes | None) -> Any:
    """The object a value holds (``None`` for a missing key)."""
    return None if value is None else json.loads(value)
