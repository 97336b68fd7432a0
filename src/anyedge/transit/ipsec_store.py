"""Anycast IPsec's distribution: one IKE exchange at one server, the SAs on every
server of every site.

The server whose IKE responder made (or rekeyed, or deleted) a Child SA writes it to the
replicated store (:mod:`anyedge.store`) under ``ipsec/sa/<SPI in, 8 hex digits>``; every
server's replica watches ``ipsec/`` and installs each record into its ESP endpoint, or
removes it when the key is deleted.  A rekeyed SA's record names the SA it ``replaces``,
so every server moves its sending to the new one at once and keeps decrypting with the
old one until the peer deletes it.

The IKE SA itself goes the same way under ``ipsec/ike/<SPIr, 16 hex digits>``: after
every exchange the responder that answered it writes the SA's state (keys, the next
message ID, the last response, its Child SAs), and every other server's responder
adopts it (:meth:`~anyedge.proto.ike.Responder.adopt`, which never goes back to an
older message ID).  After a failover the server the peer now reaches answers its
liveness checks, rekeys and deletes without a new IKE exchange.

Records are encrypted at rest and on the wire with a *fleet key* (AES-256-GCM, a
random 12-byte nonce per record, the store key as associated data so a record cannot be
moved to another key): value = nonce | ciphertext.  A record that does not open under
the fleet key is counted and ignored.

The installer's callbacks run on the replica's thread; the IPsec endpoint hands them to
its packet loop (:meth:`~anyedge.transit.ipsec.IpsecEndpoint.submit`).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..proto.ike import ChildSA
from ..store.api import Batch, Replica, StoreError, Watch, Writer

ROOT = "ipsec/"
PREFIX = "ipsec/sa/"
IKE_PREFIX = "ipsec/ike/"
NONCE_LEN = 12


def sa_key(spi_in: int) -> str:
    return f"{PREFIX}{spi_in:08x}"


def ike_key(spi_r: bytes) -> str:
    return f"{IKE_PREFIX}{spi_r.hex()}"


class FleetKey:
    """AES-256-GCM over the records (JSON documents)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"a fleet key is 32 bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, name: str, doc: dict[str, Any]) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        body = json.dumps(doc, sort_keys=True).encode()
        return nonce + self._aead.encrypt(nonce, body, name.encode())

    def open(self, name: str, value: bytes) -> dict[str, Any] | None:
        try:
            doc = json.loads(
                self._aead.decrypt(value[:NONCE_LEN], value[NONCE_LEN:], name.encode())
            )
        except (InvalidTag, ValueError):
            return None
        return doc if isinstance(doc, dict) else None


def publish(writer: Writer, fleet: FleetKey, event: str, child: ChildSA) -> int:
    """Write (``event`` "up") or delete ("down") a Child SA's record; the sequence number."""
    name = sa_key(child.spi_in)
    if event == "up":
        return writer.put(name, fleet.seal(name, child.to_dict()))
    return writer.delete(name)


def publish_ike(
    writer: Writer, fleet: FleetKey, spi_r: bytes, record: dict[str, Any] | None
) -> int:
    """Write an IKE SA's record, or delete it (``record`` None)."""
    name = ike_key(spi_r)
    if record is None:
        return writer.delete(name)
    return writer.put(name, fleet.seal(name, record))


Job = Callable[[Writer, FleetKey], int]


class Publisher:
    """Writes records from a thread of its own, so that the packet loop never waits on
    the store; reconnects (``connect``) and retries in order when a write fails."""

    def __init__(self, connect: Callable[[], Writer], fleet: FleetKey) -> None:
        self._connect, self.fleet = connect, fleet
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self.published = 0
        self._thread = threading.Thread(target=self._run, name="ipsec-publish", daemon=True)
        self._thread.start()

    def __call__(self, event: str, child: ChildSA) -> None:
        self._queue.put(lambda w, f: publish(w, f, event, child))

    def ike(self, spi_r: bytes, record: dict[str, Any] | None) -> None:
        self._queue.put(lambda w, f: publish_ike(w, f, spi_r, record))

    def _run(self) -> None:
        writer: Writer | None = None
        job = self._queue.get()
        while job is not None:
            try:
                writer = writer or self._connect()
                job(writer, self.fleet)
                self.published += 1
                job = self._queue.get()
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
    ike_adopted: int = 0
    ike_removed: int = 0


class SaInstaller:
    """Keeps one server's endpoint (and, with ``adopt``/``forget``, its IKE responder)
    in step with the records in its replica."""

    def __init__(
        self,
        replica: Replica,
        fleet: FleetKey,
        install: Callable[[ChildSA], None],
        remove: Callable[[int], None],
        adopt: Callable[[dict[str, Any]], None] | None = None,
        forget: Callable[[bytes], None] | None = None,
    ) -> None:
        self.fleet, self._install, self._remove = fleet, install, remove
        self._adopt, self._forget = adopt, forget
        self.counters = InstallCounters()
        self.seq = 0  # the last batch installed
        self._cond = threading.Condition()
        self._watch: Watch = replica.watch(ROOT, callback=self._batch)
        start = replica.seq
        for name, value in replica.items(ROOT).items():
            self._put(name, value)
        with self._cond:
            self.seq = max(self.seq, start)
            self._cond.notify_all()

    def _put(self, name: str, value: bytes) -> None:
        doc = self.fleet.open(name, value)
        try:
            if doc is not None and name.startswith(PREFIX):
                child = ChildSA.from_dict(doc)
                if sa_key(child.spi_in) == name:
                    self._install(child)
                    self.counters.installed += 1
                    return
            elif (
                doc is not None
                and name.startswith(IKE_PREFIX)
                and ike_key(bytes.fromhex(str(doc["spi_r"]))) == name
            ):
                if self._adopt is not None:
                    self._adopt(doc)
                self.counters.ike_adopted += 1
                return
        except (KeyError, TypeError, ValueError, IndexError):
            pass
        self.counters.rejected += 1

    def _batch(self, batch: Batch) -> None:
        for change in batch.changes:
            if change.value is not None:
                self._put(change.key, change.value)
            elif change.key.startswith(PREFIX):
                self._remove(int(change.key[len(PREFIX) :], 16))
                self.counters.removed += 1
            elif change.key.startswith(IKE_PREFIX):
                if self._forget is not None:
                    self._forget(bytes.fromhex(change.key[len(IKE_PREFIX) :]))
                self.counters.ike_removed += 1
        with self._cond:
            self.seq = max(self.seq, batch.seq)
            self._cond.notify_all()

    def wait(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until the records of write ``seq`` (or a later one) are installed here."""
        with self._cond:
            return self._cond.wait_for(lambda: self.seq >= seq, timeout)

    def close(self) -> None:
        self._watch.close()
