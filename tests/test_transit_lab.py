"""Magic Transit end to end: two sites, a customer network behind a GRE router, attack
and clean traffic, and a site withdrawn under the customer's feet (marker ``lab``).

The Internet is one namespace, ``inet``, with a real FRR router (AS 65001, one best
path).  Each site is a server namespace with its own store replica, applier, GRE
forwarder and BGP speaker (BIRD, AS 64500); an :class:`Announcer` makes the speaker
announce the anycast GRE endpoint (192.0.2.100/32) and every customer's prefix, here
203.0.113.0/24, read from the store.  Withdrawing a site is ``Announcer.withdraw()``.  The
customer's router, ``rtr`` (198.51.100.2), keeps one GRE tunnel to the anycast address,
spoken by scapy in a thread of the test (an implementation that is not ours); behind it
the customer's host 203.0.113.10 answers UDP on port 7000.  Two clients send: a good
one to port 7000, attackers from 100.64.66.0/24 to port 7000 and port 53.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import GRE, IP

from anyedge.adapters import netns
from anyedge.adapters.bgp.base import Neighbor, Route, SpeakerConfig
from anyedge.adapters.bgp.bird import Bird
from anyedge.adapters.bgp.frr import Frr, RouterNeighbor
from anyedge.adapters.tuntap import open_tun, wait_ready
from anyedge.store import EmbeddedReplica, EmbeddedWriter
from anyedge.transit import ruleset
from anyedge.transit.announce import Announcer
from anyedge.transit.applier import Applier
from anyedge.transit.config import Customer, put_customer
from anyedge.transit.nsnft import NamespaceNft
from anyedge.transit.tunnel import GreForwarder
from transit_support import why_not

pytestmark = pytest.mark.lab

ANYCAST, ROUTER, HOST, KEY = "192.0.2.100", "198.51.100.2", "203.0.113.10", 0x5EED
GOOD, BAD = "100.64.1.2", "100.64.66.2"
ACME = Customer.model_validate(
    {
        "id": "acme",
        "prefixes": ["203.0.113.0/24"],
        "tunnel": {"router": ROUTER, "key": KEY},
        "rules": [
            {"action": "drop", "sources": ["100.64.66.0/24"], "comment": "attackers"},
            {"action": "accept", "protocol": "udp", "ports": [7000], "comment": "service"},
        ],
        "default": "drop",
    }
)


@dataclass
class Lab:
    base: str
    sites: dict[str, str] = field(default_factory=dict)  # site -> server namespace
    appliers: dict[str, Applier] = field(default_factory=dict)
    forwarders: dict[str, GreForwarder] = field(default_factory=dict)
    announcers: dict[str, Announcer] = field(default_factory=dict)
    router: Frr | None = None

    def paths(self, prefix: str) -> int:
        """How many sites' announcements of ``prefix`` the Internet's router holds."""
        assert self.router is not None
        out = json.loads(self.router.vtysh(f"show bgp ipv4 unicast {prefix} json") or "{}")
        return len(out.get("paths", []))

    def ns(self, name: str) -> str:
        return f"{self.base}-{name}"

    def serving(self) -> set[str]:
        """The sites the Internet's router sends the customer's prefix and the GRE
        endpoint to (its kernel routes, installed by BGP)."""
        found = set()
        for prefix in ("203.0.113.0/24", ANYCAST):
            out = netns.run(self.ns("inet"), ["ip", "route", "show", prefix, "proto", "bgp"])
            for i, site in enumerate(self.sites, start=1):
                if f"via 10.255.{i}.2 " in out:
                    found.add(site)
        return found

    def delivered(self, site: str, direction: str) -> float:
        v = self.forwarders[site].registry.get_sample_value(
            "anyedge_transit_gre_packets_total", {"customer": "acme", "direction": direction}
        )
        return v or 0.0


def customer_router(ns: str, stop: threading.Event) -> threading.Thread:
    """The customer's end of the tunnel, in scapy: GRE in from the raw socket, to ``tun0``;
    ``tun0`` out (the host's replies), into GRE with the key, to the anycast address."""
    with netns.entered(ns):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
        tun = open_tun("tun0")
    assert wait_ready(ns, "tun0")

    def run() -> None:
        with raw:
            while not stop.is_set():
                for r in select.select([raw, tun], [], [], 0.1)[0]:
                    if r is raw:
                        pkt = IP(raw.recv(65535))
                        if GRE in pkt and pkt[GRE].key == KEY and pkt.src == ANYCAST:
                            os.write(tun, bytes(pkt[GRE].payload))
                    else:
                        inner = os.read(tun, 65535)
                        raw.sendto(bytes(GRE(key_present=1, key=KEY) / IP(inner)), (ANYCAST, 0))
        os.close(tun)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def echo(ns: str, stop: threading.Event) -> threading.Thread:
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 7000))

    def run() -> None:
        with s:
            while not stop.is_set():
                if select.select([s], [], [], 0.1)[0]:
                    data, peer = s.recvfrom(2048)
                    s.sendto(b"echo " + data, peer)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@contextmanager
