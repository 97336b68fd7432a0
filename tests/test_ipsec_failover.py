"""Anycast IPsec across sites: two sites of two edge servers each, every server a
replica of the store.  strongSwan makes its one IKE exchange with the server the anycast
route leads to (site a), and 20 more handshakes of the in-process initiator follow; every
Child SA is on every server of every site, and the time from IKE_AUTH to installed is
measured per server.  Then site a is withdrawn (its processes end, the routes move to
site b): the tunnel's ping and TCP traffic go on through site b, which had seen no IKE;
site b answers strongSwan's Child SA rekey (traffic after it) and its delete of the IKE
SA, from the IKE SA it adopted from the store."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyedge.transit.ipsec_xfrm import probe
from ipsec_support import AnycastIpsecLab, handshakes, ping, tcp_stream

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        shutil.which("swanctl") is None, reason="strongSwan (swanctl, charon) not installed"
    ),
]
HANDSHAKES = 20


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[AnycastIpsecLab]:
    (tmp_path / "ipsec").mkdir()
    lab = AnycastIpsecLab(tmp_path / "ipsec", {"a": 2, "b": 2})
    try:
        lab.up()
        lab.start_edges()
        lab.start_charon()
        yield lab
    finally:
        lab.down()


def _site_status(lab: AnycastIpsecLab, site: str, pred, timeout: float = 10.0) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    """The site's servers' status files once ``pred`` holds of them (they are rewritten
    at most five times a second)."""
    end = time.monotonic() + timeout
    while True:
        got = [lab.status_of(e) for e in lab.site_edges(site)]
        if all(got) and pred(got):
            return got
        if time.monotonic() > end:
            raise AssertionError(f"site {site} status never matched: {got}")
        time.sleep(0.05)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_every_server_of_every_site_then_failover_without_new_ike(
    lab: AnycastIpsecLab,
) -> None:
    out = lab.swanctl("--initiate", "--child", "net")
    assert "CHILD_SA net{1} established" in out
    assert ping(lab.ns["hc"], "198.51.100.10", 1)
    assert ping(lab.ns["he"], "203.0.113.10", 1)
    spis = {str(s) for s in handshakes(lab.ns["c"], HANDSHAKES)}
    assert len(spis) == HANDSHAKES

    # every SA (strongSwan's and the 20) on every server; IKE only ever at one server
    statuses = {
        e: lab.wait_edge(e, lambda s: len(s["sas"]) == HANDSHAKES + 1 and spis <= set(s["sas"]))
        for e in lab.edges
    }
    (swan,) = set(statuses["b1"]["sas"]) - spis
    ike_at = [e for e, s in statuses.items() if s["ike"]["received"]]
    assert len(ike_at) == 1
    assert ike_at[0] in lab.site_edges("a")
    delays = {
        e: [sa["installed"] - sa["created"] for sa in s["sas"].values()]
        for e, s in statuses.items()
    }
    for e, d in sorted(delays.items()):
        print(f"{e}: IKE_AUTH -> installed, {len(d)} SAs: p99 {_p99(d) * 1000:.1f} ms")
    everywhere = [x for d in delays.values() for x in d]
    assert _p99(everywhere) < 1.0  # the bound: usable everywhere within a second

    # a kernel without ESP (this lab's) is reported, and ESP stays in user space
    plane = statuses["a1"]["dataplane"]
    found = probe()
    assert plane["kernel_esp"] == found.esp
    if not found.esp:
        assert plane["inbound"] == "user"
        assert found.reason in lab.log_of("a1")

    lab.withdraw("a", to="b")
    assert ping(lab.ns["hc"], "198.51.100.10", 2)
    assert ping(lab.ns["he"], "203.0.113.10", 2)
    data = tcp_stream(lab.ns["he"], lab.ns["hc"], "198.51.100.10", 256 * 1024)
    assert len(data) == 256 * 1024
    site_b = _site_status(lab, "b", lambda ss: sum(s["esp"]["decrypted"] for s in ss) >= 2
                          and sum(s["esp"]["encrypted"] for s in ss) >= 2)  # fmt: skip
    assert all(s["ike"]["received"] == 0 for s in site_b)  # no new IKE exchange
    assert all(s["esp"]["replayed"] == 0 and s["esp"]["bad_icv"] == 0 for s in site_b)
    sas = lab.swanctl("--list-sas")
    assert "edge: #1, ESTABLISHED" in sas
    assert "net: #1," in sas

    # site b answers the rekey and the delete from the IKE SA it adopted
    lab.swanctl("--rekey", "--child", "net")
    for e in lab.site_edges("b"):  # the new SA in, the old one out (strongSwan deleted it)
        lab.wait_edge(e, lambda s: swan not in s["sas"] and len(s["sas"]) == HANDSHAKES + 1)
    assert ping(lab.ns["hc"], "198.51.100.10", 3)
    assert ping(lab.ns["he"], "203.0.113.10", 3)
    sas = lab.swanctl("--list-sas")
    assert "net: #2," in sas
    assert "edge: #1, ESTABLISHED" in sas
    lab.swanctl("--terminate", "--ike", "edge")
    assert "edge" not in lab.swanctl("--list-sas")
    lab.wait_edge("b1", lambda s: len(s["sas"]) == HANDSHAKES and s["established"] == HANDSHAKES)
