"""The replicated configuration store: one writer, a full local replica everywhere.

Magic Transit's daemon on every server reads customers' configuration from Quicksilver,
Cloudflare's globally replicated key-value store, and applies it.  This is anyedge's
version of that store.  One writer turns each write into a numbered batch; every site
and server keeps a full replica, applies batches in order and a transaction whole, and
answers reads locally.  A replica that was away catches up from where it stopped, or
from a snapshot and the log's tail when the log has been compacted past it; a slow or
dead replica never holds up the writer.

- :mod:`.api`: changes, batches, snapshots; the :class:`Writer` and :class:`Replica`
  roles; JSON helpers.
- :mod:`.log`: the log, snapshots, catch-up and a replica's copy, as pure code.
- :mod:`.wire`: the embedded back end's frames, sans-IO.
- :mod:`.replica`: what every replica shares: local reads, waits, watches, a local file.
- :mod:`.embedded`: the default back end for one machine: a SQLite log and a TCP fan-out.
- :mod:`.etcd`: the same roles over an etcd cluster, for more than one machine.

See docs/store.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import (
    Batch,
    Change,
    ProtocolError,
    Replica,
    Snapshot,
    StoreError,
    Watch,
    Writer,
    changes_of,
    dumps,
    loads,
)
from .embedded import EmbeddedReplica, EmbeddedWriter
from .etcd import EtcdReplica, EtcdWriter

__all__ = [
    "Batch",
    "Change",
    "EmbeddedReplica",
    "EmbeddedWriter",
    "EtcdReplica",
    "EtcdWriter",
    "ProtocolError",
    "Replica",
    "Snapshot",
    "StoreError",
    "Watch",
    "Writer",
    "changes_of",
    "dumps",
    "loads",
]

if TYPE_CHECKING:  # mypy checks that every back end fills its role
    from .embedded import RemoteWriter

    def _roles(
        a: EmbeddedWriter, b: EtcdWriter, c: RemoteWriter, d: EmbeddedReplica, e: EtcdReplica
    ) -> tuple[Writer, Writer, Writer, Replica, Replica]:
        return a, b, c, d, e
