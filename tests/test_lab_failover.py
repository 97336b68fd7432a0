"""Withdrawal through every kind of BGP speaker, measured with real probes.

``tests/data/lab4.yaml`` has four sites, one per speaker kind (FRR, BIRD, GoBGP,
ExaBGP), each the home site of one client.  Withdrawing a site's prefix through its own
speaker must move its client to the site the routing model predicts within 5 s, with
probes lost only while routes move, and announcing it again must bring the client back.
BFD must watch the sessions whose two ends run it (FRR, BIRD), and a site that goes
silent must be dropped by BFD where it runs and by the hold timer where it does not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from anyedge.adapters import nft
from anyedge.lab import build
from anyedge.lab.compare import predicted
from anyedge.lab.failover import measure
from anyedge.lab.measure import Announcer, dominant, probe_all
from lab_support import DATA, RunningLab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

INTERVAL = 0.01  # one probe every 10 ms


@pytest.fixture(scope="module")
def lab4() -> Iterator[RunningLab]:
    with running_lab(DATA / "lab4.yaml") as lab:
        yield lab


@pytest.mark.parametrize(
    ("site", "speaker", "client"),
    [("CHC", "frr", "c1"), ("AKL", "bird", "c2"), ("SYD", "gobgp", "c3"), ("SIN", "exabgp", "c4")],
)
def test_withdrawal_moves_clients_within_5_s(
    lab4: RunningLab, site: str, speaker: str, client: str
) -> None:
    assert str(lab4.plan.site_node(site).speaker) == speaker
    assert predicted(lab4.world)[client] == site
    moved = measure(lab4.plan, lab4.directory, site, interval=INTERVAL)
    [m] = [m for m in moved if m.client == client]
    assert m.moved_to == predicted(lab4.world, (site,))[client]
    assert m.seconds is not None
    assert m.seconds < 5.0
    # probes are lost only while routes move, not before or after
    assert m.lost * INTERVAL <= m.seconds + 1.0, (m.lost, m.seconds)
    # announced again, the client is back at its site
    assert dominant(probe_all(lab4.plan, [client], flows=10)[client]) == site


SILENCE = """table inet silence {
  chain input { type filter hook input priority -300; policy drop; }
  chain output { type filter hook output priority -300; policy drop; }
}
"""


def test_bfd_watches_the_sessions_where_both_ends_run_it(lab4: RunningLab) -> None:
    plan, d = lab4.plan, lab4.directory
    for site, router, bfd in (("chc", "isp1", True), ("akl", "isp2", True), ("syd", "isp3", False)):
        peers = build.router_of(plan, plan.node(router), d).bfd_peers()
        address = plan.node(site).bgp_ports[0].ip
        if bfd:
            assert peers.get(address) == "up", (site, peers)
        else:
            assert address not in peers, (site, peers)
    # routers watch each other too
    t1 = build.router_of(plan, plan.node("t1"), d).bfd_peers()
    assert sorted(t1.values()) == ["up"] * 4


@pytest.mark.parametrize(
    ("site", "router", "reason"), [("akl", "isp2", "BFD"), ("syd", "isp3", "Hold Timer")]
)
def test_a_silent_site_is_dropped_by_bfd_or_by_the_hold_timer(
    lab4: RunningLab, site: str, router: str, reason: str
) -> None:
    """A site that goes silent (a hung machine: every packet dropped) sends no
    withdrawal; its router drops the session when BFD says so (BIRD runs BFD) or when
    the hold timer expires (GoBGP has no BFD)."""
    plan, d = lab4.plan, lab4.directory
    node = plan.node(site)
    frr = build.router_of(plan, plan.node(router), d)
    address = node.bgp_ports[0].ip
    nft.apply(node.namespace, SILENCE)
    try:
        deadline = time.monotonic() + 15
        while address in frr.received() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert address not in frr.received(), "the router never dropped the silent site"
        info = json.loads(frr.vtysh(f"show ip bgp neighbors {address} json"))[address]
        assert reason.lower() in str(info.get("lastNotificationReason", "")).lower(), info
    finally:
        nft.apply(node.namespace, "table inet silence {}\ndelete table inet silence\n")
    ann = Announcer(plan, d)
    code = str(node.site)
    ann.set(code, ann.routes(code))
    ann.settle(timeout=60)
    client = {"akl": "c2", "syd": "c3"}[site]
    assert dominant(probe_all(plan, [client], flows=10)[client]) == code
