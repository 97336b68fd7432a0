"""Magic Transit's firewall: customer configuration in the store, applied per namespace.

The pure half checks the models and the nftables batch a configuration becomes.  The
rest (marker ``lab``: root, namespaces) runs the real thing: an embedded store, an
applier in a server namespace, customers' namespaces with their tables loaded through
libnftables, and UDP packets from an Internet-side namespace, read back from each
customer's TUN device (what got through its firewall).
"""

from __future__ import annotations

import math
import socket
import threading
import time
import zlib
from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from anyedge.adapters import netns
from anyedge.store import dumps
from anyedge.transit import ruleset
from anyedge.transit.config import Customer, key_of, put_customer, remove_customer
from anyedge.transit.libnft import Nft
from transit_support import Server, drain, server, udp_dports, why_not


def customer(cid: str, prefix: str, rules: list[dict[str, Any]], **kw: Any) -> Customer:
    tunnel = {"router": "198.51.100.2", "key": zlib.crc32(cid.encode())}  # one key each
    return Customer.model_validate(
        {"id": cid, "prefixes": [prefix], "tunnel": tunnel, "rules": rules, **kw}
    )


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(ValidationError, match="ports need protocol"):
        customer("a", "203.0.113.0/24", [{"action": "accept", "ports": [80]}])
    with pytest.raises(ValidationError, match="outside the customer's prefixes"):
        customer("a", "203.0.113.0/25", [{"action": "drop", "destinations": ["203.0.113.200"]}])
    with pytest.raises(ValidationError, match="port"):
        customer("a", "203.0.113.0/24", [{"action": "drop", "protocol": "tcp", "ports": [[9, 1]]}])
    with pytest.raises(ValidationError):
        customer("Not An Id", "203.0.113.0/24", [])


def test_a_rule_over_both_families_becomes_two() -> None:
    c = customer(
        "a",
        "203.0.113.0/24",
        [
            {
                "action": "accept",
                "protocol": "udp",
                "sources": ["198.51.100.0/24", "2001:db8::/32"],
                "rate_limit": {"pps": 10},
            },
            {"action": "drop", "sources": ["2001:db8::/32"], "destinations": ["203.0.113.0/25"]},
        ],
    )
    rules = [cmd["add"]["rule"] for cmd in ruleset.batch(c) if "rule" in cmd.get("add", {})]
    comments = [r["comment"] for r in rules]
    # replies; rule 0: (limit, accept) x (ip, ip6); rule 1 matches nothing (v6 from, v4 to)
    assert comments == ["replies"] + ["rule 0"] * 4 + ["default"]
    assert rules[-1]["expr"] == [{"counter": None}, {"drop": None}]


lab = pytest.mark.lab


@pytest.fixture
def srv() -> Any:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    with server("fw") as s:
        yield s


def table(s: Server, cid: str) -> list[dict[str, Any]]:
    """The customer's rules as its namespace's kernel holds them."""
    with netns.entered(s.applier.namespace(cid)), Nft() as nft:
        rs = nft.ruleset()
    return [i["rule"] for i in rs["nftables"] if "rule" in i]


@lab
def test_the_applier_follows_the_store(srv: Server) -> None:
    s = srv
    a = customer(
        "acme",
        "203.0.113.0/25",
        [{"action": "accept", "protocol": "tcp", "ports": [20, 21], "comment": "ftp"}],
    )
    seq = put_customer(s.writer, a)
    assert s.applier.wait("acme", seq)
    assert [r["comment"] for r in table(s, "acme")] == ["replies", "ftp", "default"]

    # a change replaces the table whole; a bad value leaves the last good one in place
    seq = put_customer(s.writer, a.model_copy(update={"rules": (), "default": "accept"}))
    assert s.applier.wait("acme", seq)
    assert [r["comment"] for r in table(s, "acme")] == ["replies", "default"]
    errors = s.applier.stats.errors
    s.writer.put(key_of("acme"), dumps({"id": "acme", "prefixes": []}))
    seq = put_customer(s.writer, customer("beta", "203.0.113.128/25", []))
    assert s.applier.wait("beta", seq)
    assert s.applier.stats.errors == errors + 1
    assert [r["comment"] for r in table(s, "acme")] == ["replies", "default"]

    # a customer claiming another's prefix or GRE key is refused; the other is untouched
    acme_key = zlib.crc32(b"acme")
    thief = {
        "id": "thief",
        "prefixes": ["192.0.2.0/24"],
        "tunnel": {"router": "192.0.2.1", "key": 9},
    }
    steal_prefix = {"prefixes": ["203.0.113.64/26"]}
    steal_key = {"tunnel": {"router": "192.0.2.1", "key": acme_key}}
    steals = [(steal_prefix, "overlaps customer acme's"), (steal_key, "is customer acme's")]
    for bad, why in steals:
        put_customer(s.writer, Customer.model_validate({**thief, **bad}))
        # the worker applies in order: once a later write is applied, the thief's was seen
        seq = put_customer(s.writer, customer("beta", "203.0.113.128/25", []))
        assert s.applier.wait("beta", seq)
        assert why in s.applier.stats.last_error
    assert s.applier.stats.errors == errors + 3
    assert "thief" not in s.applier.stats.by_customer
    assert not netns.exists(s.applier.namespace("thief"))
    assert [r["comment"] for r in table(s, "acme")] == ["replies", "default"]

    # removing a customer removes its namespace; the other stays
    seq = remove_customer(s.writer, "acme")
    s.replica.wait(seq)
    assert s.applier.wait("beta", 0)
    s.applier.close(remove=False)  # the worker has finished every queued batch
    assert not netns.exists(s.applier.namespace("acme"))
    assert netns.exists(s.applier.namespace("beta"))


