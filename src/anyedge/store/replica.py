"""What every replica shares, whatever feeds it: the local copy, reads, waits and watches.

A back end's receiving thread calls :meth:`ReplicaBase.receive` with each batch or
snapshot in order.  Under one lock it is applied to the in-memory copy
(:class:`~anyedge.store.log.Copy`) and, when the replica has a file, to its local SQLite
database in one transaction together with the sequence number, so that a replica that is
killed restarts from exactly what it had.  Then waiters wake and watchers get the batch,
in the receiving thread, in sequence order.  Reads take the lock and never leave the
process.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .api import Batch, Snapshot
from .log import Copy


class LocalFile:
    """A replica's copy on disk: ``kv(key, value)`` and ``meta`` (store id, seq).

    ``journal``: also record each applied sequence number (and whether it came as a
    snapshot), in the same transaction — the tests read it to prove nothing was lost or
    reordered across a kill.
    """

    def __init__(self, path: str | Path, journal: bool = False) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        self.journal = journal
        if journal:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS journal (n INTEGER PRIMARY KEY, seq INT, snap INT)"
            )

    def load(self) -> tuple[str, int, dict[str, bytes]]:
        meta = dict(self.db.execute("SELECT k, v FROM meta").fetchall())
        items = {k: bytes(v) for k, v in self.db.execute("SELECT key, value FROM kv")}
        return str(meta.get("store_id", "")), int(meta.get("seq", 0)), items

    def save(self, store_id: str, msg: Batch | Snapshot) -> None:
        db = self.db
        db.execute("BEGIN")
        try:
            if isinstance(msg, Snapshot):
                db.execute("DELETE FROM kv")
                db.executemany("INSERT INTO kv VALUES (?, ?)", msg.items.items())
            else:
                for c in msg.changes:
                    if c.value is None:
                        db.execute("DELETE FROM kv WHERE key = ?", (c.key,))
                    else:
                        db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (c.key, c.value))
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("store_id", store_id), ("seq", str(msg.seq))],
            )
            if self.journal:
                db.execute(
                    "INSERT INTO journal (seq, snap) VALUES (?, ?)",
                    (msg.seq, int(isinstance(msg, Snapshot))),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()


class _Watch:
    """Batches restricted to a prefix, queued for an iterating reader or handed to a callback."""

    def __init__(
        self, owner: ReplicaBase, prefix: str, callback: Callable[[Batch], None] | None
    ) -> None:
        self._owner = owner
        self.prefix = prefix
        self.callback = callback
        self._q: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self.closed = False

    def deliver(self, batch: Batch) -> None:
        changes = tuple(c for c in batch.changes if c.key.startswith(self.prefix))
        if not changes:
            return
        b = batch if len(changes) == len(batch.changes) else Batch(batch.seq, changes)
        if self.callback is not None:
            self.callback(b)
        else:
            self._q.put(b)

    def get(self, timeout: float | None = None) -> Batch | None:
        """The next batch, or ``None`` at ``timeout`` or once closed."""
        if self.closed:
            return None
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def __iter__(self) -> Iterator[Batch]:
        while (b := self.get()) is not None:
            yield b

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._q.put(None)
            self._owner._unwatch(self)

    def __enter__(self) -> _Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReplicaBase:
    """The local copy and its readers; a back end feeds it through :meth:`receive`."""

    def __init__(
        self, path: str | Path | None = None, *, contiguous: bool, journal: bool = False
    ) -> None:
        self._cond = threading.Condition()
        self._file = LocalFile(path, journal) if path is not None else None
        self._copy = Copy(contiguous=contiguous)
        self.store_id = ""
        if self._file is not None:
            self.store_id, self._copy.seq, self._copy.state = self._file.load()
        self._watches: list[_Watch] = []

    @property
    def seq(self) -> int:
        """The sequence number of the last batch applied here."""
        with self._cond:
            return self._copy.seq

    def get(self, key: str) -> bytes | None:
        with self._cond:
            return self._copy.state.get(key)

    def items(self, prefix: str = "") -> dict[str, bytes]:
        with self._cond:
            return {k: v for k, v in self._copy.state.items() if k.startswith(prefix)}

    def wait(self, seq: int, timeout: float | None = None) -> bool:
        """Block until this replica has applied ``seq`` (``False`` at ``timeout``)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._copy.seq >= seq, timeout)

    def watch(self, prefix: str = "", callback: Callable[[Batch], None] | None = None) -> _Watch:
        """Every batch applied from now on that touches ``prefix``, in sequence order.

        With ``callback`` it is called in the replica's receiving thread (keep it short);
        without, iterate the returned watch or call its ``get(timeout)``.
        """
        w = _Watch(self, prefix, callback)
        with self._cond:
            self._watches.append(w)
        return w

    def _unwatch(self, w: _Watch) -> None:
        with self._cond:
            if w in self._watches:
                self._watches.remove(w)

    def receive(self, msg: Batch | Snapshot, store_id: str | None = None) -> None:
        """Apply one batch or snapshot (called by the back end, in order, one thread)."""
        with self._cond:
            if store_id is not None:
                self.store_id = store_id
            out = self._copy.receive(msg)
            if out is None:
                return
            if self._file is not None:
                self._file.save(self.store_id, msg)
            self._cond.notify_all()
            watches = list(self._watches)
        for w in watches:
            w.deliver(out)

    def _close_local(self) -> None:
        with self._cond:
            for w in list(self._watches):
                w.closed = True
                w._q.put(None)
            self._watches.clear()
            if self._file is not None:
                self._file.close()
                self._file = None
