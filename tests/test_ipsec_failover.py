"""Anycast IPsec failover: strongSwan makes its one IKE exchange with the edge server the
anycast route leads to; the Child SA and the IKE SA go through the store to the other
edge server; that server is withdrawn (its process ends, the routes move) and the
tunnel's ping and TCP traffic go on through the other one, with no new IKE exchange;
the other one also answers strongSwan's Child SA rekey and its delete of the IKE SA."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipsec_support import AnycastIpsecLab, ping, tcp_stream

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        shutil.which("swanctl") is None, reason="strongSwan (swanctl, charon) not installed"
    ),
]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[AnycastIpsecLab]:
    (tmp_path / "ipsec").mkdir()
    lab = AnycastIpsecLab(tmp_path / "ipsec")
    try:
        lab.up()
        lab.start_edges()
        lab.start_charon()
        yield lab
    finally:
        lab.down()


def test_withdrawn_site_tunnel_goes_on_without_new_ike(lab: AnycastIpsecLab) -> None:
    out = lab.swanctl("--initiate", "--child", "net")
    assert "CHILD_SA net{1} established" in out
    assert ping(lab.ns["hc"], "198.51.100.10", 1)
    assert ping(lab.ns["he"], "203.0.113.10", 1)
    e1 = lab.wait_edge("e1", lambda s: s["established"] == 1 and len(s["sas"]) == 1)
    (spi,) = e1["sas"]
    e2 = lab.wait_edge("e2", lambda s: spi in s["sas"])
    assert e2["ike"]["received"] == 0  # edge2 never saw IKE
    sa = e2["sas"][spi]
    assert sa["installed"] - sa["created"] < 1.0  # usable on the other server within a second

    lab.withdraw_edge1()
    assert ping(lab.ns["hc"], "198.51.100.10", 2)
    assert ping(lab.ns["he"], "203.0.113.10", 2)
    data = tcp_stream(lab.ns["he"], lab.ns["hc"], "198.51.100.10", 256 * 1024)
    assert len(data) == 256 * 1024
    e2 = lab.wait_edge("e2", lambda s: s["esp"]["decrypted"] >= 2 and s["esp"]["encrypted"] >= 2)
    assert e2["ike"]["received"] == 0
    assert e2["esp"]["replayed"] == 0
    assert e2["esp"]["bad_icv"] == 0
    sas = lab.swanctl("--list-sas")
    assert "edge: #1, ESTABLISHED" in sas
    assert "net: #1," in sas
