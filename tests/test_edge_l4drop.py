"""L4Drop, the XDP drop stage: its rules file, then the program itself in the kernel.

The program is run on hand-built packets with ``BPF_PROG_TEST_RUN`` (bytes in, verdict
out), then once on real packets: two network namespaces joined by a veth pair, L4Drop
attached to the receiving end, spoofed SYNs and reflection datagrams sent from the
other.  Kernel tests need root, clang, bpftool and a kernel with BTF; where something
is missing they are skipped with the reason.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from anyedge.adapters import netns
from anyedge.edge import build, libbpf
from anyedge.edge.l4drop import L4Drop
from anyedge.edge.libbpf import BpfError
from anyedge.edge.rules import MAX_RULES, Rule, RuleSet, parse_rules
from anyedge.errors import InputError
from edge_netns import ADDR_A, ADDR_B
from edge_netns import veth_pair as namespace_pair
from edge_packets import (
    ACK,
    ETH_IPV6,
    FIN,
    ICMP,
    RST,
    SYN,
    UDP,
    checksum,
    eth,
    fragment,
    hop_by_hop,
    ipv4,
    ipv6,
    tcp,
    tcp4,
    tcp6,
    udp,
    udp4,
    udp6,
)

RULES = """\
rules:
  - name: monitoring            # our own probes are never dropped
    action: pass
    source: 203.0.113.250/32
  - name: syn-flood
    protocol: tcp
    source: 198.51.100.0/24
    destination_ports: 80-443
    tcp_flags: SYN !ACK
  - name: memcached-reflection
    protocol: udp
    source_ports: 11211
    payload: {offset: 8, text: "VALUE "}
  - name: ntp-monlist
    protocol: udp
    source_ports: 123
    payload: {offset: 0, hex: "d7 00 03 2a", mask: "ff 00 ff ff"}
  - name: syn-flood-v6
    protocol: tcp
    source: 2001:db8:bad::/48
    tcp_flags: SYN !ACK
  - name: big-udp-to-dns
    family: ipv6
    protocol: udp
    destination_ports: 53
    length: 1200-65535
  - name: spoofed-range-anything
    source: 100.64.0.0/10
