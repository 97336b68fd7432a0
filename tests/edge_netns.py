"""Two network namespaces joined by a veth pair, for the edge's real-packet tests:
``PREFIX-XXXXXX-a`` (192.0.2.1/24 on eth0) and ``-b`` (192.0.2.2/24), removed whatever
the test did, and checked gone."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from anyedge.adapters import netns

ADDR_A, ADDR_B = "192.0.2.1", "192.0.2.2"


@contextmanager
def veth_pair(prefix: str) -> Iterator[tuple[str, str]]:
    base = f"{prefix}-{secrets.token_hex(3)}"
    a, b = f"{base}-a", f"{base}-b"
    try:
        netns.add(a)
        netns.add(b)
        netns.veth(a, "eth0", b, "eth0")
        netns.batch(a, [f"addr add {ADDR_A}/24 dev eth0"])
        netns.batch(b, [f"addr add {ADDR_B}/24 dev eth0"])
        yield a, b
    finally:
        for ns in (a, b):
            if netns.exists(ns):
                netns.remove(ns)
        assert not netns.listed(base)