@lab
def test_a_restarted_applier_starts_from_what_the_store_holds(srv: Server) -> None:
    from anyedge.transit.applier import Applier

    s = srv
    seq = put_customer(s.writer, customer("late", "203.0.113.0/24", []))
    assert s.applier.wait("late", seq)
    s.applier.close(remove=False)  # the daemon dies; its namespace stays behind
    second = Applier(s.replica, host=s.host, ns_prefix=s.applier.ns_prefix).start()
    try:
        assert second.wait("late", seq), second.stats.last_error
        assert netns.exists(second.namespace("late"))
    finally:
        second.close()
    assert not netns.exists(second.namespace("late"))


def send(s: Server, targets: list[tuple[str, int]], n: int) -> None:
    sock = s.udp()
    with sock:
        for _ in range(n):
            for addr, port in targets:
                sock.sendto(b"x" * 32, (addr, port))


@lab
def test_one_customers_rules_never_touch_anothers_traffic(srv: Server) -> None:
    s = srv
    a = customer(
        "a",
        "203.0.113.0/25",
        [{"action": "drop", "protocol": "udp", "ports": [5000]}],
        default="accept",
    )
    b = customer(
        "b",
        "203.0.113.128/25",
        [{"action": "accept", "protocol": "udp", "ports": [5000]}],
        default="drop",
    )
    for c in (a, b):
        assert s.applier.wait(c.id, put_customer(s.writer, c))
    b_rules = table(s, "b")
    tun_a, tun_b = s.tun("a"), s.tun("b")
    targets = [
        ("203.0.113.10", 5000),
        ("203.0.113.10", 6000),
        ("203.0.113.200", 5000),
        ("203.0.113.200", 6000),
    ]
    send(s, targets, 20)
    got_a = Counter(udp_dports(drain(tun_a)))
    got_b = Counter(udp_dports(drain(tun_b)))
    assert got_a == {("203.0.113.10", 6000): 20}
    assert got_b == {("203.0.113.200", 5000): 20}
    with netns.entered(s.applier.namespace("a")), Nft() as nft:
        ca = ruleset.counters(nft.ruleset())
    with netns.entered(s.applier.namespace("b")), Nft() as nft:
        cb = ruleset.counters(nft.ruleset())
    assert ca == {"rule 0": 20, "default": 20}  # only A's 40 packets met A's rules
    assert cb == {"rule 0": 20, "default": 20}

    # changing A's rules leaves B's table as it was, handles and all (counters aside)
    seq = put_customer(s.writer, a.model_copy(update={"rules": (), "default": "drop"}))
    assert s.applier.wait("a", seq)
    strip = [{k: v for k, v in r.items() if k != "expr"} for r in b_rules]
    assert [{k: v for k, v in r.items() if k != "expr"} for r in table(s, "b")] == strip
    send(s, targets, 5)
    assert Counter(udp_dports(drain(tun_a))) == {}
    assert Counter(udp_dports(drain(tun_b))) == {("203.0.113.200", 5000): 5}


@lab
def test_traffic_during_rule_changes_never_meets_a_half_applied_set(srv: Server) -> None:
    """Flip between two rule sets that differ in length while sending.  Both drop port
    6000 (a rule in the middle) and accept port 7000 (a rule after it); every other
    packet meets the default drop.  A set caught half-applied — emptied, or with only
    the rules before the drop — would let 6000 through or lose 7000."""
    s = srv

    def version(n: int) -> Customer:
        fillers = [{"action": "accept", "protocol": "tcp", "ports": [10000 + i]} for i in range(n)]
        return customer(
            "flip",
            "203.0.113.0/24",
            [
                *fillers,
                {"action": "drop", "protocol": "udp", "ports": [6000]},
                *fillers,
                {"action": "accept", "protocol": "udp", "ports": [7000]},
            ],
            default="drop",
        )

    assert s.applier.wait("flip", put_customer(s.writer, version(40)))
    tun = s.tun("flip")
    received: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            received.extend(drain(tun, quiet=0.05))

    t = threading.Thread(target=reader)
    t.start()
    sent = 0
    sock = s.udp()
    try:
        for i in range(60):
            seq = put_customer(s.writer, version(40 + i % 2))
            while not s.applier.wait("flip", seq, timeout=0.001):
                for port in (6000, 7000):
                    sock.sendto(b"y" * 16, ("203.0.113.7", port))
                sent += 1
    finally:
        sock.close()
        received.extend(drain(tun, quiet=0.5))
        stop.set()
        t.join()
    got = Counter(p for _, p in udp_dports(received))
    assert sent > 0
    assert s.applier.stats.applied >= 61
    assert got == {7000: sent}