"""

VIP = "192.0.2.10"
VIP6 = "2001:db8::10"
MEMCACHED = b"\x00\x01\x00\x00\x00\x01\x00\x00VALUE k 0 4096\r\n" + b"x" * 64
MONLIST = bytes.fromhex("d7 ab 03 2a 00 06 00 48") + bytes(72)


# -- the rules file (no kernel needed) ------------------------------------------------


def test_rule_records_are_the_c_struct() -> None:
    assert ctypes.sizeof(Rule) == 120
    assert ctypes.sizeof(RuleSet) == 8 + MAX_RULES * 120


def test_rules_compile_to_masked_records() -> None:
    rules = parse_rules(RULES, "rules.yaml")
    assert rules.names[:3] == ("monitoring", "syn-flood", "memcached-reflection")
    syn = rules.records[1]
    assert (syn.family, syn.proto, syn.tcp_flags_mask, syn.tcp_flags_value) == (4, 6, 0x12, 0x02)
    assert bytes(syn.src)[:4] == bytes([198, 51, 100, 0])
    assert not any(bytes(syn.src)[4:])
    assert bytes(syn.src_mask)[:4] == b"\xff\xff\xff\x00"
    assert (syn.dport_min, syn.dport_max, syn.sport_min, syn.sport_max) == (80, 443, 0, 65535)
    ntp = rules.records[3]
    assert bytes(ntp.sig)[:4] == bytes.fromhex("d700032a")  # stored already masked
    assert (ntp.sig_len, ntp.sig_offset) == (4, 0)
    assert rules.records[6].flags == 0  # no ports, flags or payload: fragments match too
    assert rules.records[5].family == 6
    assert rules.records[5].len_min == 1200


@pytest.mark.parametrize(
    ("rule", "place", "problem"),
    [
        ("{name: a, source: 198.51.100.1/24}", "rules[0].source", "host bits set"),
        ("{name: a, source: 10.0.0.0/8, destination: '2001:db8::/32'}", "rules[0]", "mixes"),
        ("{name: a, protocol: icmp, family: ipv6}", "rules[0]", "mixes IPv4 and IPv6"),
        ("{name: a, destination_ports: 80}", "rules[0]", "needs protocol: tcp or udp"),
        ("{name: a, protocol: udp, tcp_flags: SYN}", "rules[0]", "tcp_flags needs protocol"),
        ("{name: a, protocol: tcp, tcp_flags: SYN !SYNACK}", "rules[0].tcp_flags", "unknown"),
        ("{name: a, protocol: udp, source_ports: 90-80}", "rules[0].source_ports", "low"),
        ("{name: a, protocol: udp, payload: {hex: '00', text: x}}", "rules[0].payload", "one"),
        ("{name: a, protocol: udp, payload: {text: 0123456789abcdefg}}", "payload", "16 bytes"),
        ("{name: a, protocol: udp, payload: {hex: 'ab', mask: 'ffff'}}", "payload", "mask"),
        ("{name: a, action: reject}", "rules[0].action", "'drop' or 'pass'"),
        ("{name: a, protocol: sctp}", "rules[0].protocol", "or a protocol number 1 to 255"),
        ("{name: a, protocol: 256}", "rules[0].protocol", "(got 256)"),
        ("{name: a, protocol: udp, source_ports: [1, 2]}", "source_ports", "low-high"),
        ("{name: a, length: 99999}", "rules[0].length", "high <= 65535"),
        ("{name: a, colour: red}", "rules[0].colour", "Extra inputs"),
    ],
)
def test_bad_rule_is_reported_in_its_place(rule: str, place: str, problem: str) -> None:
    text = f"# L4Drop\nrules:\n  - {rule}\n"
    with pytest.raises(InputError) as e:
        parse_rules(text, "rules.yaml")
    line = str(e.value).splitlines()[0]
    assert line.startswith("rules.yaml:3: "), line
    assert place in line, line
    assert problem in line, line


def test_duplicate_names_and_too_many_rules_are_refused() -> None:
    with pytest.raises(InputError, match=r"rules.yaml:3: rules\[1\].name: the name 'a'"):
        parse_rules("rules:\n  - {name: a}\n  - {name: a}\n", "rules.yaml")
    many = "rules:\n" + "".join(f"  - {{name: r{i}}}\n" for i in range(MAX_RULES + 1))
    with pytest.raises(InputError, match="at most 64 items"):
        parse_rules(many, "rules.yaml")
    with pytest.raises(InputError, match=r"rules\.yaml: a rules file is a YAML mapping"):
        parse_rules("- {name: a}\n", "rules.yaml")


def test_docs_rules_examples() -> None:
    """docs/edge.md: the example file loads; the one with mistakes gives the errors shown."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "edge.md").read_text()
    good, bad = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    rules = parse_rules(good, "docs/edge.md")
    assert rules.names == (
        "monitoring",
        "syn-flood",
        "memcached-reflection",
        "ntp-monlist",
        "big-udp-to-dns",
    )
    with pytest.raises(InputError) as e:
        parse_rules(bad, "rules.yaml")
    shown = doc.split(bad)[1].split("```\n")[2]  # the block after the file
    assert str(e.value) + "\n" == shown


# -- the program in the kernel ----------------------------------------------------------


def _cannot_build() -> str | None:
    lacking = build.missing_tools()
    return "cannot build BPF programs, missing: " + ", ".join(lacking) if lacking else None


def _why_not() -> str | None:
    """Why the program cannot be loaded here, or None."""
    if os.geteuid() != 0:
        return "BPF programs need root (CAP_BPF and CAP_NET_ADMIN)"
    return _cannot_build()


