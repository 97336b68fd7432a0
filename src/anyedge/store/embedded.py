"""The embedded back end: one writer's SQLite log, fanned out to replicas over TCP.

Data flow.  :class:`EmbeddedWriter` appends each write to ``log(seq, body)`` in its
SQLite file (WAL mode) and commits; every ``compact_every`` batches it folds the log into
``snap(key, value)`` and keeps only the tail after it.  After the commit it hands the
batch's frame to the fan-out, an asyncio loop in its own thread, and returns the new
sequence number: the writer never waits for a replica.

The fan-out serves replicas on a TCP port of 127.0.0.1 (frames of :mod:`.wire`).  A
replica says which store it copies and the last sequence number it applied; the fan-out
registers it (from then on new batches queue for it), reads its catch-up from the SQLite
file in one read transaction (the tail, or the snapshot and the tail: :func:`.log.plan`),
sends it, then sends the queued batches it has not had.  Each replica's queue is bounded
(``queue_limit`` batches): a replica that cannot keep up — stopped, slow, or on a full
socket — is disconnected, and reconnects later from its own sequence number.

:class:`EmbeddedReplica` is the other end: a thread that connects, applies what comes in
order (:class:`.replica.ReplicaBase`), and reconnects with backoff when the connection
ends.  With a file it keeps its copy on disk and resumes from it after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import wire
from .api import Batch, Change, ProtocolError, Snapshot, changes_of
from .log import apply, plan
from .replica import ReplicaBase


def _connect(path: str | Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    return db


class SqliteLog:
    """The writer's history in SQLite: ``snap`` at ``snap_seq``, then ``log`` rows after it.

    Used by one thread at a time (the writer holds a lock).  :func:`read_since` reads it
    from another connection.
    """

    def __init__(self, path: str | Path, durable: bool = False) -> None:
        self.path = str(path)
        self.db = _connect(path)
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self.db.execute("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, body BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS snap (key TEXT PRIMARY KEY, value BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        self.db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('store_id', ?), ('snap_seq', '0')",
            (uuid.uuid4().hex,),
        )
        meta = dict(self.db.execute("SELECT k, v FROM meta").fetchall())
        self.store_id = str(meta["store_id"])
        self.snap_seq = int(meta["snap_seq"])
        (last,) = self.db.execute("SELECT max(seq) FROM log").fetchone()
        self.head = int(last) if last is not None else self.snap_seq

    def append(self, changes: tuple[Change, ...]) -> tuple[int, bytes]:
        """Commit one batch; its sequence number and its encoded changes."""
        body = wire.encode_changes(changes)
        seq = self.head + 1
        self.db.execute("INSERT INTO log VALUES (?, ?)", (seq, body))
        self.head = seq
        return seq, body

    def compact(self, upto: int | None = None) -> None:
        """Fold the log up to ``upto`` (default: all of it) into the snapshot."""
        upto = self.head if upto is None else min(upto, self.head)
        if upto <= self.snap_seq:
            return
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                "SELECT body FROM log WHERE seq > ? AND seq <= ? ORDER BY seq",
                (self.snap_seq, upto),
            )
            for (body,) in rows.fetchall():
                for c in wire.decode_changes(body):
                    if c.value is None:
                        db.execute("DELETE FROM snap WHERE key = ?", (c.key,))
                    else:
                        db.execute("INSERT OR REPLACE INTO snap VALUES (?, ?)", (c.key, c.value))
            db.execute("DELETE FROM log WHERE seq <= ?", (upto,))
            db.execute("UPDATE meta SET v = ? WHERE k = 'snap_seq'", (str(upto),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.snap_seq = upto

    def state(self) -> dict[str, bytes]:
        """The whole store now (snapshot plus tail)."""
        _, snap, batches = read_since(self.db, self.store_id, "", 0)
        items = dict(snap.items) if snap else {}
        for b in batches:
            apply(items, b.changes)
        return items

    def close(self) -> None:
        self.db.close()


def read_since(
    db: sqlite3.Connection, store_id: str, their_id: str, since: int
) -> tuple[int, Snapshot | None, list[Batch]]:
    """A replica's catch-up, read in one transaction: (head, snapshot or None, batches)."""
    db.execute("BEGIN")
    try:
        (snap_seq,) = db.execute("SELECT v FROM meta WHERE k = 'snap_seq'").fetchone()
        snap_seq = int(snap_seq)
        (last,) = db.execute("SELECT max(seq) FROM log").fetchone()
        head = int(last) if last is not None else snap_seq
        snap = None
        if their_id != store_id or plan(since, snap_seq, head) == "snapshot":
            rows = db.execute("SELECT key, value FROM snap")
            snap = Snapshot(snap_seq, {k: bytes(v) for k, v in rows})
            since = snap_seq
        rows = db.execute("SELECT seq, body FROM log WHERE seq > ? ORDER BY seq", (since,))
        batches = [Batch(s, wire.decode_changes(b)) for s, b in rows]
    finally:
        db.execute("COMMIT")
    return head, snap, batches


