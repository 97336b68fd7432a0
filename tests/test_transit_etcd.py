"""The transit applier on the store's etcd back end: a real 3-member cluster (marker ``lab``).

The applier takes any replica; this runs it on an :class:`EtcdReplica` with writes
through an :class:`EtcdWriter`: a customer appears, changes, and goes, and its
namespace and rules follow; a member killed in between changes nothing for the applier.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyedge.adapters import netns
from anyedge.store import EtcdReplica, EtcdWriter
from anyedge.transit.applier import Applier
from anyedge.transit.config import Customer, put_customer, remove_customer
from anyedge.transit.nsnft import NamespaceNft
from store_support import EtcdCluster, has_etcd
from transit_support import why_not

pytestmark = pytest.mark.lab


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    reason = why_not() or (None if has_etcd() else "the etcd binary is missing")
    if reason:
        pytest.skip(reason)
    c = EtcdCluster(tmp_path)
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop()


def comments(ns: str) -> list[str]:
    n = NamespaceNft(ns)
    try:
        rs = n.ruleset()
    finally:
        n.close()
    return [i["rule"]["comment"] for i in rs["nftables"] if "rule" in i]


def test_the_applier_follows_an_etcd_cluster(cluster: EtcdCluster) -> None:
    base = f"aetret{os.getpid() % 10000}{secrets.token_hex(2)}"
    host = f"{base}-h"
    prefix = f"/transit-test-{base}/"
    netns.add(host)
    writer = EtcdWriter(cluster.client_urls, prefix)
    replica = EtcdReplica(cluster.client_urls, prefix)
    applier = Applier(replica, host=host, ns_prefix=f"{base}-").start()
    try:
        ftp = {"action": "accept", "protocol": "tcp", "ports": [21], "comment": "ftp"}
        tunnel = {"router": "198.51.100.2", "key": 1}
        acme = Customer.model_validate(
            {"id": "acme", "prefixes": ["203.0.113.0/24"], "tunnel": tunnel, "rules": [ftp]}
        )
        seq = put_customer(writer, acme)
        assert applier.wait("acme", seq, timeout=30)
        assert comments(applier.namespace("acme")) == ["replies", "ftp", "default"]
        cluster.kill(0)
        seq = put_customer(writer, acme.model_copy(update={"rules": ()}))
        assert applier.wait("acme", seq, timeout=30)
        assert comments(applier.namespace("acme")) == ["replies", "default"]
        seq = remove_customer(writer, "acme")
        assert replica.wait(seq, timeout=30)
        applier.close(remove=False)  # after every batch queued before it
        assert not netns.exists(applier.namespace("acme"))
    finally:
        applier.close()
        replica.close()
        writer.close()
        for ns in netns.listed(base):
            netns.remove(ns)
    assert not netns.listed(base)
