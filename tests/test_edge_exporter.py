"""The edge's Prometheus exporter (``anyedge.edge.exporter``) and dropwatch
(``bpf/dropwatch.bpf.c``): counters read from the BPF maps at scrape time, scraped
over HTTP on 127.0.0.1 with urllib and parsed with prometheus-client's own parser.

L4Drop and the balancer are run on hand-built frames with ``BPF_PROG_TEST_RUN``, so
every exported number is known exactly.  Dropwatch counts drops of the whole machine,
so its tests provoke drops of a known reason in namespaces of their own and check that
reason's counter rose by at least as many (other drops may happen meanwhile).  Kernel
tests need root, clang, bpftool and a kernel with BTF; where something is missing they
are skipped with the reason.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from anyedge.adapters import netns
from anyedge.balance import Table, flow_hash
from anyedge.edge import build
from anyedge.edge.balancer import Balancer
from anyedge.edge.dropwatch import MAX_REASONS, OTHER, Dropwatch, btf_enum, reason_names
from anyedge.edge.exporter import EdgeCollector, Server, serve
from anyedge.edge.l4drop import L4Drop
from anyedge.edge.libbpf import BpfError
from anyedge.edge.rules import parse_rules
from edge_netns import ADDR_A, ADDR_B, veth_pair
from edge_packets import ACK, SYN, ipv4, tcp, tcp4, udp, udp4

RULES = """\
rules:
  - name: monitoring
    action: pass
    source: 203.0.113.250/32
  - name: syn-flood
    protocol: tcp
    source: 198.51.100.0/24
    tcp_flags: SYN !ACK
  - name: memcached-reflection
    protocol: udp
    source_ports: 11211
    payload: {offset: 8, text: "VALUE "}
