"""The netlink route dump's reader, on crafted messages (the lab test reads real ones:
tests/test_lab.py::test_kernel_routes_read_over_netlink_are_what_ip_shows)."""

from __future__ import annotations

import socket
import struct

import pytest

from anyedge.lab.kernel_routes import (
    NLMSG_DONE,
    NLMSG_ERROR,
    RTA_CACHEINFO,
    RTA_DST,
    RTA_TABLE,
    RTM_NEWROUTE,
    RTPROT_BGP,
    RouteDumpError,
    bgp_routes,
)

RTA_GATEWAY, RTA_OIF = 5, 4


def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + bytes(-len(raw) % 4)


def route(
    dst: str, length: int, gateway: str, protocol: int = RTPROT_BGP, table: int = 254,
    extra: bytes = b"", seq: int = 1, pid: int = 4242,
) -> bytes:  # fmt: skip
    rt = struct.pack(
        "=BBBBBBBBI", socket.AF_INET, length, 0, 0, table if table < 256 else 252, protocol, 0, 1, 0
    )
    body = rt + attr(RTA_TABLE, struct.pack("=I", table)) + attr(RTA_DST, socket.inet_aton(dst))
    body += attr(RTA_GATEWAY, socket.inet_aton(gateway)) + attr(RTA_OIF, struct.pack("=I", 3))
    body += extra
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWROUTE, 2, seq, pid) + body


DONE = struct.pack("=IHHIIi", 20, NLMSG_DONE, 2, 1, 4242, 0)


def test_only_the_main_tables_bgp_routes_are_kept() -> None:
    dump = (
        route("198.51.100.0", 24, "10.0.0.1")
        + route("10.9.0.0", 16, "10.0.0.1", protocol=2)  # the kernel's own
        + route("203.0.113.0", 24, "10.0.0.2", table=1000)  # another table (by RTA_TABLE)
        + route("203.0.113.0", 24, "10.0.0.3")
        + DONE
        + route("192.0.2.0", 24, "10.0.0.4")  # after the end: not read
    )
    got = list(bgp_routes(dump))
    assert len(got) == 2
    assert socket.inet_aton("198.51.100.0") in got[0]
    assert socket.inet_aton("10.0.0.3") in got[1]


def test_readings_differ_only_where_routes_do() -> None:
    cache_a = attr(RTA_CACHEINFO, struct.pack("=8I", 0, 0, 0, 0, 10, 0, 0, 0))
    cache_b = attr(RTA_CACHEINFO, struct.pack("=8I", 0, 99, 0, 0, 11, 0, 0, 0))
    a = b"".join(bgp_routes(route("198.51.100.0", 24, "10.0.0.1", extra=cache_a) + DONE))
    # another dump: other sequence number and port id, other use counters
    b = b"".join(
        bgp_routes(route("198.51.100.0", 24, "10.0.0.1", extra=cache_b, seq=7, pid=9) + DONE)
    )
    assert a == b
    c = b"".join(bgp_routes(route("198.51.100.0", 24, "10.0.0.2", extra=cache_a) + DONE))
    assert c != a  # another next hop


def test_an_error_message_raises_with_its_errno() -> None:
    error = struct.pack("=IHHIIi", 36, NLMSG_ERROR, 0, 1, 4242, -1) + bytes(16)
    with pytest.raises(RouteDumpError) as e:
        list(bgp_routes(error))
    assert e.value.errno == 1
    # an acknowledgement (errno 0) is no error
    ack = struct.pack("=IHHIIi", 36, NLMSG_ERROR, 0, 1, 4242, 0) + bytes(16)
    assert list(bgp_routes(ack + route("198.51.100.0", 24, "10.0.0.1") + DONE)) != []


def test_truncated_input_ends_the_reading() -> None:
    whole = route("198.51.100.0", 24, "10.0.0.1")
    assert list(bgp_routes(whole[:10])) == []
    assert list(bgp_routes(struct.pack("=IHHII", 4, RTM_NEWROUTE, 0, 0, 0))) == []