@lab
def test_a_rate_limited_rule_passes_its_burst_and_drops_the_rest(srv: Server) -> None:
    """1 packet/s with a burst of 5: of 50 sent back to back, 5 pass, plus one per
    second the sending took; the rest meet the limit's drop, counted."""
    s = srv
    c = customer("rl", "203.0.113.0/24", [
        {"action": "accept", "protocol": "udp", "ports": [9000],
         "rate_limit": {"pps": 1, "burst": 5}, "comment": "limited"}])  # fmt: skip
    assert s.applier.wait("rl", put_customer(s.writer, c))
    tun = s.tun("rl")
    t0 = time.monotonic()
    send(s, [("203.0.113.9", 9000)], 50)
    took = time.monotonic() - t0
    got = len(udp_dports(drain(tun)))
    assert 5 <= got <= 5 + math.ceil(took)
    with netns.entered(s.applier.namespace("rl")), Nft() as nft:
        counted = ruleset.counters(nft.ruleset())
    assert counted == {"limited": 50, "default": 0}  # over the limit (dropped) + accepted


@lab
def test_a_per_source_limit_holds_for_each_source_on_its_own(srv: Server) -> None:
    """1 packet/s with a burst of 5 per source: two sources sending 50 each back to back
    get 5 through each (plus one per second the sending took), not 5 between them."""
    s = srv
    netns.batch(s.client, ["addr add 100.64.0.3/24 dev eth0"])
    limit = {"pps": 1, "burst": 5, "per_source": True}
    c = customer("ps", "203.0.113.0/24", [
        {"action": "accept", "protocol": "udp", "ports": [9000], "rate_limit": limit}])  # fmt: skip
    assert s.applier.wait("ps", put_customer(s.writer, c))
    tun = s.tun("ps")
    socks = [s.udp(), s.udp()]
    for sock, addr in zip(socks, ("100.64.0.2", "100.64.0.3"), strict=True):
        sock.bind((addr, 0))
    t0 = time.monotonic()
    for _ in range(50):
        for sock in socks:
            sock.sendto(b"z", ("203.0.113.9", 9000))
    took = time.monotonic() - t0
    for sock in socks:
        sock.close()
    got = Counter(socket.inet_ntoa(p[12:16]) for p in drain(tun) if p[0] >> 4 == 4)
    assert set(got) == {"100.64.0.2", "100.64.0.3"}
    for n in got.values():
        assert 5 <= n <= 5 + math.ceil(took)


def _sets(s: Server, cid: str) -> list[str]:
    with netns.entered(s.applier.namespace(cid)), Nft() as nft:
        rs = nft.ruleset()
    return sorted(i["set"]["name"] for i in rs["nftables"] if "set" in i)


@lab
def test_a_customer_with_per_source_limits_can_be_changed(srv: Server) -> None:
    """The kernel marks a set a rule updates as dynamic; declaring it again in the next
    batch failed with "File exists", so such a customer's first configuration stuck."""
    s = srv
    limit = {"pps": 100, "burst": 10, "per_source": True}
    games = {"action": "accept", "protocol": "udp", "ports": [9000], "rate_limit": limit}
    c = customer("ps", "203.0.113.0/24", [games], default="accept")
    assert s.applier.wait("ps", put_customer(s.writer, c))
    assert _sets(s, "ps") == ["rl0v4", "rl0v6"]
    drop = {"action": "drop", "sources": ["100.64.66.0/24"], "comment": "attackers"}
    changes = [
        ([drop, games], ["rl1v4", "rl1v6"]),  # the limit moves to rule 1: new sets
        ([drop, {**games, "ports": [9001]}], ["rl1v4", "rl1v6"]),  # same sets kept
        ([drop], []),  # no per-source limit left: its sets go too
    ]
    for rules, sets in changes:
        errors = s.applier.stats.errors
        seq = put_customer(s.writer, customer("ps", "203.0.113.0/24", rules, default="accept"))
        assert s.applier.wait("ps", seq)
        assert s.applier.stats.errors == errors, s.applier.stats.last_error
        assert _sets(s, "ps") == sets
    assert [r["comment"] for r in table(s, "ps")] == ["replies", "attackers", "default"]
