"""Customers' prefixes announced by a site's real BGP speaker (marker ``lab``).

A real FRR router (AS 65001) and a site speaker (BIRD, AS 64500) in two namespaces on
one veth link.  The site announces its own anycast prefix; an :class:`Announcer` on a
store replica adds every Magic Transit customer's prefixes.  The router's kernel table
shows what the site announces: a customer written to the store appears there, a second
customer too, a removed one leaves, and withdrawing the site takes everything away.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from anyedge.adapters import netns
from anyedge.adapters.bgp.base import Neighbor, Route, SpeakerConfig
from anyedge.adapters.bgp.bird import Bird
from anyedge.adapters.bgp.frr import Frr, RouterNeighbor
from anyedge.store import EmbeddedReplica, EmbeddedWriter, dumps
from anyedge.transit.announce import Announcer, routes
from anyedge.transit.config import Customer, put_customer, remove_customer
from transit_support import why_not

SRC = Path(__file__).resolve().parent.parent / "src"

OWN = "198.51.100.0/24"
ROUTER_IP, SITE_IP = "100.64.0.1", "100.64.0.2"


def customer(cid: str, *prefixes: str) -> Customer:
    return Customer.model_validate(
        {"id": cid, "prefixes": list(prefixes), "tunnel": {"router": "192.0.2.9", "key": 1}}
    )


def test_routes_are_the_sites_then_every_customers() -> None:
    items = {
        "transit/customers/b": dumps(customer("b", "203.0.113.0/25").model_dump(mode="json")),
        "transit/customers/a": dumps(
            customer("a", "203.0.113.128/25", OWN).model_dump(mode="json")
        ),
        "transit/customers/x": b"not json",
    }
    assert routes([Route(OWN, 1)], {}) == [Route(OWN, 1)]
    # the site's own first, customers' sorted, a prefix once, a bad value left out
    assert routes([Route(OWN, 1)], items) == [
        Route(OWN, 1), Route("203.0.113.0/25"), Route("203.0.113.128/25")]  # fmt: skip


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out: {what}"
        time.sleep(0.1)


@dataclass
class Pair:
    """A real FRR router and a BIRD site speaker, peering; the store the site reads."""

    r_ns: str
    s_ns: str
    tmp: Path
    site: Bird
    writer: EmbeddedWriter

    def kernel(self) -> set[str]:
        """The prefixes the router learnt in BGP (its kernel table)."""
        out = netns.run(self.r_ns, ["ip", "route", "show", "proto", "bgp"])
        return {line.split()[0] for line in out.splitlines() if line.strip()}


@contextmanager
def router_and_site() -> Iterator[Pair]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    base = f"aetran{secrets.token_hex(3)}"
    r_ns, s_ns = f"{base}-r", f"{base}-s"
    pids: list[int] = []
    tmp = Path(tempfile.mkdtemp(prefix="aetran"))
    tmp.chmod(0o755)  # FRR's daemons run as frr
    writer = EmbeddedWriter(tmp / "config.db")
    try:
        for ns in (r_ns, s_ns):
            netns.add(ns)
        netns.veth(r_ns, "eth1", s_ns, "eth1")
        netns.batch(r_ns, [f"addr add {ROUTER_IP}/30 dev eth1"])
        netns.batch(s_ns, [f"addr add {SITE_IP}/30 dev eth1"])
        router = Frr(
            SpeakerConfig("r", r_ns, tmp / "r", 65001, "10.0.1.0", ()),
            (RouterNeighbor(Neighbor(SITE_IP, 64500, ROUTER_IP, "eth1"), "customer"),),
        )
        pids += router.start()
        site = Bird(
            SpeakerConfig("s", s_ns, tmp / "s", 64500, "10.0.0.7",
                          (Neighbor(ROUTER_IP, 65001, SITE_IP, "eth1"),))
        )  # fmt: skip
        pids += site.start([Route(OWN)])
        pair = Pair(r_ns, s_ns, tmp, site, writer)
        wait_for(lambda: pair.kernel() == {OWN}, 30, "the site's own prefix at the router")
        yield pair
    finally:
        writer.close()
        netns.stop(pids)
        for ns in (r_ns, s_ns):
            netns.remove(ns)
        shutil.rmtree(tmp, ignore_errors=True)
    assert not netns.listed(base)


@pytest.mark.lab
def test_a_sites_speaker_announces_customers_prefixes() -> None:
    with router_and_site() as pair:
        replica = EmbeddedReplica(pair.writer.address)
        announcer = Announcer(replica, pair.site, [Route(OWN)]).start()
        try:
            writer, kernel = pair.writer, pair.kernel
            put_customer(writer, customer("acme", "203.0.113.0/25"))
            wait_for(lambda: kernel() == {OWN, "203.0.113.0/25"}, 15, "acme's prefix announced")
            put_customer(writer, customer("beta", "203.0.113.128/25"))
            want = {OWN, "203.0.113.0/25", "203.0.113.128/25"}
            wait_for(lambda: kernel() == want, 15, "beta's prefix announced")
            remove_customer(writer, "acme")
            wait_for(lambda: kernel() == {OWN, "203.0.113.128/25"}, 15, "acme's prefix withdrawn")
            announcer.withdraw()
            wait_for(lambda: kernel() == set(), 15, "the site withdrawn")
            announcer.restore()
            wait_for(lambda: kernel() == {OWN, "203.0.113.128/25"}, 15, "the site back")
            assert announcer.errors == 0
        finally:
            announcer.close()
            replica.close()


@pytest.mark.lab
def test_transit_serve_drives_the_sites_running_speaker() -> None:
    """``anyedge transit serve --speaker FILE`` as a process, beside a BIRD the site runs
    already: a customer put in the store reaches the router through it; SIGTERM leaves
    the site's own prefix only.  A bad speaker file is refused (exit 2) before anything
    starts."""
    if why_not() is not None:
        pytest.skip(why_not() or "")
    with router_and_site() as pair:
        spk = pair.tmp / "speaker.yaml"
        spk.write_text(
            f"driver: bird\nnamespace: {pair.s_ns}\nworkdir: s\nasn: 64500\n"
            "router_id: 10.0.0.7\n"
            f"neighbors: [{{address: {ROUTER_IP}, asn: 65001, local_address: {SITE_IP}, "
            "interface: eth1}]\n"
            f"own: ['{OWN}']\n"
        )
        bad = pair.tmp / "bad.yaml"
        bad.write_text(spk.read_text().replace("driver: bird", "driver: quagga"))
        host = f"{pair.s_ns}h"
        netns.add(host)
        netns.batch(host, ["addr add 192.0.2.100/32 dev lo"])
        connect = f"{pair.writer.address[0]}:{pair.writer.address[1]}"
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        argv = [sys.executable, "-m", "anyedge", "transit", "serve", "--endpoint",
                "192.0.2.100", "--host-ns", host, "--ns-prefix", f"{host}-",
                "--connect", connect]  # fmt: skip
        try:
            no = subprocess.run([*argv, "--speaker", str(bad)], capture_output=True,
                                text=True, env=env, timeout=60)  # fmt: skip
            assert no.returncode == 2, no.stderr
            assert f"{bad}:1: driver" in no.stderr
            p = subprocess.Popen([*argv, "--speaker", str(spk)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
            try:
                assert p.stdout is not None
                assert json.loads(p.stdout.readline())["endpoint"] == ["192.0.2.100"]
                put_customer(pair.writer, customer("acme", "203.0.113.0/25"))
                wait_for(lambda: pair.kernel() == {OWN, "203.0.113.0/25"}, 20, "acme at the router")
                p.send_signal(signal.SIGTERM)
                assert p.wait(timeout=30) == 0
                wait_for(lambda: pair.kernel() == {OWN}, 15, "only the site's own prefix left")
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                for f in (p.stdout, p.stderr):
                    if f is not None:
                        f.close()
        finally:
            for ns in netns.listed(host):
                netns.remove(ns)