"""
VIP = "203.0.113.10"
MACS = [f"02:00:5e:00:aa:{i:02x}" for i in range(4)]
MEMCACHED = b"\x00\x01\x00\x00\x00\x01\x00\x00VALUE k 0 4096\r\n" + b"x" * 64

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "BPF programs need root (CAP_BPF and CAP_NET_ADMIN)"
    lacking = build.missing_tools()
    return "cannot build BPF programs, missing: " + ", ".join(lacking) if lacking else None


def scrape(server: Server) -> Samples:
    """GET /metrics over HTTP, parsed: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(server.url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _of(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@pytest.fixture
def served() -> Iterator[Callable[[EdgeCollector], Server]]:
    """Serve a collector on 127.0.0.1 (a free port); every server closed at the end."""
    servers: list[Server] = []

    def start(collector: EdgeCollector) -> Server:
        servers.append(serve(collector, "127.0.0.1", 0))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


# -- names of the drop reasons (no root needed) ----------------------------------------


def test_drop_reasons_are_named_from_the_kernels_btf() -> None:
    if not build.VMLINUX_BTF.exists():
        pytest.skip(f"no {build.VMLINUX_BTF}: the kernel has no BTF")
    raw = btf_enum("skb_drop_reason")
    if not raw:
        pytest.skip("this kernel has no enum skb_drop_reason (before 5.17)")
    names = reason_names()
    assert raw[0] == "SKB_NOT_DROPPED_YET"
    assert names[0] == "NOT_DROPPED_YET"
    assert names[1] == "CONSUMED"
    by_name = {v: k for k, v in names.items()}
    for reason in ("NO_SOCKET", "NETFILTER_DROP", "NOT_SPECIFIED", "TCP_CSUM", "XDP"):
        assert reason in by_name, reason
        assert raw[by_name[reason]] == f"SKB_DROP_REASON_{reason}"
    assert names[MAX_REASONS - 1] == OTHER
    # the enum's numbers agree with the vmlinux.h the build dumped from the same BTF
    header = build.vmlinux_h(build.build_dir()).read_text()
    assert f"SKB_DROP_REASON_NO_SOCKET = {by_name['NO_SOCKET']}," in header
    assert btf_enum("no_such_enum_anywhere") == {}


def test_a_file_that_is_not_btf_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "vmlinux"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="not BTF"):
        btf_enum("skb_drop_reason", junk)


# -- L4Drop and the balancer, exact ----------------------------------------------------


def _first(table: Table, src: str, sport: int, dport: int, proto: int) -> int:
    a, b = int(ipaddress.ip_address(src)), int(ipaddress.ip_address(VIP))
    h = int(flow_hash(a, b, sport, dport, proto)[0])
    return int(table.first[h & (table.buckets - 1)])


def test_l4drop_and_balancer_counters_scraped_exactly(
    served: Callable[[EdgeCollector], Server],
) -> None:
    """7 SYNs, 5 reflections, 3 exempt and 4 unmatched frames through L4Drop; 40 UDP
    flows and 6 second-hop ACKs through the balancer: every exported number is the
    count of frames sent, and bytes the frames' lengths."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with L4Drop() as l4, Balancer(0) as lb:
        l4.replace(parse_rules(RULES, "rules.yaml"))
        syn = tcp4("198.51.100.7", VIP, 40000, 443, SYN)
        refl = udp4("192.0.2.9", VIP, 11211, 5000, MEMCACHED)
        exempt = tcp4("203.0.113.250", VIP, 40000, 443, SYN)
        other = udp4("192.0.2.9", VIP, 5353, 53, b"query")
        for frame, n, verdict in ((syn, 7, "drop"), (refl, 5, "drop"), (exempt, 3, "pass")):
            for _ in range(n):
                assert l4.test_run(frame) == verdict
        for _ in range(4):
            assert l4.test_run(other) == "pass"

        table = Table.build([1, 1, 1, 1], seed=7)
        lb.set_servers(MACS)
        lb.set_services([VIP])
        lb.replace(table)
        want: dict[tuple[str, str], int] = {}
        for sport in range(2000, 2040):
            first = _first(table, "198.51.100.7", sport, 80, 17)
            kind = "local" if first == 0 else "first_hop"
            frame = udp4("198.51.100.7", VIP, sport, 80, b"x")
            assert lb.test_run(frame).verdict == ("pass" if first == 0 else "tx")
            want[(str(first), kind)] = want.get((str(first), kind), 0) + 1
        udp_len = len(udp4("198.51.100.7", VIP, 1, 80, b"x"))
        # a drained server 1: its buckets' ACKs without a socket here go on to it
        drained = Table.build([1, 1], seed=3).drain(1)
        lb.replace(drained)
        ports = np.arange(1024, 65536)
        h = flow_hash(
            int(ipaddress.ip_address("198.51.100.7")), int(ipaddress.ip_address(VIP)), ports, 80, 6
        )
        first, second = drained.lookup(h)
        moved = [int(p) for p in ports[(first == 0) & (second == 1)][:6]]
        assert len(moved) == 6
        for sport in moved:
            assert lb.test_run(tcp4("198.51.100.7", VIP, sport, 80, ACK)).verdict == "tx"
        ack_len = len(tcp4("198.51.100.7", VIP, 1, 80, ACK))

        server = served(EdgeCollector(l4drop=l4, balancer=lb))
        got = scrape(server)

    packets = _of(got, "anyedge_l4drop_packets_total")
    assert packets == {
        (("action", "pass"), ("rule", "monitoring")): 3,
        (("action", "drop"), ("rule", "syn-flood")): 7,
        (("action", "drop"), ("rule", "memcached-reflection")): 5,
    }
    octets = _of(got, "anyedge_l4drop_bytes_total")
    assert octets[(("action", "drop"), ("rule", "syn-flood"))] == 7 * len(syn)
    assert octets[(("action", "drop"), ("rule", "memcached-reflection"))] == 5 * len(refl)
    assert octets[(("action", "pass"), ("rule", "monitoring"))] == 3 * len(exempt)

    lb_packets = _of(got, "anyedge_balancer_packets_total")
    want[("1", "second_hop")] = 6
    assert lb_packets == {(("kind", k), ("server", s)): n for (s, k), n in want.items()}
    assert sum(lb_packets.values()) == 46
    assert {k for _, k in want} >= {"local", "first_hop", "second_hop"}
    lb_bytes = _of(got, "anyedge_balancer_bytes_total")
    assert lb_bytes[(("kind", "second_hop"), ("server", "1"))] == 6 * ack_len
    for (s, k), n in want.items():
        if k != "second_hop":
            assert lb_bytes[(("kind", k), ("server", s))] == n * udp_len
    assert _of(got, "anyedge_balancer_second_hop_passes_total") == {(): 6}
    assert not _of(got, "anyedge_kernel_drops_total")  # no dropwatch given


def test_rule_set_change_restarts_the_counters(served: Callable[[EdgeCollector], Server]) -> None:
    """A new rule set counts from zero (Prometheus reads a reset); the scrape follows
    the rules in force, read anew each time."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with L4Drop() as l4:
        server = served(EdgeCollector(l4drop=l4))
        assert _of(scrape(server), "anyedge_l4drop_packets_total") == {}
        l4.replace(parse_rules(RULES, "rules.yaml"))
        syn = tcp4("198.51.100.7", VIP, 40000, 443, SYN)
        for _ in range(3):
            l4.test_run(syn)
        key = (("action", "drop"), ("rule", "syn-flood"))
        assert _of(scrape(server), "anyedge_l4drop_packets_total")[key] == 3
        l4.test_run(syn)
        assert _of(scrape(server), "anyedge_l4drop_packets_total")[key] == 4
        l4.replace(parse_rules(RULES, "rules.yaml"))
        assert _of(scrape(server), "anyedge_l4drop_packets_total")[key] == 0


def test_other_sources_add_their_metrics(served: Callable[[EdgeCollector], Server]) -> None:
    """The hook the UDP rate limiter will use: any object with collect()."""
    from prometheus_client.core import CounterMetricFamily

    class RateLimiter:
        def collect(self) -> Iterator[CounterMetricFamily]:
            m = CounterMetricFamily("anyedge_udp_ratelimited", "datagrams", labels=["rule"])
            m.add_metric(["dns"], 11)
            yield m

    got = scrape(served(EdgeCollector(sources=[RateLimiter()])))
    assert _of(got, "anyedge_udp_ratelimited_total") == {(("rule", "dns"),): 11}


# -- dropwatch: real drops in namespaces of our own --------------------------------------


@pytest.fixture(scope="module")
def dropwatch() -> Iterator[Dropwatch]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    try:
        dw = Dropwatch()
    except BpfError as e:  # probed at run time: no tracepoint, or no reason argument
        pytest.skip(f"dropwatch cannot attach to kfree_skb here: {e}")
    with dw:
        yield dw


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """``ae-met-XXXXXX-a`` and ``-b`` joined by a veth pair; removed whatever happens."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with veth_pair("ae-met") as pair:
        yield pair


def _drops(server: Server) -> dict[str, float]:
    return {
        dict(k)["reason"]: v for k, v in _of(scrape(server), "anyedge_kernel_drops_total").items()
    }


def _rose_by(server: Server, before: dict[str, float], reason: str, n: int) -> float:
    """Wait (3 s at most) for ``reason``'s counter to rise by ``n``; the rise seen."""
    deadline = time.monotonic() + 3.0
    while True:
        rise = _drops(server).get(reason, 0) - before.get(reason, 0)
        if rise >= n or time.monotonic() > deadline:
            return rise
        time.sleep(0.05)


def _blast_udp(ns: str, dst: str, port: int, n: int) -> None:
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        for i in range(n):
            s.sendto(b"ping %d" % i, (dst, port))


@pytest.mark.lab
def test_udp_to_a_closed_port_counts_as_no_socket(
    dropwatch: Dropwatch, pair: tuple[str, str], served: Callable[[EdgeCollector], Server]
) -> None:
    a, _b = pair
    server = served(EdgeCollector(dropwatch=dropwatch))
    before = _drops(server)
    n = 50
    _blast_udp(a, ADDR_B, 9, n)  # nothing listens on b's port 9
    assert _rose_by(server, before, "NO_SOCKET", n) >= n


@pytest.mark.lab
def test_a_netfilter_drop_rule_counts_as_netfilter_drop(
    dropwatch: Dropwatch, pair: tuple[str, str], served: Callable[[EdgeCollector], Server]
) -> None:
    if not _has_nft():
        pytest.skip("nft (nftables) is not installed")
    a, b = pair
    script = (
        "table inet ae_met {\n chain in {\n  type filter hook input priority 0;\n"
        "  udp dport 7777 counter drop\n }\n}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", b, "nft", "-f", "-"], input=script, text=True, check=True
    )
    with netns.entered(b):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind((ADDR_B, 7777))  # a socket is there: only the rule drops them
    with rx:
        server = served(EdgeCollector(dropwatch=dropwatch))
        before = _drops(server)
        n = 40
        _blast_udp(a, ADDR_B, 7777, n)
        assert _rose_by(server, before, "NETFILTER_DROP", n) >= n
        rx.setblocking(False)
        with pytest.raises(BlockingIOError):
            rx.recv(100)
    out = subprocess.run(
        ["ip", "netns", "exec", b, "nft", "list", "table", "inet", "ae_met"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"packets {n} " in out


@pytest.mark.lab
def test_generic_xdp_drops_count_as_xdp_and_the_whole_edge_is_scraped(
    dropwatch: Dropwatch, pair: tuple[str, str], served: Callable[[EdgeCollector], Server]
) -> None:
    """L4Drop in generic XDP on b drops spoofed SYNs: the rule's counter is exact and
    the kernel frees each socket buffer generic XDP built as dropped, both seen in one
    scrape."""
    a, b = pair
    with L4Drop() as l4:
        l4.replace(parse_rules(RULES, "rules.yaml"))
        l4.attach("eth0", netns=b, mode="generic")
        server = served(EdgeCollector(l4drop=l4, dropwatch=dropwatch))
        before = _drops(server)
        with netns.entered(a):
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        n = 30
        with raw:
            for i in range(n):
                src = f"198.51.100.{i + 1}"
                raw.sendto(ipv4(src, ADDR_B, 6, tcp(src, ADDR_B, 1024 + i, 80, SYN)), (ADDR_B, 0))
            raw.sendto(
                ipv4(ADDR_A, ADDR_B, 17, udp(ADDR_A, ADDR_B, 11211, 5000, MEMCACHED)), (ADDR_B, 0)
            )
        # generic XDP frees what it drops with a plain kfree_skb(): NOT_SPECIFIED (6.18;
        # a later kernel may say XDP)
        _rose_by(server, before, "NOT_SPECIFIED", n)
        after = _drops(server)
        rise = sum(after.get(r, 0) - before.get(r, 0) for r in ("NOT_SPECIFIED", "XDP"))
        assert rise >= n
        got = scrape(server)
        packets = _of(got, "anyedge_l4drop_packets_total")
        assert packets[(("action", "drop"), ("rule", "syn-flood"))] == n
        assert packets[(("action", "drop"), ("rule", "memcached-reflection"))] == 1


def _has_nft() -> bool:
    return subprocess.run(["which", "nft"], capture_output=True, check=False).returncode == 0


def test_exporter_command_serves_drop_reasons(tmp_path: Path) -> None:
    """``python -m anyedge.edge.exporter`` on a free port: a scrape has the kernel's
    drop reasons; SIGTERM ends it cleanly."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    p = subprocess.Popen(
        [sys.executable, "-m", "anyedge.edge.exporter", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        if "serving" not in line:
            p.wait(timeout=10)
            assert p.stderr is not None
            err = p.stderr.read()
            if "kfree_skb" in err:
                pytest.skip(f"dropwatch cannot attach here: {err}")
            raise AssertionError(line + err)
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert "anyedge_kernel_drops" in names
    finally:
        p.terminate()
        assert p.wait(timeout=10) == 0
        for pipe in (p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()


def test_counters_read_in_one_batch_or_key_by_key_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrape reads a per-CPU array in one BPF_MAP_LOOKUP_BATCH call; on a kernel
    without batch operations, key by key: the same numbers."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    from anyedge.edge import libbpf

    with Balancer(0) as lb:
        lb.set_servers(MACS)
        lb.set_services([VIP])
        lb.replace(Table.build([1, 1, 1, 1], seed=7))
        for sport in range(3000, 3025):
            lb.test_run(udp4("198.51.100.7", VIP, sport, 80, b"x"))
        batched = lb.counters()
        assert sum(c.packets for c in batched) == 25
        monkeypatch.setattr(libbpf.lib(), "bpf_map_lookup_batch", lambda *_: -22)  # EINVAL
        assert lb.counters() == batched


@pytest.mark.lab
def test_the_benchmarks_generator_sends_real_frames(
    pair: tuple[str, str], served: Callable[[EdgeCollector], Server]
) -> None:
    """``bpf/trafficgen.bpf.c`` in live-frames mode sends 5,000 reflections into a's
    veth; L4Drop in native XDP on b counts every one, and the scrape says so."""
    from anyedge.edge.libbpf import BpfObject

    a, b = pair
    mac = {ns: netns.run(ns, ["cat", "/sys/class/net/eth0/address"]).strip() for ns in pair}
    l3 = ipv4("203.0.113.7", ADDR_B, 17, udp("203.0.113.7", ADDR_B, 11211, 5000, MEMCACHED))
    frame = bytes.fromhex(mac[b].replace(":", "")) + bytes.fromhex(mac[a].replace(":", ""))
    frame += b"\x08\x00" + l3
    gen = BpfObject(build.object_path("trafficgen"))
    try:
        with netns.entered(a):
            ifindex = socket.if_nametoindex("eth0")
        gen.map("tg_config").update(ctypes.c_uint32(0), ctypes.c_uint32(ifindex))
        with L4Drop() as l4:
            l4.replace(parse_rules(RULES, "rules.yaml"))
            l4.attach("eth0", netns=b, mode="native")
            with netns.entered(a):
                try:
                    gen.program("trafficgen").send_live(frame, 5000)
                except BpfError as e:
                    pytest.skip(f"no live-frames test runs here (Linux 5.18): {e}")
            key = (("action", "drop"), ("rule", "memcached-reflection"))
            got = _of(scrape(served(EdgeCollector(l4drop=l4))), "anyedge_l4drop_packets_total")
            assert got[key] == 5000
    finally:
        gen.close()
