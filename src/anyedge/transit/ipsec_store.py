"""Anycast IPsec's distribution: one IKE exchange at one server, the Child SA on every
server of every site.

The server whose IKE responder made (or rekeyed, or deleted) a Child SA writes it to the
replicated store (:mod:`anyedge.store`) under ``ipsec/sa/<SPI in, 8 hex digits>``; every
server's replica watches that prefix and installs each record into its ESP endpoint, or
removes it when the key is deleted.  A rekeyed SA's record names the SA it ``replaces``,
so every server moves its sending to the new one at once and keeps decrypting with the
old one until the peer deletes it.

Records are encrypted at rest and on the wire with a *fleet key* (AES-256-GCM, a
random 12-byte nonce per record, the store key as associated data so a record cannot be
moved to another SPI's key): value = nonce | ciphertext.  A record that does not open
under the fleet key is counted and ignored.

The installer's callback runs on the replica's thread; an install or removal is a few
dictionary assignments on the endpoint, which the packet loop reads.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..proto.ike import ChildSA
from ..store.api import Batch, Replica, StoreError, Watch, Writer

PREFIX = "ipsec/sa/"
NONCE_LEN = 12


def sa_key(spi_in: int) -> str:
    return f"{PREFIX}{spi_in:08x}"


class FleetKey:
    """AES-256-GCM over the SA records."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"a fleet key is 32 bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, name: str, child: ChildSA) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        body = json.dumps(child.to_dict(), sort_keys=True).encode()
        return nonce + self._aead.encrypt(nonce, body, name.encode())

    def open(self, name: str, value: bytes) -> ChildSA | None:
        try:
            body = self._aead.decrypt(value[:NONCE_LEN], value[NONCE_LEN:], name.encode())
            return ChildSA.from_dict(json.loads(body))
        except (InvalidTag, ValueError, KeyError, TypeError):
            return None


def publish(writer: Writer, fleet: FleetKey, event: str, child: ChildSA) -> int:
    """Write (``event`` "up") or delete ("down") a Child SA's record; the sequence number."""
    name = sa_key(child.spi_in)
    if event == "up":
        return writer.put(name, fleet.seal(name, child))
    return writer.delete(name)


class Publisher:
    """Writes SA records from a thread of its own, so that the packet loop never waits
    on the store; reconnects (``connect``) and retries in order when a write fails."""

    def __init__(self, connect: Callable[[], Writer], fleet: FleetKey) -> None:
        self._connect, self.fleet = connect, fleet
        self._queue: queue.Queue[tuple[str, ChildSA] | None] = queue.Queue()
        self.published = 0
        self._thread = threading.Thread(target=self._run, name="ipsec-publish", daemon=True)
        self._thread.start()

    def __call__(self, event: str, child: ChildSA) -> None:
        self._queue.put((event, child))

    def _run(self) -> None:
        writer: Writer | None = None
        item = self._queue.get()
        while item is not None:
            try:
                writer = writer or self._connect()
                publish(writer, self.fleet, *item)
                self.published += 1
                item = self._queue.get()
            except (OSError, StoreError):
                if writer is not None:
                    writer.close()
                writer = None
                time.sleep(0.2)
        if writer is not None:
            writer.close()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5)


@dataclass(slots=True)
class InstallCounters:
    installed: int = 0
    removed: int = 0
    rejected: int = 0


class SaInstaller:
    """Keeps one server's endpoint in step with the SA records in its replica."""

    def __init__(
        self,
        replica: Replica,
        fleet: FleetKey,
        install: Callable[[ChildSA], None],
        remove: Callable[[int], None],
    ) -> None:
        self.fleet, self._install, self._remove = fleet, install, remove
        self.counters = InstallCounters()
        self.seq = 0  # the last batch installed
        self._cond = threading.Condition()
        self._watch: Watch = replica.watch(PREFIX, callback=self._batch)
        start = replica.seq
        for name, value in replica.items(PREFIX).items():
            self._put(name, value)
        with self._cond:
            self.seq = max(self.seq, start)
            self._cond.notify_all()

    def _put(self, name: str, value: bytes) -> None:
        child = self.fleet.open(name, value)
        if child is None or sa_key(child.spi_in) != name:
            self.counters.rejected += 1
            return
        self._install(child)
        self.counters.installed += 1

    def _batch(self, batch: Batch) -> None:
        for change in batch.changes:
            if change.value is None:
                self._remove(int(change.key[len(PREFIX) :], 16))
                self.counters.removed += 1
            else:
                self._put(change.key, change.value)
        with self._cond:
            self.seq = max(self.seq, batch.seq)
            self._cond.notify_all()

    def wait(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until the records of write ``seq`` (or a later one) are installed here."""
        with self._cond:
            return self._cond.wait_for(lambda: self.seq >= seq, timeout)

    def close(self) -> None:
        self._watch.close()
