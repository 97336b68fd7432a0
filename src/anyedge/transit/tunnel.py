"""Anycast GRE in user space: one raw socket for protocol 47, one TUN per customer.

The kernel here has no GRE module, so the server does GRE itself.  A
:class:`GreForwarder` holds, in the server's namespace, a raw socket for IP protocol 47
bound to each anycast tunnel endpoint (one IPv4 address, and one IPv6 address for
customers whose router has only IPv6: GRE over IPv6, RFC 7676), and for each customer
the TUN device ``gre0``
of the customer's namespace (:mod:`.plumbing` routes the customer's prefixes into it,
after its firewall).  One thread waits on all of them:

- TUN readable: a packet that passed the customer's firewall; it gets a GRE header
  with the customer's key and goes out of the raw socket of the router's family to the
  customer's router (the kernel adds the outer header, source the anycast endpoint).
- a raw socket readable: a GRE packet from some customer's router; the key says whose,
  and the inner packet is written into that customer's TUN, from where the customer's
  namespace routes it back out to the Internet.

Every decision is :mod:`.gre`'s; what is dropped is counted by reason and customer in
Prometheus counters (``anyedge_transit_gre_dropped_total``), what passes by direction
(``anyedge_transit_gre_packets_total``).  The forwarder learns customers from the
applier (:meth:`GreForwarder.on_customer` is an :class:`~.applier.Applier` listener).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import socket
import threading

from prometheus_client import CollectorRegistry, Counter

from anyedge.adapters import netns

from ..adapters.tuntap import open_tun, wait_ready
from .config import Customer
from .gre import PROTO_GRE, Drop, Tunnels
from .plumbing import TUN


def by_family(endpoints: str | tuple[str, ...]) -> dict[int, str]:
    """{address family: endpoint}: at most one IPv4 and one IPv6 address."""
    out: dict[int, str] = {}
    for e in (endpoints,) if isinstance(endpoints, str) else endpoints:
        a = ipaddress.ip_address(e)
        family = socket.AF_INET if a.version == 4 else socket.AF_INET6
        if family in out:
            raise ValueError(f"two IPv{a.version} endpoints: {out[family]} and {a}")
        out[family] = str(a)
    if not out:
        raise ValueError("no endpoint")
    return out


_BURST = 64  # packets read from one descriptor before looking at the others


class GreForwarder:
    """Encapsulate towards customers and decapsulate from them, on ``endpoint``: one
    address, or one IPv4 and one IPv6 address."""

    def __init__(
        self,
        endpoint: str | tuple[str, ...],
        host: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.endpoints = by_family(endpoint)
        self.endpoint = next(iter(self.endpoints.values()))
        self.registry = registry if registry is not None else CollectorRegistry()
        self.packets = Counter(
            "anyedge_transit_gre_packets",
            "GRE packets forwarded",
            ["customer", "direction"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "anyedge_transit_gre_dropped",
            "GRE packets dropped",
            ["customer", "reason"],
            registry=self.registry,
        )
        self.tunnels = Tunnels()
        self._sel = selectors.DefaultSelector()
        self._socks: dict[int, socket.socket] = {}
        try:
            for family, addr in self.endpoints.items():
                with netns.entered(host):
                    sock = socket.socket(family, socket.SOCK_RAW, PROTO_GRE)
                self._socks[family] = sock
                sock.bind((addr, 0))
                sock.setblocking(False)
                self._sel.register(sock, selectors.EVENT_READ, family)
        except OSError:
            for sock in self._socks.values():
                sock.close()
            self._sel.close()
            raise
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._tuns: dict[str, int] = {}
        self._pending: list[tuple[str, Customer | None, str]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- customers come and go (called from the applier's thread) --------------------

    def on_customer(self, customer_id: str, customer: Customer | None, ns: str) -> None:
        """Attach to (or let go of) a customer's TUN; an :class:`Applier` listener."""
        fd = None
        if customer is not None and customer_id not in self._tuns:
            with netns.entered(ns):
                fd = open_tun(TUN)
            wait_ready(ns, TUN)
        with self._lock:
            self._pending.append((customer_id, customer, ns))
            if fd is not None:
                self._tuns[customer_id] = fd
                self._pending.append((customer_id, customer, "+fd"))
        os.write(self._wake_w, b"x")
        if customer is None:  # the namespace is about to go: wait until the fd is let go
            self._sync()

    def _sync(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._apply_pending()
            return
        done = threading.Event()
        with self._lock:
            self._pending.append(("", None, "sync"))
            self._done = done
        os.write(self._wake_w, b"x")
        done.wait(5)

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for cid, customer, what in pending:
            if what == "sync":
                self._done.set()
            elif what == "+fd":
                self._sel.register(self._tuns[cid], selectors.EVENT_READ, cid)
            elif customer is not None:
                self.tunnels.set(customer)
            else:
                self.tunnels.remove(cid)
                fd = self._tuns.pop(cid, None)
                if fd is not None:
                    self._sel.unregister(fd)
                    os.close(fd)

    # -- running ------------------------------------------------------------------

    def start(self) -> GreForwarder:
        self._thread = threading.Thread(target=self._run, name="transit-gre", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=10)
        for fd in self._tuns.values():
            os.close(fd)
        self._tuns.clear()
        self._sel.close()
        for sock in self._socks.values():
            sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> GreForwarder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select():
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    self._apply_pending()
                elif key.data == socket.AF_INET:
                    self._from_routers()
                elif key.data == socket.AF_INET6:
                    self._from_routers6()
                elif key.data in self._tuns:
                    self._to_customer(key.data, key.fd)

    def _count(self, passed: dict[tuple[str, str], int], drops: dict[Drop, int]) -> None:
        # counted per burst, not per packet: a labelled counter's inc() takes a lock
        for (cid, direction), n in passed.items():
            self.packets.labels(cid, direction).inc(n)
        for d, n in drops.items():
            self.dropped.labels(d.customer, d.reason).inc(n)

    def _from_routers(self) -> None:
        passed: dict[tuple[str, str], int] = {}
        drops: dict[Drop, int] = {}
        recv, decap, deliver = (
            self._socks[socket.AF_INET].recv,
            self.tunnels.decapsulate,
            self._deliver,
        )
        try:
            for _ in range(_BURST):
                try:
                    packet = recv(65535)
                except BlockingIOError:
                    return
                deliver(decap(packet), passed, drops)
        finally:
            self._count(passed, drops)

    def _from_routers6(self) -> None:
        passed: dict[tuple[str, str], int] = {}
        drops: dict[Drop, int] = {}
        recvfrom, decap = self._socks[socket.AF_INET6].recvfrom, self.tunnels.decapsulate6
        try:
            for _ in range(_BURST):
                try:
                    packet, addr = recvfrom(65535)
                except BlockingIOError:
                    return
                self._deliver(decap(addr[0], packet), passed, drops)
        finally:
            self._count(passed, drops)

    def _deliver(
        self,
        out: tuple[str, bytes] | Drop,
        passed: dict[tuple[str, str], int],
        drops: dict[Drop, int],
    ) -> None:
        """Write a decapsulated packet into its customer's TUN, or count why not."""
        if isinstance(out, Drop):
            drops[out] = drops.get(out, 0) + 1
            return
        cid, inner = out
        fd = self._tuns.get(cid)
        try:
            if fd is None:
                raise OSError
            os.write(fd, inner)
        except OSError:
            d = Drop("tun_write" if fd is not None else "unknown_customer", cid)
            drops[d] = drops.get(d, 0) + 1
            return
        k = (cid, "from_customer")
        passed[k] = passed.get(k, 0) + 1

    def _to_customer(self, cid: str, fd: int) -> None:
        passed = 0
        drops: dict[Drop, int] = {}
        socks, encap = self._socks, self.tunnels.encapsulate
        try:
            for _ in range(_BURST):
                try:
                    inner = os.read(fd, 65535)
                except BlockingIOError:
                    return
                out = encap(cid, inner)
                if isinstance(out, Drop):
                    drops[out] = drops.get(out, 0) + 1
                    continue
                router, gre = out
                sock = socks.get(socket.AF_INET6 if ":" in router else socket.AF_INET)
                try:
                    if sock is None:  # no endpoint of the router's family here
                        raise OSError
                    sock.sendto(gre, (router, 0))
                except OSError:
                    d = Drop("send", cid)
                    drops[d] = drops.get(d, 0) + 1
                    continue
                passed += 1
        finally:
            self._count({(cid, "to_customer"): passed} if passed else {}, drops)