@dataclass(eq=False)
class _Session:
    queue: asyncio.Queue[tuple[int, bytes] | None]
    writer: asyncio.StreamWriter
    dropped: bool = False


class _FanOut:
    """The asyncio side: accepts replicas, catches them up, streams batches to each."""

    def __init__(
        self,
        path: str,
        store_id: str,
        host: str,
        port: int,
        queue_limit: int,
        commit: Callable[[tuple[Change, ...]], int],
    ) -> None:
        self.path, self.store_id, self.queue_limit = path, store_id, queue_limit
        self.commit = commit
        self.sessions: set[_Session] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.conns: set[asyncio.StreamWriter] = set()
        self.dropped = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="store-fanout")
        self.thread.daemon = True
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, host, port), self.loop
        )
        self.server = fut.result(timeout=10)
        self.address: tuple[str, int] = self.server.sockets[0].getsockname()[:2]

    def publish(self, seq: int, frame: bytes) -> None:
        """Called by the writer's thread; never blocks."""
        self.loop.call_soon_threadsafe(self._publish, seq, frame)

    def _publish(self, seq: int, frame: bytes) -> None:
        for s in list(self.sessions):
            if s.queue.qsize() >= self.queue_limit:
                self._drop(s)
            else:
                s.queue.put_nowait((seq, frame))

    def _drop(self, s: _Session) -> None:
        if not s.dropped:
            s.dropped = True
            self.dropped += 1
            self.sessions.discard(s)
            s.queue.put_nowait(None)
            s.writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = _Session(asyncio.Queue(), writer)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        self.conns.add(writer)
        try:
            dec = wire.Decoder()
            hello = await self._hello(reader, dec)
            if isinstance(hello, wire.Write):
                await self._writes(hello, reader, writer, dec)
                return
            self.sessions.add(s)
            db = await asyncio.to_thread(_connect, self.path)
            try:
                head, snap, batches = await asyncio.to_thread(
                    read_since, db, self.store_id, hello.store_id, hello.seq
                )
            finally:
                db.close()
            writer.write(wire.encode(wire.Hello(self.store_id, head)))
            if snap is not None:
                writer.write(wire.encode(snap))
            last = snap.seq if snap is not None else hello.seq
            for b in batches:
                writer.write(wire.encode(b))
                last = b.seq
                await writer.drain()
            last = max(last, head)
            while (item := await s.queue.get()) is not None:
                seq, frame = item
                if seq <= last:
                    continue
                if seq != last + 1:
                    raise ProtocolError(f"fan-out gap: {seq} after {last}")
                writer.write(frame)
                last = seq
                await writer.drain()
        except (OSError, ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            self.sessions.discard(s)
            writer.transport.abort()
            self.conns.discard(writer)
            if task is not None:
                self.tasks.discard(task)

    @staticmethod
    async def _hello(reader: asyncio.StreamReader, dec: wire.Decoder) -> wire.Hello | wire.Write:
        while True:
            data = await reader.read(65536)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            msgs = dec.feed(data)
            if msgs:
                first = msgs[0]
                if isinstance(first, wire.Write):
                    dec.pending = msgs[1:]
                    return first
                if not isinstance(first, wire.Hello) or len(msgs) > 1:
                    raise ProtocolError("a replica speaks first, with HELLO only")
                return first

    async def _writes(
        self,
        first: wire.Write,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dec: wire.Decoder,
    ) -> None:
        """A writing client: commit each WRITE in order, answer each with its ACK."""
        todo: list[wire.Message] = [first, *dec.pending]
        while True:
            for msg in todo:
                if not isinstance(msg, wire.Write):
                    raise ProtocolError("a writing client sends WRITE frames only")
                for c in msg.changes:
                    if not c.key:
                        raise ProtocolError("an empty key")
                seq = await asyncio.to_thread(self.commit, msg.changes)
                writer.write(wire.encode(wire.Ack(seq)))
            await writer.drain()
            data = await reader.read(65536)
            if not data:
                return
            todo = list(dec.feed(data))

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            # end every connection (not by cancelling: asyncio 3.11's stream callback
            # reports a cancelled handler as an error); each handler then returns
            for w in list(self.conns):
                w.transport.abort()
            for sess in list(self.sessions):
                sess.queue.put_nowait(None)
            if self.tasks:
                await asyncio.wait(list(self.tasks), timeout=5)
            await self.server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class EmbeddedWriter:
    """The one writer of an embedded store: a SQLite log and a fan-out server.

    ``port=0`` picks a free port; :attr:`address` says which.  ``compact_every``: fold
    the log into the snapshot after this many batches (the tail a replica can resume
    from is at most that long).  ``queue_limit``: batches queued for one replica before
    it is dropped.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        compact_every: int = 10_000,
        queue_limit: int = 4096,
        durable: bool = False,
    ) -> None:
        self._lock = threading.Lock()
        self._log = SqliteLog(path, durable)
        self.compact_every = compact_every
        self._fanout = _FanOut(
            self._log.path, self._log.store_id, host, port, queue_limit, self._commit
        )
        self.address = self._fanout.address
        self.store_id = self._log.store_id

    @property
    def seq(self) -> int:
        return self._log.head

    def put(self, key: str, value: bytes) -> int:
        return self._commit(changes_of({key: value}, ()))

    def delete(self, key: str) -> int:
        return self._commit(changes_of(None, (key,)))

    def txn(self, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = ()) -> int:
        return self._commit(changes_of(puts, deletes))

    def _commit(self, changes: tuple[Change, ...]) -> int:
        with self._lock:
            seq, body = self._log.append(changes)
            self._fanout.publish(seq, wire.encode_batch(seq, body))
            if seq - self._log.snap_seq >= self.compact_every:
                self._log.compact()
            return seq

    def compact(self, upto: int | None = None) -> None:
        """Fold the log into the snapshot now (up to ``upto``; default everything)."""
        with self._lock:
            self._log.compact(upto)

    def state(self) -> dict[str, bytes]:
        with self._lock:
            return self._log.state()

    def stats(self) -> dict[str, int]:
        """Replicas connected now, replicas dropped for falling behind, the head."""
        return {
            "replicas": len(self._fanout.sessions),
            "dropped": self._fanout.dropped,
            "seq": self._log.head,
            "snapshot_seq": self._log.snap_seq,
        }

    def close(self) -> None:
        self._fanout.close()
        with self._lock:
            self._log.close()

    def __enter__(self) -> EmbeddedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmbeddedReplica(ReplicaBase):
    """A replica fed by an :class:`EmbeddedWriter`'s fan-out at ``address``.

    ``path``: keep the copy in this SQLite file and resume from it (default: memory only,
    a restart copies the whole store again).
    """

    def __init__(
        self,
        address: tuple[str, int],
        path: str | Path | None = None,
        *,
        journal: bool = False,
        retry: float = 0.05,
        max_retry: float = 1.0,
    ) -> None:
        super().__init__(path, contiguous=True, journal=journal)
        self.address = address
        self.retry, self.max_retry = retry, max_retry
        self.connects = 0
        self.writer_seq = -1  # the writer's head when this replica last connected
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="store-replica", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = self.retry
        while not self._stop.is_set():
            try:
                self._session()
                delay = self.retry
            except (OSError, ProtocolError):
                pass
            self._stop.wait(delay)
            delay = min(delay * 2, self.max_retry)

    def _session(self) -> None:
        sock = socket.create_connection(self.address, timeout=5)
        sock.settimeout(None)
        self._sock = sock
        if self._stop.is_set():
            sock.close()
            return
        try:
            self.connects += 1
            sock.sendall(wire.encode(wire.Hello(self.store_id, self.seq)))
            dec = wire.Decoder()
            their_id = None
            while data := sock.recv(1 << 16):
                for msg in dec.feed(data):
                    if isinstance(msg, wire.Hello):
                        their_id = msg.store_id
                        self.writer_seq = msg.seq
                    elif their_id is None or not isinstance(msg, Batch | Snapshot):
                        raise ProtocolError(f"unexpected {type(msg).__name__} from the writer")
                    else:
                        self.receive(msg, their_id)
        finally:
            self._sock = None
            sock.close()

    def close(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self._close_local()

    def __enter__(self) -> EmbeddedReplica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteWriter:
    """Writes sent to an :class:`EmbeddedWriter`'s port (the one writer stays the one
    that commits); each call waits for the sequence number it got."""

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self._sock = socket.create_connection(address, timeout=timeout)
        self._dec = wire.Decoder()
        self._acks: list[wire.Message] = []

    def put(self, key: str, value: bytes) -> int:
        return self._send(changes_of({key: value}, ()))

    def delete(self, key: str) -> int:
        return self._send(changes_of(None, (key,)))

    def txn(self, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = ()) -> int:
        return self._send(changes_of(puts, deletes))

    def _send(self, changes: tuple[Change, ...]) -> int:
        self._sock.sendall(wire.encode(wire.Write(changes)))
        while not self._acks:
            data = self._sock.recv(65536)
            if not data:
                raise ProtocolError("the writer closed the connection")
            self._acks += self._dec.feed(data)
        ack = self._acks.pop(0)
        if not isinstance(ack, wire.Ack):
            raise ProtocolError(f"expected ACK, got {type(ack).__name__}")
        return ack.seq

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RemoteWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
