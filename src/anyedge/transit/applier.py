"""The transit daemon's applier: from the store to every customer's namespace.

One :class:`Applier` runs per server.  It watches ``transit/customers/`` on the
server's local replica (:mod:`anyedge.store`) and keeps, per customer, a namespace
(:mod:`.plumbing`) whose nftables table is exactly the customer's firewall
(:mod:`.ruleset`).  Data flows one way::

    store write ─► replica ─► watch ─► worker thread ─► setns(customer ns)
                                                        └► libnftables: one JSON batch

The worker thread moves into a customer's namespace (``setns`` on the thread only), runs
the customer's whole table as one libnftables batch through a context opened in that
namespace and kept (:class:`~.nsnft.NamespaceNft`), and comes back: one kernel
transaction per change, no process started.  Applying is absolute and idempotent (the
table is replaced whole), so the applier can start from the replica's current state
and then follow the watch without caring whether a batch is seen twice; changes that
queue up while it is busy are folded to the last one per customer, and a configuration
equal to the one applied is not sent to the kernel again.  Waiters
(:meth:`Applier.wait`) are woken once per batch.

A configuration that does not parse, that clashes with another customer's (the same GRE
key, overlapping prefixes: :class:`~.config.Claims`, kept beside the customers), or that
the kernel refuses, leaves that customer's previous rules in place and is counted
(``errors``); nothing else stops.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from anyedge.adapters import netns
from anyedge.store import Batch, Change, Replica, Watch

from . import plumbing, ruleset
from .config import PREFIX, Claims, Customer, customer_of
from .libnft import NftError
from .nsnft import NamespaceNft

log = logging.getLogger(__name__)

Listener = Callable[[str, "Customer | None", str], None]  # (customer id, config, namespace)


@dataclass
class _State:
    ns: str
    customer: Customer
    nft: NamespaceNft
    seq: int = 0
    made: bool = False  # a batch went in: the table and chain exist, ``customer`` is applied


@dataclass
class Applied:
    """When each customer's configuration of sequence number ``seq`` went into the kernel."""

    seq: int
    at: float  # time.monotonic()


@dataclass
class Stats:
    applied: int = 0
    errors: int = 0
    last_error: str = ""
    by_customer: dict[str, Applied] = field(default_factory=dict)


class Applier:
    """Keep each customer's namespace and firewall on this server in step with the store.

    ``host``: the server's namespace (``None``: the one this process is in).
    ``ns_prefix``: customers' namespaces are named ``ns_prefix + customer id``.
    ``listeners`` are called (in the worker thread) after a customer's namespace is made
    or changed, and before it is removed (config ``None``) — the GRE forwarder uses it.
    """

    def __init__(
        self, replica: Replica, *, host: str | None = None, ns_prefix: str = "mt-"
    ) -> None:
        self.replica = replica
        self.host = host
        self.ns_prefix = ns_prefix
        self.stats = Stats()
        self.listeners: list[Listener] = []
        self._state: dict[str, _State] = {}
        self._claims = Claims()
        self._q: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._watch: Watch | None = None

    # -- running -----------------------------------------------------------------

    def start(self) -> Applier:
        self._watch = self.replica.watch(PREFIX, callback=self._q.put)
        seq = self.replica.seq
        current = self.replica.items(PREFIX)
        changes = tuple(Change(k, v) for k, v in sorted(current.items()))
        # whatever the store held before we watched; a batch seen again is harmless
        self._q.put(Batch(seq, changes))
        self._thread = threading.Thread(target=self._run, name="transit-applier", daemon=True)
        self._thread.start()
        return self

    def close(self, remove: bool = True) -> None:
        """Stop; with ``remove`` also delete every customer namespace this applier made."""
        if self._watch is not None:
            self._watch.close()
        self._q.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
        for cid in list(self._state):
            st = self._state.pop(cid)
            st.nft.close()
            if remove:
                self._notify(cid, None, st.ns)
                plumbing.destroy(self.host, st.ns, cid, st.customer.prefixes)

    def __enter__(self) -> Applier:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace(self, customer_id: str) -> str:
        return self.ns_prefix + customer_id

    def wait(self, customer_id: str, seq: int, timeout: float = 10.0) -> bool:
        """Block until ``customer_id``'s configuration of ``seq`` (or later) is applied."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done(customer_id, seq), timeout)

    def _done(self, cid: str, seq: int) -> bool:
        a = self.stats.by_customer.get(cid)
        return a is not None and a.seq >= seq

    # -- the worker ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            b = self._q.get()
            if b is None:
                return
            latest: dict[str, tuple[int, bytes | None]] = {}
            stop = False
            while b is not None:
                for c in b.changes:
                    latest[c.key[len(PREFIX) :]] = (b.seq, c.value)
                try:
                    b = self._q.get_nowait()
                except queue.Empty:
                    break
                if b is None:
                    stop = True
            for cid, (seq, value) in latest.items():
                self._apply(cid, seq, value)
            # waiters are woken once per batch, not once per customer: a change to a
            # hundred customers would otherwise hand the GIL to them a hundred times
            with self._cond:
                self._cond.notify_all()
            if stop:
                return

    def _apply(self, cid: str, seq: int, value: bytes | None) -> None:
        try:
            if value is None:
                self._remove(cid)
            else:
                self._put(cid, customer_of(value))
        except (ValidationError, NftError, netns.NetnsError, OSError, ValueError) as e:
            with self._cond:
                self.stats.errors += 1
                self.stats.last_error = f"{cid} (seq {seq}): {e}"
            log.error("transit: customer %s, seq %d: %s", cid, seq, e)
            return
        with self._cond:
            self.stats.applied += 1
            old = self.stats.by_customer.get(cid)
            # the starting snapshot may carry a lower number than a batch seen before it
            seq = max(seq, old.seq) if old is not None else seq
            self.stats.by_customer[cid] = Applied(seq, time.monotonic())

    def _put(self, cid: str, customer: Customer) -> None:
        st = self._state.get(cid)
        if st is not None and st.made and st.customer == customer:
            return  # the same configuration written again: the kernel has it already
        why = self._claims.conflict(customer)
        if why is not None:
            raise ValueError(why)
        ns = self.namespace(cid)
        if st is None:
            if netns.exists(ns):  # left by an applier that died: start clean
                plumbing.remove(self.host, ns)
            plumbing.create(self.host, ns, cid)
            st = _State(ns, customer, NamespaceNft(ns))
            old: tuple[str, ...] = ()
            self._state[cid] = st
            self._claims.hold(customer)
            present: list[str] = []
        elif st.made:
            old = st.customer.prefixes
            present = ruleset.limit_sets(st.customer)
        else:  # its first batch failed: nothing of the last configuration is in place
            old, present = (), []
        st.nft.run(ruleset.batch(customer, present))
        if old != customer.prefixes:
            plumbing.set_prefixes(self.host, ns, cid, old, customer.prefixes)
        st.customer = customer
        st.made = True
        self._claims.hold(customer)
        self._notify(cid, customer, ns)

    def _remove(self, cid: str) -> None:
        st = self._state.pop(cid, None)
        if st is None:
            return
        self._claims.release(cid)
        self._notify(cid, None, st.ns)
        st.nft.close()
        plumbing.destroy(self.host, st.ns, cid, st.customer.prefixes)

    def _notify(self, cid: str, customer: Customer | None, ns: str) -> None:
        for f in self.listeners:
            try:
                f(cid, customer, ns)
            except Exception:  # a listener's failure is its own, not the firewall's
                log.exception("transit: listener failed for %s", cid)