@pytest.fixture(scope="module")
def l4() -> Iterator[L4Drop]:
    """One loaded L4Drop for the module; each test puts its own rules in force."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with L4Drop() as loaded:
        yield loaded


@pytest.fixture
def rules_in(l4: L4Drop) -> L4Drop:
    l4.replace(parse_rules(RULES, "rules.yaml"))
    return l4


def counts(l4: L4Drop) -> dict[str, int]:
    return {c.name: c.packets for c in l4.counters() if c.packets}


def test_object_matches_the_python_records() -> None:
    """Field by field, ``struct l4drop_rule`` in the object's BTF is :class:`Rule`."""
    reason = _cannot_build()
    if reason:
        pytest.skip(reason)
    dump = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(build.object_path("l4drop")), "format", "raw"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    block = dump.split("STRUCT 'l4drop_rule' size=120")[1].split("\n[")[0]
    members = dict(re.findall(r"'(\w+)' type_id=\d+ bits_offset=(\d+)", block))
    assert {n: int(b) // 8 for n, b in members.items()} == {
        name: getattr(Rule, name).offset for name, _ in Rule._fields_
    }


def test_a_file_that_is_not_a_bpf_object_is_refused(tmp_path: Path) -> None:
    try:
        libbpf.lib()
    except BpfError as e:
        pytest.skip(str(e))
    bad = tmp_path / "not.bpf.o"
    bad.write_text("not ELF")
    with pytest.raises(BpfError, match=r"not\.bpf\.o: BPF object format invalid"):
        libbpf.BpfObject(bad)
    with pytest.raises(BpfError, match="No such file or directory"):
        libbpf.BpfObject(tmp_path / "missing.bpf.o")


