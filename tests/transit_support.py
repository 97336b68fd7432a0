"""Helpers for the transit tests: a server namespace with a client on the Internet side,
a store and an applier, customers' TUN devices read by the test, UDP packets built by hand.

``server()`` makes, under a unique prefix: the server's namespace ``H`` (100.64.0.1/24
and 2001:db8:ffff::1/64 on ``inet0``, 192.0.2.100 and 2001:db8:a1::100 on ``lo`` as the
anycast GRE endpoints)
and the Internet side ``C`` (100.64.0.2/24 and 2001:db8:ffff::2/64, routes to ``H``),
an embedded store writer and replica, and an :class:`Applier` in ``H``.  Everything is
removed afterwards, and checked gone.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from anyedge.adapters import netns
from anyedge.adapters.tuntap import open_tun, wait_ready
from anyedge.store import EmbeddedReplica, EmbeddedWriter
from anyedge.transit.applier import Applier
from anyedge.transit.tunnel import GreForwarder

ANYCAST = "192.0.2.100"
CLIENT = "100.64.0.2"
CLIENT6 = "2001:db8:ffff::2"
ROUTER = "198.51.100.2"  # the customer router's public address
ANYCAST6 = "2001:db8:a1::100"  # the anycast GRE endpoint for IPv6-only routers
ROUTER6 = "2001:db8:fffe::2"


@dataclass
class Server:
    base: str
    host: str
    client: str
    writer: EmbeddedWriter
    replica: EmbeddedReplica
    applier: Applier
    router: str = ""  # the customer router's namespace (with gre=True)
    gre: GreForwarder | None = None

    def udp(self, family: int = socket.AF_INET) -> socket.socket:
        """A UDP socket on the Internet side."""
        with netns.entered(self.client):
            return socket.socket(family, socket.SOCK_DGRAM)

    def tun(self, customer_id: str) -> int:
        """Attach to the customer's ``gre0``: what passed its firewall, as the test reads it."""
        ns = self.applier.namespace(customer_id)
        with netns.entered(ns):
            fd = open_tun("gre0")
        assert wait_ready(ns, "gre0")
        return fd


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    from anyedge.transit.libnft import available

    return None if available() else "libnftables.so.1 is missing (apt-get install nftables)"


@contextmanager
def server(tag: str, gre: bool = False) -> Iterator[Server]:
    base = f"aetr{tag}{os.getpid() % 10000}{secrets.token_hex(2)}"
    host, client = f"{base}-h", f"{base}-c"
    tmp = tempfile.TemporaryDirectory()
    writer = replica = applier = forwarder = None
    router = f"{base}-r" if gre else ""
    try:
        netns.add(host)
        netns.add(client)
        if gre:
            netns.add(router)
        for ns in (host, client, router) if gre else (host, client):
            # no duplicate address detection: its link-local addresses stay tentative for
            # a second or two, and neighbour discovery waits on them
            netns.sysctl(ns, {f"net.ipv6.conf.{c}.accept_dad": "0" for c in ("all", "default")})
        netns.veth(host, "inet0", client, "eth0")
        netns.batch(
            host,
            [
                "addr add 100.64.0.1/24 dev inet0",
                f"addr add {ANYCAST}/32 dev lo",
                "addr add 2001:db8:ffff::1/64 dev inet0 nodad",
            ],
        )
        netns.batch(
            client,
            [
                f"addr add {CLIENT}/24 dev eth0",
                "route add default via 100.64.0.1",
                f"addr add {CLIENT6}/64 dev eth0 nodad",
                "route add default via 2001:db8:ffff::1",
            ],
        )
        writer = EmbeddedWriter(os.path.join(tmp.name, "config.db"))
        replica = EmbeddedReplica(writer.address)
        applier = Applier(replica, host=host, ns_prefix=f"{base}-")
        if gre:
            netns.veth(host, "inet1", router, "eth0")
            netns.batch(
                host,
                [
                    "addr add 198.51.100.1/24 dev inet1",
                    "addr add 2001:db8:fffe::1/64 dev inet1 nodad",
                    f"addr add {ANYCAST6}/128 dev lo",
                ],
            )
            netns.batch(
                router,
                [
                    f"addr add {ROUTER}/24 dev eth0",
                    "route add default via 198.51.100.1",
                    f"addr add {ROUTER6}/64 dev eth0 nodad",
                    "route add default via 2001:db8:fffe::1",
                ],
            )
            forwarder = GreForwarder((ANYCAST, ANYCAST6), host).start()
            applier.listeners.append(forwarder.on_customer)
        applier.start()
        yield Server(base, host, client, writer, replica, applier, router, forwarder)
    finally:
        if applier is not None:
            applier.close()
        if forwarder is not None:
            forwarder.close()
        if replica is not None:
            replica.close()
        if writer is not None:
            writer.close()
        for ns in netns.listed(base):
            netns.remove(ns)
        tmp.cleanup()
        assert not netns.listed(base)


def drain(fd: int, quiet: float = 0.3) -> list[bytes]:
    """Every packet the TUN ``fd`` gives until it has been quiet for ``quiet`` seconds."""
    out = []
    while select.select([fd], [], [], quiet)[0]:
        try:
            while True:
                out.append(os.read(fd, 65535))
        except BlockingIOError:
            pass
    return out


def udp_dports(packets: list[bytes]) -> list[tuple[str, int]]:
    """(destination address, UDP destination port) of each IPv4/UDP packet."""
    out = []
    for p in packets:
        if p[0] >> 4 == 4 and p[9] == 17:
            ihl = (p[0] & 0xF) * 4
            out.append((socket.inet_ntoa(p[16:20]), int.from_bytes(p[ihl + 2 : ihl + 4], "big")))
    return out
