"""The etcd back end: the same writer and replicas over etcd's v3 API, for users who
outgrow one machine.

It speaks etcd's gRPC gateway (JSON over HTTP, ``/v3/kv/put``, ``/v3/kv/range``,
``/v3/kv/txn``, ``/v3/kv/deleterange``, ``/v3/kv/compaction`` and the streaming
``/v3/watch``) with the standard library, so it needs no client package and works with
Debian's etcd 3.4 and later.  Keys live under a ``prefix`` (default ``/anyedge/``);
keys and values travel base64-encoded, as the gateway wants.

The sequence number is etcd's revision.  A write returns the revision it made; all the
changes of one ``txn`` carry the same revision and are applied together.  A replica
first reads the prefix at one revision (a snapshot), then watches from the next revision
and groups the events by revision into batches.  After a restart it watches from the
revision it had persisted; if etcd has compacted that far, the watch is cancelled with
the compaction revision and the replica takes a fresh snapshot and watches on from it.
A replica talks to any member; when one stops answering it moves to the next.

Revisions count writes to the whole cluster, so a replica of one prefix sees holes in
its sequence numbers: only order is checked, not contiguity.  Deleting a key that does
not exist makes no revision; ``delete`` then returns the current one.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .api import Batch, Change, Snapshot, StoreError, changes_of
from .replica import ReplicaBase


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's range end)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\x00"  # every key


class EtcdClient:
    """JSON calls to any of ``endpoints`` (``http://host:port``), one connection kept open."""

    def __init__(self, endpoints: Sequence[str], timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._at = 0
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _open(self, i: int, timeout: float | None) -> http.client.HTTPConnection:
        u = urlsplit(self.endpoints[i % len(self.endpoints)])
        return http.client.HTTPConnection(
            u.hostname or "127.0.0.1", u.port or 2379, timeout=timeout
        )

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` on one member, moving to the next on failure."""
        data = json.dumps(body)
        last: Exception | None = None
        with self._lock:
            for _ in range(2 * len(self.endpoints)):
                if self._conn is None:
                    self._conn = self._open(self._at, self.timeout)
                try:
                    self._conn.request("POST", path, data, {"Content-Type": "application/json"})
                    r = self._conn.getresponse()
                    out = r.read()
                except (OSError, http.client.HTTPException) as e:
                    last = e
                    self._conn.close()
                    self._conn = None
                    self._at += 1
                    continue
                reply: dict[str, Any] = json.loads(out or b"{}")
                if r.status != 200:
                    raise StoreError(f"etcd {path}: {r.status} {reply.get('error', out[:200])}")
                return reply
        raise StoreError(f"no etcd member answers ({', '.join(self.endpoints)}): {last}")

    def stream(
        self, path: str, body: dict[str, Any], member: int
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Open a streaming call (a watch) on one member; the caller reads lines."""
        conn = self._open(member, self.timeout)
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            conn.close()
            raise StoreError(f"etcd {path}: {r.status} {r.read()[:200]!r}")
        if conn.sock is not None:
            conn.sock.settimeout(None)  # a watch is quiet while nothing changes
        return conn, r

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _rev(reply: dict[str, Any]) -> int:
    return int(reply["header"]["revision"])


class EtcdWriter:
    """The writer over etcd: each call is one etcd request, answered with its revision."""

    def __init__(self, endpoints: Sequence[str], prefix: str = "/anyedge/") -> None:
        self.prefix = prefix
        self.client = EtcdClient(endpoints)

    def _key(self, key: str) -> str:
        return _b64(self.prefix + key)

    def put(self, key: str, value: bytes) -> int:
        changes_of({key: value}, ())
        return _rev(self.client.call("/v3/kv/put", {"key": self._key(key), "value": _b64(value)}))

    def delete(self, key: str) -> int:
        changes_of(None, (key,))
        return _rev(self.client.call("/v3/kv/deleterange", {"key": self._key(key)}))

    def txn(self, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = ()) -> int:
        ops: list[dict[str, Any]] = []
        for c in changes_of(puts, deletes):
            if c.value is None:
                ops.append({"requestDeleteRange": {"key": self._key(c.key)}})
            else:
                ops.append({"requestPut": {"key": self._key(c.key), "value": _b64(c.value)}})
        return _rev(self.client.call("/v3/kv/txn", {"success": ops}))

    @property
    def seq(self) -> int:
        """The cluster's current revision."""
        return _rev(self.client.call("/v3/kv/range", {"key": _b64(self.prefix), "limit": 1}))

    def compact(self, upto: int | None = None) -> None:
        """Compact etcd's history up to ``upto`` (default: the current revision)."""
        rev = self.seq if upto is None else upto
        self.client.call("/v3/kv/compaction", {"revision": rev, "physical": True})

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> EtcdWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EtcdReplica(ReplicaBase):
    """A local copy of everything under ``prefix``, kept current by an etcd watch.

    ``path``: keep the copy in this SQLite file and resume from its revision after a
    restart (default: memory only).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = "/anyedge/",
        path: str | Path | None = None,
        *,
        journal: bool = False,
        retry: float = 0.05,
        max_retry: float = 1.0,
    ) -> None:
        super().__init__(path, contiguous=False, journal=journal)
        self.prefix = prefix
        self.client = EtcdClient(endpoints)
        self.retry, self.max_retry = retry, max_retry
        self.snapshots = 0
        self._member = 0
        self._need_snapshot = self.seq == 0
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="store-etcd-replica", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = self.retry
        while not self._stop.is_set():
            try:
                if self._need_snapshot:
                    self._snapshot()
                self._watch()
                delay = self.retry
            except (OSError, http.client.HTTPException, StoreError, ValueError, KeyError):
                self._member += 1
            self._stop.wait(delay)
            delay = min(delay * 2, self.max_retry)

    def _snapshot(self) -> None:
        p = self.prefix.encode()
        reply = self.client.call("/v3/kv/range", {"key": _b64(p), "range_end": _b64(prefix_end(p))})
        n = len(self.prefix)
        items = {
            _unb64(kv["key"]).decode()[n:]: _unb64(kv.get("value", ""))
            for kv in reply.get("kvs", [])
        }
        cluster = str(reply["header"]["cluster_id"])
        self.snapshots += 1
        self.receive(Snapshot(_rev(reply), items), cluster)
        self._need_snapshot = False

    def _watch(self) -> None:
        p = self.prefix.encode()
        create = {
            "key": _b64(p),
            "range_end": _b64(prefix_end(p)),
            "start_revision": self.seq + 1,
        }
        conn, r = self.client.stream("/v3/watch", {"create_request": create}, self._member)
        self._sock = conn.sock
        try:
            if self._stop.is_set():
                return
            n = len(self.prefix)
            while line := r.readline():
                result = json.loads(line).get("result")
                if result is None:
                    raise StoreError(f"etcd watch: {line[:200]!r}")
                cluster = str(result["header"]["cluster_id"])
                if self.store_id and cluster != self.store_id:
                    self._need_snapshot = True  # another cluster's history
                    return
                if int(result.get("compact_revision", 0)) > self.seq:
                    self._need_snapshot = True  # the log we need is compacted away
                    return
                if result.get("canceled"):
                    raise StoreError(f"etcd cancelled the watch: {result.get('cancel_reason')}")
                batches: dict[int, list[Change]] = {}
                for ev in result.get("events", []):
                    kv = ev["kv"]
                    key = _unb64(kv["key"]).decode()[n:]
                    value = None if ev.get("type") == "DELETE" else _unb64(kv.get("value", ""))
                    batches.setdefault(int(kv["mod_revision"]), []).append(Change(key, value))
                for rev in sorted(batches):
                    self.receive(Batch(rev, tuple(batches[rev])), cluster)
        finally:
            self._sock = None
            r.close()
            conn.close()

    def close(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self.client.close()
        self._close_local()

    def __enter__(self) -> EtcdReplica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