BAD_PROGRAM = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
SEC("xdp")
int bad(struct xdp_md *ctx)
{
\tunsigned char *data = (void *)(long)ctx->data;
\treturn data[20] == 1 ? XDP_DROP : XDP_PASS; /* no bounds check */
}
"""


def test_a_program_the_verifier_refuses_fails_with_its_log(tmp_path: Path) -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    src, obj = tmp_path / "bad.bpf.c", tmp_path / "bad.bpf.o"
    src.write_text(BAD_PROGRAM)
    include = build.vmlinux_h(build.build_dir()).parent
    cmd = ["clang", "-O2", "-g", "-target", "bpf", f"-I{include}", "-c", str(src), "-o", str(obj)]
    subprocess.run(cmd, check=True)
    with pytest.raises(BpfError) as e:
        libbpf.BpfObject(obj)
    assert e.value.errno == 13  # EACCES: the verifier said no
    assert "invalid access to packet" in str(e.value)  # the verifier's words


def test_a_closed_l4drop_refuses_to_touch_its_old_fds() -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    l4 = L4Drop()
    l4.replace(parse_rules(RULES, "rules.yaml"))
    l4.close()
    with pytest.raises(BpfError, match="is closed"):
        l4.counters()
    with pytest.raises(BpfError, match="is closed"):
        l4.test_run(udp4("192.0.2.1", VIP, 1, 2))


def test_what_the_rules_pass_goes_on_to_the_chained_program(rules_in: L4Drop) -> None:
    """``chain``: a tail call into the next stage (here a second L4Drop that drops all
    UDP) for every packet the rules pass; what the rules drop never reaches it, and
    unchained, the packet passes up the stack again."""
    l4 = rules_in
    reflection = udp4("203.0.113.5", VIP, 11211, 5000, MEMCACHED)  # l4's rules drop it
    other_udp = udp4("203.0.113.5", VIP, 5353, 5000, b"hello")  # l4's rules pass it
    syn = tcp4("198.51.101.7", VIP, 40000, 443, SYN)
    with L4Drop() as nxt:
        nxt.replace(parse_rules("rules:\n  - {name: all-udp, protocol: udp}\n", "next.yaml"))
        l4.chain(nxt.program)
        try:
            verdicts = [l4.test_run(f) for f in (reflection, other_udp, syn)]
        finally:
            l4.chain(None)
        assert verdicts == ["drop", "drop", "pass"]
        assert counts(nxt) == {"all-udp": 1}  # the reflection stopped at the first stage
        assert l4.test_run(other_udp) == "pass"
        assert counts(nxt) == {"all-udp": 1}
    l4.chain(None)  # unchaining twice is harmless


def test_syn_from_a_matched_prefix_is_dropped(rules_in: L4Drop) -> None:
    l4 = rules_in
    assert l4.test_run(tcp4("198.51.100.7", VIP, 40000, 443, SYN)) == "drop"
    assert l4.test_run(tcp4("198.51.100.7", VIP, 40000, 80, SYN)) == "drop"
    assert l4.test_run(tcp4("198.51.100.7", VIP, 40000, 443, SYN | ACK)) == "pass"
    assert l4.test_run(tcp4("198.51.100.7", VIP, 40000, 443, ACK)) == "pass"
    assert l4.test_run(tcp4("198.51.100.7", VIP, 40000, 443, RST | FIN)) == "pass"
    assert l4.test_run(tcp4("198.51.100.7", VIP, 40000, 8443, SYN)) == "pass"  # port
    assert l4.test_run(tcp4("198.51.101.7", VIP, 40000, 443, SYN)) == "pass"  # prefix
    assert counts(l4) == {"syn-flood": 2}


def test_udp_reflection_signatures_drop_and_other_udp_passes(rules_in: L4Drop) -> None:
    l4 = rules_in
    assert l4.test_run(udp4("203.0.113.5", VIP, 11211, 5000, MEMCACHED)) == "drop"
    assert l4.test_run(udp4("203.0.113.5", VIP, 123, 5000, MONLIST)) == "drop"
    other_monlist = bytes([0xD7, 0x00, 0x03, 0x2B]) + MONLIST[4:]  # request code 43
    assert l4.test_run(udp4("203.0.113.5", VIP, 123, 5000, other_monlist)) == "pass"
    assert l4.test_run(udp4("203.0.113.5", VIP, 123, 5000, bytes(48))) == "pass"  # NTP time
    assert l4.test_run(udp4("203.0.113.5", VIP, 11211, 5000, b"\0" * 8 + b"STORED")) == "pass"
    assert l4.test_run(udp4("203.0.113.5", VIP, 5353, 11211, MEMCACHED)) == "pass"  # a query
    assert l4.test_run(udp4("203.0.113.5", VIP, 11211, 5000, MEMCACHED[:13])) == "pass"  # short
    assert l4.test_run(udp4("203.0.113.5", VIP, 11211, 5000, MEMCACHED[:14])) == "drop"
    assert l4.test_run(udp4("203.0.113.5", VIP, 40000, 53, b"\x12\x34" + bytes(30))) == "pass"
    assert counts(l4) == {"memcached-reflection": 2, "ntp-monlist": 1}


def test_ipv6(rules_in: L4Drop) -> None:
    l4 = rules_in
    assert l4.test_run(tcp6("2001:db8:bad::1", VIP6, 40000, 22, SYN)) == "drop"
    assert l4.test_run(tcp6("2001:db8:bad::1", VIP6, 40000, 22, SYN | ACK)) == "pass"
    assert l4.test_run(tcp6("2001:db8:600d::1", VIP6, 40000, 22, SYN)) == "pass"
    assert l4.test_run(udp6("2001:db8:1::1", VIP6, 40000, 53, bytes(1200))) == "drop"
    assert l4.test_run(udp6("2001:db8:1::1", VIP6, 40000, 53, bytes(100))) == "pass"
    assert l4.test_run(udp4("203.0.113.1", VIP, 40000, 53, bytes(1400))) == "pass"  # IPv4
    assert l4.test_run(udp6("2001:db8:1::1", VIP6, 11211, 80, MEMCACHED)) == "drop"
    # behind a hop-by-hop options header the rule still sees TCP and its flags
    seg = tcp("2001:db8:bad::1", VIP6, 40000, 22, SYN)
    assert (
        l4.test_run(eth(ipv6("2001:db8:bad::1", VIP6, 0, hop_by_hop(6, seg)), ETH_IPV6)) == "drop"
    )
    # behind a fragment header: the first fragment carries TCP, a later one does not
    first = ipv6("2001:db8:bad::1", VIP6, 44, fragment(6, seg, offset=0, more=True))
    later = ipv6("2001:db8:bad::1", VIP6, 44, fragment(6, seg, offset=1))
    assert l4.test_run(eth(first, ETH_IPV6)) == "drop"
    assert l4.test_run(eth(later, ETH_IPV6)) == "pass"
    assert counts(l4) == {"syn-flood-v6": 3, "big-udp-to-dns": 1, "memcached-reflection": 1}


def test_first_match_decides_and_pass_rules_exempt(rules_in: L4Drop) -> None:
    l4 = rules_in
    assert l4.test_run(tcp4("203.0.113.250", VIP, 40000, 443, SYN)) == "pass"
    assert l4.test_run(udp4("203.0.113.250", VIP, 11211, 5000, MEMCACHED)) == "pass"
    assert l4.test_run(udp4("100.100.0.1", VIP, 1, 2)) == "drop"
    assert counts(l4) == {"monitoring": 2, "spoofed-range-anything": 1}


def test_fragments_vlan_and_junk(rules_in: L4Drop) -> None:
    l4 = rules_in
    seg = udp("203.0.113.5", VIP, 11211, 5000, MEMCACHED)
    # a non-first fragment carries no UDP header: port and payload rules cannot match it
    assert l4.test_run(eth(ipv4("203.0.113.5", VIP, UDP, seg, frag=0x0010))) == "pass"
    assert l4.test_run(eth(ipv4("203.0.113.5", VIP, UDP, seg, frag=0x2000))) == "drop"  # first
    assert l4.test_run(eth(ipv4("100.64.1.1", VIP, UDP, seg, frag=0x0010))) == "drop"  # prefix
    syn = ipv4("198.51.100.7", VIP, 6, tcp("198.51.100.7", VIP, 1, 80, SYN))
    assert l4.test_run(eth(syn, vlan=42)) == "drop"
    assert l4.test_run(eth(ipv4("198.51.100.7", VIP, ICMP, bytes(8)))) == "pass"
    for cut in range(0, 54):  # every truncation of a SYN: parsed as far as it goes
        assert l4.test_run(tcp4("198.51.100.7", VIP, 1, 80, SYN)[:cut].ljust(14, b"\0")) == "pass"


@given(st.binary(min_size=14, max_size=200))
def test_any_bytes_get_a_verdict(l4: L4Drop, frame: bytes) -> None:
    assert l4.test_run(frame) in ("pass", "drop")


def test_counters_are_exact_per_rule(l4: L4Drop) -> None:
    l4.replace(parse_rules(RULES, "rules.yaml"))
    frames = {
        "syn-flood": tcp4("198.51.100.9", VIP, 1234, 80, SYN),
        "memcached-reflection": udp4("192.0.2.99", VIP, 11211, 5000, MEMCACHED),
        "syn-flood-v6": tcp6("2001:db8:bad::9", VIP6, 1234, 443, SYN, b"data"),
        "spoofed-range-anything": eth(ipv4("100.64.0.9", VIP, ICMP, bytes(64))),
    }
    sent = {name: 3 + 2 * i for i, name in enumerate(frames)}
    for name, frame in frames.items():
        for _ in range(sent[name]):
            assert l4.test_run(frame) == "drop"
    for _ in range(5):
        assert l4.test_run(udp4("192.0.2.99", VIP, 5000, 53, b"query")) == "pass"
    got = {c.name: (c.packets, c.bytes) for c in l4.counters()}
    want = dict.fromkeys(l4.rules.names, (0, 0))
    want |= {name: (sent[name], sent[name] * len(frames[name])) for name in frames}
    assert got == want


def test_rule_swap_is_atomic(l4: L4Drop) -> None:
    """Between writing the new set and flipping to it, packets keep the old rules (and
    count into the old counters); after the flip, the new rules, counted from zero."""
    old = parse_rules("rules:\n  - {name: old, protocol: udp, destination_ports: 9}\n")
    new = parse_rules("rules:\n  - {name: new, protocol: udp, destination_ports: 7}\n")
    to_9, to_7 = udp4("192.0.2.1", VIP, 1, 9), udp4("192.0.2.1", VIP, 1, 7)
    l4.replace(old)
    assert (l4.test_run(to_9), l4.test_run(to_7)) == ("drop", "pass")
    l4.stage(new)
    for _ in range(3):
        assert (l4.test_run(to_9), l4.test_run(to_7)) == ("drop", "pass")
    assert [(c.name, c.packets) for c in l4.counters()] == [("old", 4)]
    l4.commit()
    assert (l4.test_run(to_9), l4.test_run(to_7)) == ("pass", "drop")
    assert [(c.name, c.packets) for c in l4.counters()] == [("new", 1)]
    final = l4.replace(old)  # and back: the set that held "old" is rewritten, from zero
    assert [(c.name, c.packets) for c in final] == [("new", 1)]
    assert [(c.name, c.packets) for c in l4.counters()] == [("old", 0)]
    assert l4.test_run(to_9) == "drop"


def test_rule_swap_under_load_never_passes_what_both_sets_drop(l4: L4Drop) -> None:
    """Swap rule sets back and forth while another thread runs packets: a packet both
    sets drop is dropped every time (a half-written set would let it through)."""
    import threading

    a = parse_rules("rules:\n  - {name: a, protocol: udp, destination_ports: 9}\n")
    b = parse_rules(
        "rules:\n  - {name: b1, protocol: tcp}\n  - {name: b2, protocol: udp, source_ports: 1}\n"
    )
    frame = udp4("192.0.2.1", VIP, 1, 9)
    l4.replace(a)
    stop = threading.Event()
    verdicts: list[str] = []

    def run() -> None:
        while not stop.is_set():
            verdicts.append(l4.test_run(frame))

    t = threading.Thread(target=run)
    t.start()
    try:
        for i in range(40):
            l4.replace(b if i % 2 == 0 else a)
    finally:
        stop.set()
        t.join()
    assert verdicts
    assert set(verdicts) == {"drop"}


def test_an_empty_rule_set_passes_everything(l4: L4Drop) -> None:
    l4.replace(parse_rules("rules: []\n"))
    assert l4.test_run(tcp4("198.51.100.7", VIP, 40000, 443, SYN)) == "pass"
    assert l4.counters() == []


# -- real packets through two namespaces --------------------------------------------------


@pytest.fixture
def veth_pair() -> Iterator[tuple[str, str]]:
    """Namespaces ``ae-l4d-XXXXXX-a`` and ``-b`` joined by a veth pair, 192.0.2.1/24 and
    192.0.2.2/24; removed, whatever the test did."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with namespace_pair("ae-l4d") as pair:
        yield pair


