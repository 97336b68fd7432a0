"""What keeps a change to many customers fast without giving up isolation.

The pure half checks :class:`~anyedge.transit.config.Claims`, the index of GRE keys and
prefixes an applier keeps instead of re-parsing every other customer per change.  The
rest (marker ``lab``: root, namespaces): a :class:`NamespaceNft` run from the test's
own thread changes its namespace's nftables and no other (not the thread's own, not a
sibling's), brings the thread back to its namespace and opens nothing per run; and an
applier given the same configuration again leaves the kernel's rules as they were (no
transaction at all) while still reporting it applied, and one whose table was deleted
by hand makes it again on the next change.
"""

from __future__ import annotations

import os
import secrets
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from anyedge.adapters import netns
from anyedge.transit import ruleset
from anyedge.transit.config import Claims, Customer, put_customer
from anyedge.transit.libnft import Nft
from anyedge.transit.nsnft import NamespaceNft
from transit_support import Server, server, why_not


def customer(cid: str, *prefixes: str, key: int | None = None) -> Customer:
    k = zlib.crc32(cid.encode()) if key is None else key
    return Customer.model_validate(
        {"id": cid, "prefixes": list(prefixes), "tunnel": {"router": "198.51.100.2", "key": k}}
    )


def test_claims_refuse_a_shared_key_or_overlapping_prefixes_and_forget_a_customer_gone() -> None:
    claims = Claims([customer("a", "203.0.113.0/25", "2001:db8:a::/48", key=7)])
    assert claims.conflict(customer("b", "203.0.113.128/25", "2001:db8:b::/48")) is None
    assert claims.conflict(customer("b", "203.0.113.64/26")) == (
        "prefix 203.0.113.64/26 overlaps customer a's 203.0.113.0/25"
    )
    assert "overlaps customer a's 2001:db8:a::/48" in str(
        claims.conflict(customer("b", "2001:db8::/32"))
    )
    assert claims.conflict(customer("b", "198.51.100.0/24", key=7)) == "GRE key 7 is customer a's"
    # a customer's own earlier configuration does not count against its next one
    assert claims.conflict(customer("a", "203.0.113.0/24", key=7)) is None
    claims.hold(customer("a", "192.0.2.0/24", key=8))  # a changes prefixes and key
    assert claims.conflict(customer("b", "203.0.113.0/24", key=7)) is None
    assert claims.conflict(customer("b", "192.0.2.128/25")) is not None
    claims.release("a")
    assert claims.conflict(customer("b", "192.0.2.0/24", key=8)) is None


lab = pytest.mark.lab


@pytest.fixture
def two_namespaces() -> Iterator[list[str]]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    base = f"aetrns{os.getpid() % 10000}{secrets.token_hex(2)}"
    names = [f"{base}-a", f"{base}-b"]
    try:
        for n in names:
            netns.add(n)
        yield names
    finally:
        for n in names:
            netns.remove(n)
        assert not netns.listed(base)


def tables(ns: str | None) -> set[str]:
    with netns.entered(ns), Nft() as nft:
        rs = nft.run([{"list": {"tables": None}}])
    return {i["table"]["name"] for i in rs["nftables"] if "table" in i}


def fds() -> set[str]:
    return set(os.listdir("/proc/thread-self/fd"))


@lab
def test_a_context_opened_inside_a_namespace_changes_that_namespace_only(
    two_namespaces: list[str],
) -> None:
    a, b = two_namespaces
    name = f"aetest{os.getpid()}"
    here = os.stat("/proc/thread-self/ns/net").st_ino
    ctx_a, ctx_b = NamespaceNft(a), NamespaceNft(b)
    try:
        assert os.stat("/proc/thread-self/ns/net").st_ino == here
        ctx_a.run([{"add": {"table": {"family": "inet", "name": f"{name}x0"}}}])
        before = fds()  # the thread's own namespace is kept open from the first run on
        for i in range(1, 20):
            ctx_a.run([{"add": {"table": {"family": "inet", "name": f"{name}x{i}"}}}])
        assert fds() == before
        assert os.stat("/proc/thread-self/ns/net").st_ino == here
        ctx_b.run([{"add": {"table": {"family": "inet", "name": name}}}])
        assert tables(a) == {f"{name}x{i}" for i in range(20)}
        assert tables(b) == {name}
        assert not {t for t in tables(None) if t.startswith(name)}
    finally:
        ctx_a.close()
        ctx_b.close()


@pytest.fixture
def srv() -> Iterator[Server]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    with server("ns") as s:
        yield s


def handles(s: Server, cid: str) -> list[Any]:
    with netns.entered(s.applier.namespace(cid)), Nft() as nft:
        rs = nft.ruleset()
    return [i["rule"]["handle"] for i in rs["nftables"] if "rule" in i]


@lab
def test_the_same_configuration_written_again_is_not_applied_again(srv: Server) -> None:
    s = srv
    c = Customer.model_validate(
        {
            "id": "same",
            "prefixes": ["203.0.113.0/24"],
            "tunnel": {"router": "198.51.100.2", "key": 5},
            "rules": [{"action": "accept", "protocol": "tcp", "ports": [80]}],
        }
    )
    assert s.applier.wait("same", put_customer(s.writer, c))
    first = handles(s, "same")
    assert s.applier.wait("same", seq := put_customer(s.writer, c))
    assert s.applier.stats.by_customer["same"].seq == seq
    assert handles(s, "same") == first  # no flush, no new rules: the kernel kept its own
    changed = c.model_copy(update={"default": "accept"})
    assert s.applier.wait("same", put_customer(s.writer, changed))
    assert handles(s, "same") != first
    # a table deleted by hand is made again by the next change
    with netns.entered(s.applier.namespace("same")), Nft() as nft:
        nft.run([{"delete": {"table": {"family": "inet", "name": ruleset.TABLE}}}])
    assert s.applier.wait("same", put_customer(s.writer, c))
    assert len(handles(s, "same")) == 3  # replies, rule 0, default
    assert s.applier.stats.errors == 0