def lab() -> Iterator[Lab]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    L = Lab(f"aetrlab{os.getpid() % 10000}{secrets.token_hex(2)}")
    stop = threading.Event()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        stack.callback(lambda: [netns.remove(n) for n in netns.listed(L.base)])
        n = L.ns
        for name in ("inet", "good", "bad", "rtr", "host"):
            netns.add(n(name))
        # clients and the customer's router on the Internet
        for i, (name, addr) in enumerate([("good", GOOD), ("bad", BAD), ("rtr", ROUTER)]):
            netns.veth(n("inet"), f"e{i}", n(name), "eth0")
            gw = addr.rsplit(".", 1)[0] + ".1"
            netns.batch(n("inet"), [f"addr add {gw}/24 dev e{i}"])
            netns.batch(n(name), [f"addr add {addr}/24 dev eth0", f"route add default via {gw}"])
        # behind the router: the customer's host; replies from it go into the tunnel
        netns.veth(n("rtr"), "lan0", n("host"), "eth0")
        netns.batch(
            n("host"), [f"addr add {HOST}/24 dev eth0", "route add default via 203.0.113.1"]
        )
        netns.batch(
            n("rtr"),
            [
                "addr add 203.0.113.1/24 dev lan0",
                "tuntap add dev tun0 mode tun",
                "link set tun0 up",
                "route add default dev tun0 table 100",
                "rule add iif lan0 lookup 100",
            ],
        )
        os.chmod(tmp, 0o755)  # FRR's daemons run as frr
        writer = EmbeddedWriter(os.path.join(tmp, "config.db"))
        stack.callback(writer.close)
        pids: list[int] = []
        stack.callback(lambda: netns.stop(pids))
        neighbors = tuple(
            RouterNeighbor(Neighbor(f"10.255.{i}.2", 64500, f"10.255.{i}.1", f"s{i}"), "customer")
            for i in (1, 2)
        )
        router = Frr(
            SpeakerConfig("r", n("inet"), Path(tmp) / "r", 65001, "10.0.1.0", ()), neighbors
        )
        for i, site in enumerate(("ams", "fra"), start=1):
            h = L.sites[site] = n(site)
            netns.add(h)
            netns.veth(n("inet"), f"s{i}", h, "inet0")
            netns.batch(n("inet"), [f"addr add 10.255.{i}.1/24 dev s{i}"])
            netns.batch(
                h,
                [
                    f"addr add 10.255.{i}.2/24 dev inet0",
                    f"addr add {ANYCAST}/32 dev lo",
                    f"route add default via 10.255.{i}.1",
                ],
            )
            replica = EmbeddedReplica(writer.address)
            stack.callback(replica.close)
            fwd = L.forwarders[site] = GreForwarder(ANYCAST, h).start()
            stack.callback(fwd.close)
            app = L.appliers[site] = Applier(replica, host=h, ns_prefix=f"{h}-")
            app.listeners.append(fwd.on_customer)
            app.start()
            stack.callback(app.close)
        pids += router.start()
        for i, site in enumerate(("ams", "fra"), start=1):
            h = L.sites[site]
            speaker = Bird(SpeakerConfig(
                site, h, Path(tmp) / site, 64500, f"10.0.0.{i}",
                (Neighbor(f"10.255.{i}.1", 65001, f"10.255.{i}.2", "inet0"),)))  # fmt: skip
            pids += speaker.start([])
            replica = L.appliers[site].replica
            # fra is the backup: its paths are one AS longer
            own = [Route(f"{ANYCAST}/32", i - 1)]
            ann = L.announcers[site] = Announcer(replica, speaker, own, prepend=i - 1)
            ann.start()
            stack.callback(ann.close)
        stack.callback(stop.set)
        customer_router(n("rtr"), stop)
        echo(n("host"), stop)
        seq = put_customer(writer, ACME)
        for app in L.appliers.values():
            assert app.wait("acme", seq)
        L.router = router
        for prefix in ("203.0.113.0/24", f"{ANYCAST}/32"):
            wait_for(lambda p=prefix: L.paths(p) == 2, 60, f"BGP: both sites announce {prefix}")
        wait_for(lambda: L.serving() == {"ams"}, 30, "BGP: the router sends to ams")
        yield L
    assert not netns.listed(L.base)


