"""``anyedge mtu``: the IPv6 MTU post's figures from its published MSS table
(docs/examples/ipv6-mss-2019.csv), pcap input through dpkt, bad input (exit 2, one
line naming the file and place), and a route MTU set in a namespace of our own."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

from anyedge.adapters import netns
from anyedge.edge.mtu import Samples, read_csv, read_pcap, recommend, set_route_mtu

ROOT = Path(__file__).resolve().parent.parent
POST = ROOT / "docs" / "examples" / "ipv6-mss-2019.csv"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "anyedge", *args], capture_output=True, text=True, env=env
    )


def test_the_posts_figures() -> None:
    s = read_csv(POST)
    assert round(100 * s.coverage(1400), 1) == 93.2  # "with 1400 ... 93.2 %"
    assert round(100 * s.coverage(1362 + 60), 1) == 87.7  # "87.7 % ... MTU >= 1422"
    assert round(100 * s.share(1440), 2) == 54.31  # MSS 1440: 54.31 % of connections
    assert round(100 * s.coverage(1450)) == 75  # "75 % had MTU >= 1450"
    assert recommend(s, 0.93) == 1400  # the value the post chose
    assert recommend(s, 0.999) == 1280
    assert recommend(s, 0.5) == 1500


def test_coverage_curve_falls_as_the_mtu_grows() -> None:
    curve = read_csv(POST).curve()
    assert [c for _, c in curve] == sorted((c for _, c in curve), reverse=True)
    assert curve[0] == (1260, 1.0)


def test_cli_json() -> None:
    r = _cli("mtu", "choose", str(POST), "--at", "1400", "--at", "1422", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["recommended_mtu"] == 1400
    assert doc["coverage"]["1400"] == pytest.approx(0.9323)
    assert doc["coverage"]["1422"] == pytest.approx(0.877)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("size,count\n1440,3\n", "header"),
        ("mss,count\n1440,3\nabc,2\n", "row 2"),
        ("mss,count\n70000,1\n", "row 1"),
    ],
)
def test_bad_csv_exits_2_naming_the_place(tmp_path: Path, text: str, where: str) -> None:
    f = tmp_path / "mss.csv"
    f.write_text(text)
    r = _cli("mtu", "choose", str(f))
    assert r.returncode == 2
    assert r.stderr.startswith(f"anyedge: error: {f}: {where}:")
    assert r.stdout == ""


def _pcap(path: Path, mss_values: list[int], family: int) -> None:
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f, linktype=dpkt.pcap.DLT_EN10MB)
        for i, mss in enumerate(mss_values):
            tcp = dpkt.tcp.TCP(
                sport=40000 + i,
                dport=443,
                flags=dpkt.tcp.TH_SYN,
                opts=b"\x02\x04" + mss.to_bytes(2),
            )
            tcp.off = 6
            if family == 6:
                ip: dpkt.Packet = dpkt.ip6.IP6(nxt=6, hlim=64, data=tcp, plen=len(bytes(tcp)))
                ip.src = bytes(15) + b"\x01"
                ip.dst = bytes(15) + b"\x02"
                etype = dpkt.ethernet.ETH_TYPE_IP6
            else:
                ip = dpkt.ip.IP(p=6, data=tcp, src=b"\x01\x02\x03\x04", dst=b"\x05\x06\x07\x08")
                etype = dpkt.ethernet.ETH_TYPE_IP
            w.writepkt(bytes(dpkt.ethernet.Ethernet(type=etype, data=ip)), ts=i)
        # a SYN-ACK (the server's MSS) is not a client sample
        synack = dpkt.tcp.TCP(flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, opts=b"\x02\x04\x05\xb4")
        synack.off = 6
        ip4 = dpkt.ip.IP(p=6, data=synack, src=b"\x05\x06\x07\x08", dst=b"\x01\x02\x03\x04")
        w.writepkt(bytes(dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip4)))


def test_pcap_syns(tmp_path: Path) -> None:
    f = tmp_path / "syns.pcap"
    _pcap(f, [1440, 1440, 1380, 1220], 6)
    s = read_pcap(f, 6)
    assert s.total == 4
    assert s.share(1440) == 0.5
    assert s.coverage(1440) == 0.75  # 1380 + 60 = 1440
    g = tmp_path / "syns4.pcap"
    _pcap(g, [1460, 1400], 4)
    assert read_pcap(g, 4).total == 2  # the SYN-ACK left out
    r = _cli("mtu", "choose", str(f), "--pcap", "--target", "0.75", "--json")
    assert json.loads(r.stdout)["recommended_mtu"] == 1440


def test_pcap_without_syns_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "syns.pcap"
    _pcap(f, [1460], 4)
    r = _cli("mtu", "choose", str(f), "--pcap")  # IPv6 asked, only IPv4 there
    assert r.returncode == 2
    assert "no IPv6 SYN" in r.stderr


def test_samples_of_pairs() -> None:
    s = Samples.of({1440: 3, 1220: 1, 1300: 0})
    assert list(s.mss) == [1220, 1440]
    assert s.coverage(1500) == 0.75


@pytest.mark.lab
def test_route_mtu_set_in_a_namespace() -> None:
    ns = f"aemtu-{secrets.token_hex(3)}"
    try:
        netns.add(ns)
        netns.veth(ns, "eth0", ns, "eth1")
        netns.batch(
            ns, ["addr add 2001:db8:9::1/64 dev eth0 nodad", "route add default via 2001:db8:9::2"]
        )
        shown = set_route_mtu("default", 1400, 6, ns)
        assert "mtu 1400" in shown
        assert "via 2001:db8:9::2" in shown
        r = _cli("mtu", "set", "--mtu", "1420", "--netns", ns)
        assert r.returncode == 0
        assert "mtu 1420" in r.stdout
        r = _cli("mtu", "set", "--mtu", "1420", "--netns", ns, "--dest", "2001:db8:77::/48")
        assert r.returncode == 2
        assert "--dest" in r.stderr
    finally:
        netns.remove(ns)
    assert not netns.exists(ns)


def test_the_docs_example_prints_what_the_docs_show() -> None:
    import re

    doc = (ROOT / "docs" / "pmtud.md").read_text()
    block = re.search(r"```sh\n(anyedge mtu choose .*?)\n```", doc, flags=re.S)
    assert block is not None
    command, *shown = block.group(1).splitlines()
    r = _cli(*command.split()[1:])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [line.removeprefix("# ") for line in shown]