def _wait_for(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)


def _ping(ns: str, dst: str) -> bool:
    """One ICMP echo from ``ns`` to ``dst`` over a raw socket: did the reply come?"""
    with netns.entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with sock:
        body = struct.pack("!BBHHH", 8, 0, 0, 0x4145, 1) + b"anyedge"
        sock.sendto(body[:2] + struct.pack("!H", checksum(body)) + body[4:], (dst, 0))
        deadline = time.monotonic() + 3.0
        while select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
            reply, (src, _) = sock.recvfrom(200)
            icmp = reply[(reply[0] & 0x0F) * 4 :]
            if src == dst and icmp[0] == 0 and icmp[4:8] == body[4:8]:
                return True
    return False


@pytest.mark.lab
@pytest.mark.parametrize("mode", ["generic", "native"])
def test_real_packets_through_a_veth(veth_pair: tuple[str, str], mode: str) -> None:
    """N spoofed SYNs and M memcached reflections from namespace a are dropped at b's
    veth, counted exactly; a UDP datagram and a ping from a still get through."""
    a, b = veth_pair
    n_syn, n_refl = 25, 17
    with L4Drop() as l4:
        l4.replace(parse_rules(RULES, "rules.yaml"))
        try:
            l4.attach("eth0", netns=b, mode=mode)
        except BpfError as e:
            pytest.skip(f"{mode} XDP on veth is not available here: {e}")
        with netns.entered(b):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.bind((ADDR_B, 7007))
            victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            victim.bind((ADDR_B, 5000))
        with netns.entered(a):
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            legit = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with rx, victim, raw, legit:
            syn_len = refl_len = 0
            for i in range(n_syn):
                src = f"198.51.100.{i + 1}"
                pkt = ipv4(src, ADDR_B, 6, tcp(src, ADDR_B, 1024 + i, 80, SYN))
                raw.sendto(pkt, (ADDR_B, 0))
                syn_len = len(pkt) + 14
            for i in range(n_refl):
                src = f"203.0.113.{i + 1}"
                pkt = ipv4(src, ADDR_B, UDP, udp(src, ADDR_B, 11211, 5000, MEMCACHED))
                raw.sendto(pkt, (ADDR_B, 0))
                refl_len = len(pkt) + 14
            legit.sendto(b"hello", (ADDR_B, 7007))
            assert select.select([rx], [], [], 3.0)[0], "legitimate UDP did not arrive"
            assert rx.recvfrom(100) == (b"hello", (ADDR_A, legit.getsockname()[1]))
            assert _ping(a, ADDR_B), "no echo reply through L4Drop"

            def done() -> bool:
                c = counts(l4)
                return c.get("syn-flood") == n_syn and c.get("memcached-reflection") == n_refl

            _wait_for(done)
            got = {c.name: (c.packets, c.bytes) for c in l4.counters() if c.packets}
            assert got == {
                "syn-flood": (n_syn, n_syn * syn_len),
                "memcached-reflection": (n_refl, n_refl * refl_len),
            }
            assert not select.select([victim], [], [], 0)[0], "a reflection got through"
        l4.detach()
        # detached: the same reflection now reaches the socket
        with netns.entered(b):
            victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            victim.bind((ADDR_B, 5000))
        with netns.entered(a):
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        with victim, raw:
            raw.sendto(
                ipv4(
                    "203.0.113.1", ADDR_B, UDP, udp("203.0.113.1", ADDR_B, 11211, 5000, MEMCACHED)
                ),
                (ADDR_B, 0),
            )
            assert select.select([victim], [], [], 3.0)[0], "without L4Drop it arrives"


