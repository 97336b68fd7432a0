"""L4Drop's index of rules by protocol and port, and the program's walk over the rules
it names: which rules a packet can meet is computed in Python
(:mod:`anyedge.edge.l4drop_index`), and the program in the kernel must still give the
verdict and the counter of the first rule that matches, whatever its place among 64.

Kernel tests run the program with ``BPF_PROG_TEST_RUN``; they need root, clang,
bpftool and a kernel with BTF, and are skipped with the reason otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from anyedge.edge import build
from anyedge.edge.l4drop import L4Drop
from anyedge.edge.l4drop_index import NO_L4, build_index
from anyedge.edge.rules import MAX_RULES, parse_rules
from edge_packets import ICMP, eth, ipv4, tcp4, udp4

VIP = "192.0.2.10"
RULES = """\
rules:
  - {name: dns, protocol: udp, destination_ports: 53}
  - {name: high, protocol: tcp, source_ports: 1024-65535}
  - {name: v6-any, family: ipv6}
  - {name: spoofed, source: 100.64.0.0/10}
"""


def test_masks_name_the_rules_each_value_admits() -> None:
    ix = build_index(parse_rules(RULES))
    dns, high, v6, spoofed = (1 << i for i in range(4))
    assert ix.by_proto[17] == dns | spoofed  # IPv4 UDP
    assert ix.by_proto[6] == high | spoofed
    assert ix.by_proto[1] == spoofed
    assert ix.by_proto[256 + 17] == dns | v6  # IPv6 UDP
    assert ix.by_proto[256 + 58] == v6
    assert ix.by_dport[53] == dns | high | v6 | spoofed
    assert ix.by_dport[54] == high | v6 | spoofed
    assert ix.by_sport[1023] == dns | v6 | spoofed
    assert ix.by_sport[1024] == dns | high | v6 | spoofed
    # no transport header: only rules that read none of its fields
    assert ix.by_sport[NO_L4] == ix.by_dport[NO_L4] == v6 | spoofed


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "BPF programs need root (CAP_BPF and CAP_NET_ADMIN)"
    lacking = build.missing_tools()
    return "cannot build BPF programs, missing: " + ", ".join(lacking) if lacking else None


@pytest.fixture(scope="module")
def l4() -> Iterator[L4Drop]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with L4Drop() as loaded:
        yield loaded


def counts(l4: L4Drop) -> dict[str, int]:
    return {c.name: c.packets for c in l4.counters() if c.packets}


def test_the_first_match_among_64_rules_decides(l4: L4Drop) -> None:
    """63 port rules, every third a pass rule, and a catch-all prefix rule last: each
    port's packet is decided and counted by its own rule, the rest by the last."""
    rows = [
        f"  - {{name: p{i}, action: {'pass' if i % 3 == 0 else 'drop'}, protocol: udp, "
        f"destination_ports: {1000 + i}}}"
        for i in range(MAX_RULES - 1)
    ]
    rows.append("  - {name: rest, source: 203.0.113.0/24}")
    l4.replace(parse_rules("rules:\n" + "\n".join(rows) + "\n"))
    for i in range(MAX_RULES - 1):
        got = l4.test_run(udp4("203.0.113.5", VIP, 7, 1000 + i))
        assert got == ("pass" if i % 3 == 0 else "drop"), i
    assert l4.test_run(udp4("203.0.113.5", VIP, 7, 999)) == "drop"
    assert l4.test_run(eth(ipv4("203.0.113.5", VIP, ICMP, bytes(8)))) == "drop"
    assert l4.test_run(udp4("192.0.2.5", VIP, 7, 999)) == "pass"  # no rule at all
    want = {f"p{i}": 1 for i in range(MAX_RULES - 1)} | {"rest": 2}
    assert counts(l4) == want


def test_a_rule_behind_a_failing_candidate_still_matches(l4: L4Drop) -> None:
    """Several rules admit the packet's protocol and ports; the first fails on its
    prefix (or its payload), so a later one decides."""
    l4.replace(
        parse_rules(
            "rules:\n"
            "  - {name: a, protocol: tcp, source: 198.51.100.0/24, destination_ports: 80}\n"
            "  - {name: u, protocol: udp, source: 198.51.100.0/24, destination_ports: 80}\n"
            "  - {name: b, protocol: udp, destination_ports: 80, payload: {text: GET}}\n"
            "  - {name: c, protocol: tcp, destination_ports: 80, tcp_flags: SYN}\n"
        )
    )
    assert l4.test_run(tcp4("203.0.113.1", VIP, 5, 80, 0x02)) == "drop"
    assert l4.test_run(udp4("203.0.113.1", VIP, 5, 80, b"PUT /")) == "pass"
    assert l4.test_run(udp4("203.0.113.1", VIP, 5, 80, b"GET /")) == "drop"
    assert counts(l4) == {"c": 1, "b": 1}


@pytest.mark.parametrize("behind", [False, True], ids=["first-candidate", "behind-another"])
def test_signatures_at_the_end_of_the_frame(l4: L4Drop, behind: bool) -> None:
    """A signature in the last bytes of a frame (fewer than 16 after its offset) is
    read all the same; one that would run past the end does not match — whether the
    rule is the first candidate (read inline) or comes after one that failed (read by
    the program's payload function)."""
    first = "  - {name: other, source: 198.51.100.0/24}\n" if behind else ""
    l4.replace(
        parse_rules(
            "rules:\n"
            + first
            + "  - {name: tail, protocol: udp, payload: {offset: 10, text: VALUE}}\n"
        )
    )
    body = b"0123456789VALUE"
    assert l4.test_run(udp4("203.0.113.1", VIP, 5, 6, body)) == "drop"  # ends the frame
    assert l4.test_run(udp4("203.0.113.1", VIP, 5, 6, body[:-1])) == "pass"  # cut short
    assert l4.test_run(udp4("203.0.113.1", VIP, 5, 6, body + bytes(20))) == "drop"
    assert l4.test_run(udp4("203.0.113.1", VIP, 5, 6, b"0123456789VALUx" + bytes(20))) == "pass"
    assert counts(l4) == {"tail": 2}
