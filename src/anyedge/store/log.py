"""The replication logic with no I/O: the log, its snapshot, catch-up, and a replica's copy.

The writer's history is a snapshot (the store at ``snapshot.seq``) followed by a tail of
batches ``snapshot.seq + 1 .. head``.  Compaction folds the oldest part of the tail into
the snapshot.  A replica that says "I have everything up to ``seq``" gets, from
:func:`plan`, either the tail after ``seq`` (when the log still holds it) or the snapshot
and the whole tail.  :class:`Copy` is the replica's side: it applies batches in order,
refuses a gap, ignores what it already has, and turns a snapshot into the changes a
watcher must see (:func:`diff`), so that watchers never need to know a snapshot came.

:class:`Log` is the in-memory log; the embedded back end keeps the same history in
SQLite (``anyedge.store.embedded``) and asks :func:`plan` the same question.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from .api import Batch, Change, ProtocolError, Snapshot


def apply(state: dict[str, bytes], changes: Iterable[Change]) -> None:
    """Apply ``changes`` to ``state`` in place."""
    for c in changes:
        if c.value is None:
            state.pop(c.key, None)
        else:
            state[c.key] = c.value


def diff(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> tuple[Change, ...]:
    """The changes that turn ``old`` into ``new`` (keys in sorted order)."""
    out = [Change(k, v) for k, v in sorted(new.items()) if old.get(k) != v]
    out += [Change(k, None) for k in sorted(old.keys() - new.keys())]
    return tuple(out)


def plan(since: int, snap_seq: int, head: int) -> Literal["tail", "snapshot"]:
    """How to bring a replica that has everything up to ``since`` to ``head``.

    The tail alone will do when the log still holds every batch after ``since``; a
    replica that is older than the snapshot, or claims to be ahead of the writer (a
    different history), gets the snapshot first.
    """
    return "tail" if snap_seq <= since <= head else "snapshot"


@dataclass
class CatchUp:
    """What a replica at ``since`` needs: maybe a snapshot, then batches in order."""

    snapshot: Snapshot | None
    batches: list[Batch]


@dataclass
class Log:
    """The writer's history in memory: a snapshot and the tail of batches after it."""

    snapshot: Snapshot = field(default_factory=lambda: Snapshot(0, {}))
    tail: list[Batch] = field(default_factory=list)

    @property
    def head(self) -> int:
        return self.tail[-1].seq if self.tail else self.snapshot.seq

    def append(self, changes: tuple[Change, ...]) -> Batch:
        batch = Batch(self.head + 1, changes)
        self.tail.append(batch)
        return batch

    def compact(self, upto: int | None = None) -> None:
        """Fold the batches up to ``upto`` (default: all) into the snapshot."""
        upto = self.head if upto is None else min(upto, self.head)
        if upto <= self.snapshot.seq:
            return
        items = dict(self.snapshot.items)
        keep = []
        for b in self.tail:
            if b.seq <= upto:
                apply(items, b.changes)
            else:
                keep.append(b)
        self.snapshot = Snapshot(upto, items)
        self.tail = keep

    def since(self, seq: int) -> CatchUp:
        if plan(seq, self.snapshot.seq, self.head) == "tail":
            return CatchUp(None, [b for b in self.tail if b.seq > seq])
        return CatchUp(self.snapshot, list(self.tail))

    def state(self) -> dict[str, bytes]:
        items = dict(self.snapshot.items)
        for b in self.tail:
            apply(items, b.changes)
        return items


@dataclass
class Copy:
    """A replica's copy of the store, fed batches and snapshots.

    ``contiguous``: sequence numbers have no holes (the embedded log), so a batch after
    ``seq + 1`` means something was lost and is refused.  etcd's revisions count the
    writes to every key of the cluster, so a replica of one prefix sees holes.
    """

    contiguous: bool = True
    seq: int = 0
    state: dict[str, bytes] = field(default_factory=dict)

    def receive(self, msg: Batch | Snapshot) -> Batch | None:
        """Apply ``msg``; return the batch watchers must see (``None``: nothing new)."""
        if isinstance(msg, Snapshot):
            changes = diff(self.state, msg.items)
            self.state = dict(msg.items)
            self.seq = msg.seq
            return Batch(msg.seq, changes)
        if msg.seq <= self.seq:
            return None  # already applied (a resend after a reconnect)
        if self.contiguous and msg.seq != self.seq + 1:
            raise ProtocolError(f"batch {msg.seq} after {self.seq}: batches were lost")
        apply(self.state, msg.changes)
        self.seq = msg.seq
        return msg