def test_build_is_cached_by_source(tmp_path: Path) -> None:
    reason = _cannot_build()
    if reason:
        pytest.skip(reason)
    first = build.build("l4drop", tmp_path)
    assert first.parent == tmp_path
    assert (tmp_path / "vmlinux.h").exists()
    mtime = first.stat().st_mtime_ns
    assert build.build("l4drop", tmp_path) == first
    assert first.stat().st_mtime_ns == mtime
    assert build.main(["--out", str(tmp_path)]) == 0


# -- the kernel against a model in Python -------------------------------------------------

SOURCES = ["198.51.100.7", "198.51.100.200", "203.0.113.9", "2001:db8:bad::1", "2001:db8:1::7"]
DESTS = {4: ["192.0.2.10", "192.0.2.200"], 6: ["2001:db8::10", "2001:db8:ffff::1"]}
PREFIXES = ["198.51.100.0/24", "198.51.100.0/25", "203.0.113.0/24", "0.0.0.0/0"]
PREFIXES += ["192.0.2.128/25", "2001:db8:bad::/48", "2001:db8::/32", "::/0", "2001:db8::/64"]
PORTS = [0, 53, 80, 123, 443, 11211, 65535]
PAYLOADS = [b"", b"VALUE x", b"\x00" * 8 + b"VALUE k 0 1\r\n", bytes.fromhex("d7000a2a") + bytes(8)]