def exchange(L: Lab, n: int) -> tuple[int, list[bytes]]:
    """Attackers send ``n`` to port 53 and ``n`` to port 7000; the good client sends ``n``
    to port 7000 and gathers its echoes.  Returns (echoes, anything the attackers got)."""
    with netns.entered(L.ns("good")):
        good = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with netns.entered(L.ns("bad")):
        bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with good, bad:
        bad.bind((BAD, 0))
        for i in range(n):
            bad.sendto(b"flood", (HOST, 53))
            bad.sendto(b"flood", (HOST, 7000))
            good.sendto(f"hello {i}".encode(), (HOST, 7000))
        echoes = []
        while select.select([good], [], [], 1.0)[0]:
            echoes.append(good.recv(2048))
        leaked = []
        while select.select([bad], [], [], 0.2)[0]:
            leaked.append(bad.recv(2048))
    return len(set(echoes)), leaked


def site_counters(L: Lab, site: str) -> dict[str, int]:
    ns = NamespaceNft(L.appliers[site].namespace("acme"))
    try:
        return ruleset.counters(ns.ruleset())
    finally:
        ns.close()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out: {what}"
        time.sleep(0.2)


def test_attack_dropped_clean_delivered_and_a_withdrawn_site_changes_nothing() -> None:
    with lab() as L:
        first, other = "ams", "fra"
        echoes, leaked = exchange(L, 20)
        assert (echoes, leaked) == (20, [])
        assert site_counters(L, first) == {"attackers": 40, "service": 20, "default": 0}
        assert L.delivered(first, "to_customer") == 20
        assert L.delivered(first, "from_customer") == 20
        assert site_counters(L, other) == {"attackers": 0, "service": 0, "default": 0}

        # the serving site withdraws: the same tunnel, the same customer config, and BGP
        # now brings everything to the other site
        L.announcers[first].withdraw()
        wait_for(lambda: L.serving() == {other}, 30, f"BGP: the router sends to {other}")
        echoes, leaked = exchange(L, 20)
        assert (echoes, leaked) == (20, [])
        assert site_counters(L, other) == {"attackers": 40, "service": 20, "default": 0}
        assert L.delivered(other, "to_customer") == 20
        assert L.delivered(other, "from_customer") == 20
        assert L.delivered(first, "to_customer") == 20  # nothing more went through it
