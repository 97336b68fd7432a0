"""Customers' prefixes on anycast: every site's speaker announces them.

A Magic Transit customer's prefixes are announced from every site, beside the site's
own anycast prefixes, so that packets for them land at the nearest site.  An
:class:`Announcer` runs beside each site's BGP speaker (any
:class:`~anyedge.adapters.bgp.base.SiteSpeaker`: FRR, BIRD, GoBGP, ExaBGP).  It watches
``transit/customers/`` on the site's replica and, after every change, hands the speaker
the whole set — the site's own routes plus every customer's prefixes — with
``apply(routes)``, which is absolute: a prefix no longer listed is withdrawn.  Withdrawing
the site (``Announcer.withdraw``) takes everything away; ``restore`` puts it back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from anyedge.adapters.bgp.base import Route, SiteSpeaker
from anyedge.store import Batch, Replica, Watch

from .config import PREFIX, customer_of

log = logging.getLogger(__name__)


def routes(own: Iterable[Route], customers: dict[str, bytes], prepend: int = 0) -> list[Route]:
    """The site's own routes, then every customer's prefixes (sorted, each once, with
    ``prepend`` extra copies of the AS number: a backup site announces longer paths)."""
    out = list(own)
    have = {r.prefix for r in out}
    extra: set[str] = set()
    for key, value in customers.items():
        try:
            extra.update(customer_of(value).prefixes)
        except ValueError as e:  # not JSON, not a customer: the applier counts it
            log.error("transit: %s is not a customer, not announced: %s", key, e)
    return out + [Route(p, prepend) for p in sorted(extra - have)]


class Announcer:
    """Keep ``speaker`` announcing ``own`` routes and every customer's prefixes."""

    def __init__(
        self, replica: Replica, speaker: SiteSpeaker, own: Iterable[Route] = (), prepend: int = 0
    ) -> None:
        self.replica = replica
        self.prepend = prepend
        self.speaker = speaker
        self.own = list(own)
        self.announced: list[Route] = []
        self.errors = 0
        self._withdrawn = False
        self._lock = threading.Lock()
        self._watch: Watch | None = None
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> Announcer:
        self._watch = self.replica.watch(PREFIX, callback=self._changed)
        self.sync()
        self._thread = threading.Thread(target=self._run, name="transit-announce", daemon=True)
        self._thread.start()
        return self

    def _changed(self, batch: Batch) -> None:
        self._wake.set()  # the speaker is slow: never hold up the replica's thread

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            self.sync()

    def sync(self) -> None:
        """Hand the speaker what it should announce now (from the local replica)."""
        with self._lock:
            want = (
                []
                if self._withdrawn
                else routes(self.own, self.replica.items(PREFIX), self.prepend)
            )
            if want == self.announced:
                return
            try:
                self.speaker.apply(want)
            except Exception as e:  # the speaker's trouble; the next change tries again
                self.errors += 1
                log.error("transit: the speaker did not take %d routes: %s", len(want), e)
                return
            self.announced = want

    def withdraw(self) -> None:
        """Take the site out: announce nothing, whatever the store says."""
        self._withdrawn = True
        self.sync()

    def restore(self) -> None:
        self._withdrawn = False
        self.sync()

    def only_own(self) -> None:
        """Hand the speaker the site's own routes alone (customers' prefixes withdrawn),
        whatever the store says; for a server that stops serving them."""
        with self._lock:
            self._withdrawn = True
            try:
                self.speaker.apply(self.own)
            except Exception as e:
                self.errors += 1
                log.error("transit: the speaker did not withdraw customers' prefixes: %s", e)
                return
            self.announced = list(self.own)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