def _ranges() -> st.SearchStrategy[object]:
    port = st.sampled_from(PORTS)
    pair = st.tuples(port, port).map(lambda p: f"{min(p)}-{max(p)}")
    return st.one_of(port, pair)


@st.composite
def rule_dicts(draw: st.DrawFn, i: int) -> dict[str, object]:
    rule: dict[str, object] = {"name": f"r{i}", "action": draw(st.sampled_from(["drop", "pass"]))}
    family = draw(st.sampled_from(["ipv4", "ipv6"]))
    prefixes = [c for c in PREFIXES if (":" in c) == (family == "ipv6")]
    optional = {
        "family": st.just(family),
        "protocol": st.sampled_from(["tcp", "udp"]),
        "source": st.sampled_from(prefixes),
        "destination": st.sampled_from(prefixes),
        "source_ports": _ranges(),
        "destination_ports": _ranges(),
        "tcp_flags": st.sampled_from(["SYN !ACK", "ACK", "SYN ACK", "!SYN", "RST"]),
        "length": st.tuples(st.integers(0, 200), st.integers(0, 200)).map(
            lambda p: f"{min(p)}-{max(p)}"
        ),
        "payload": st.fixed_dictionaries(
            {"offset": st.sampled_from([0, 1, 8]), "text": st.sampled_from(["VALUE", "V", "\0"])}
        ),
    }
    for key, strategy in optional.items():
        if draw(st.integers(0, 2)) == 0:  # a third of the fields: rules that match often
            rule[key] = draw(strategy)
    if "tcp_flags" in rule:
        rule["protocol"] = "tcp"
    if {"source_ports", "destination_ports", "payload"} & rule.keys():
        rule.setdefault("protocol", draw(st.sampled_from(["tcp", "udp"])))
    return rule


@dataclass(frozen=True)
class Pkt:
    family: int
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    flags: int
    payload: bytes

    def frame(self) -> tuple[bytes, int]:
        """The packet as an Ethernet frame, and its IP length."""
        if self.proto == 6:
            seg = tcp(self.src, self.dst, self.sport, self.dport, self.flags, self.payload)
        else:
            seg = udp(self.src, self.dst, self.sport, self.dport, self.payload)
        if self.family == 4:
            l3 = ipv4(self.src, self.dst, self.proto, seg)
            return eth(l3), len(l3)
        l3 = ipv6(self.src, self.dst, self.proto, seg)
        return eth(l3, ETH_IPV6), len(l3)


@st.composite
def packets(draw: st.DrawFn) -> Pkt:
    src = draw(st.sampled_from(SOURCES))
    family = 6 if ":" in src else 4
    return Pkt(
        family,
        src,
        draw(st.sampled_from(DESTS[family])),
        draw(st.sampled_from([6, 17])),
        draw(st.sampled_from(PORTS)),
        draw(st.sampled_from(PORTS)),
        draw(st.sampled_from([SYN, SYN | ACK, ACK, RST, FIN | ACK])),
        draw(st.sampled_from(PAYLOADS)),
    )


def _model(rules: list[dict[str, object]], p: Pkt, ip_len: int) -> tuple[str, int]:
    """What L4Drop should do with ``p``, read off the rules as a person would: the first
    matching rule's action and index, or ("pass", -1)."""
    import ipaddress

    from anyedge.edge.rules import RulesFileIn, parse_tcp_flags

    every = (0, 65535)
    for i, rule in enumerate(RulesFileIn.model_validate({"rules": rules}).rules):
        if rule.ip_family() not in (0, p.family):
            continue
        if rule.protocol is not None and rule.protocol != p.proto:
            continue
        nets = [(rule.source, p.src), (rule.destination, p.dst)]
        if any(
            n is not None and ipaddress.ip_address(a) not in ipaddress.ip_network(n)
            for n, a in nets
        ):
            continue
        ranges = [(rule.source_ports, p.sport), (rule.destination_ports, p.dport)]
        ranges.append((rule.length, ip_len))
        if any(not (r or every)[0] <= v <= (r or every)[1] for r, v in ranges):
            continue
        if rule.tcp_flags is not None:
            mask, value = parse_tcp_flags(rule.tcp_flags)
            if p.flags & mask != value:
                continue
        if rule.payload is not None:
            want, off = rule.payload.pattern(), rule.payload.offset
            if p.payload[off : off + len(want)] != want:
                continue
        return rule.action, i
    return "pass", -1


@given(
    st.integers(0, 6).flatmap(lambda n: st.tuples(*(rule_dicts(i) for i in range(n)))),
    st.lists(packets(), min_size=1, max_size=8),
)
def test_the_kernel_decides_as_the_rules_read(
    l4: L4Drop, rules: tuple[dict[str, object], ...], pkts: list[Pkt]
) -> None:
    """Random rule sets and packets: the program's verdict and the rule it counts are
    those a plain reading of the rules gives."""
    import yaml

    compiled = parse_rules(yaml.safe_dump({"rules": list(rules)}), "random.yaml")
    l4.replace(compiled)
    want = [0] * len(rules)
    for p in pkts:
        frame, ip_len = p.frame()
        action, index = _model(list(rules), p, ip_len)
        event(f"verdict {action} by {'a rule' if index >= 0 else 'no rule'}")
        assert l4.test_run(frame) == action, (p, rules)
        if index >= 0:
            want[index] += 1
    assert [c.packets for c in l4.counters()] == want
