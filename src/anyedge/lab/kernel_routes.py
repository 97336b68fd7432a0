"""A router's BGP routes, read from its kernel over netlink, without starting ``ip``.

The lab waits for BGP to settle by reading every router's kernel routes five times a
second until they stop changing (:func:`anyedge.lab.build.wait_converged`).  Starting
``ip -n NS route show proto bgp`` for each router each time was ~5,000 processes in a run
of the test suite.  Here a thread enters the router's namespace, opens a netlink socket
there (a socket stays in the namespace it was made in) and asks for a route dump, as
``ip`` does.

What comes back is kept as it came, less what changes by itself: each route of the main
table whose protocol is BGP (``RTPROT_BGP``), as its ``rtmsg`` and attributes, without
the netlink header (sequence numbers and port ids differ from dump to dump) and without
``RTA_CACHEINFO`` (IPv6 routes carry use counters and ages there).  Two readings are
equal exactly when the routes (prefixes, next hops, devices, metrics, multipath legs and
their flags) are.  :func:`destinations` decodes the prefixes, for people and tests.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator

from ..adapters import netns

NETLINK_ROUTE = 0
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTPROT_BGP = 186
RT_TABLE_MAIN = 254
RTA_DST, RTA_TABLE, RTA_CACHEINFO = 1, 15, 12

_NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, ...
_RTA = struct.Struct("=HH")  # length, type


class RouteDumpError(OSError):
    """The kernel refused the dump (an ``NLMSG_ERROR`` with its errno)."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attributes(body: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, the whole attribute) of each route attribute in ``body``."""
    pos = 0
    while pos + _RTA.size <= len(body):
        length, kind = _RTA.unpack_from(body, pos)
        if length < _RTA.size:
            return
        yield kind, body[pos : pos + length]
        pos += _align(length)


def _table(rt: tuple[int, ...], attrs: list[tuple[int, bytes]]) -> int:
    for kind, raw in attrs:
        if kind == RTA_TABLE and len(raw) >= 8:
            return int(struct.unpack_from("=I", raw, 4)[0])
    return rt[4]


def bgp_routes(data: bytes) -> Iterator[bytes]:
    """The main table's BGP routes in a dump's bytes, each as its ``rtmsg`` and its
    attributes less ``RTA_CACHEINFO``.  Raises :class:`RouteDumpError` on an error
    message; stops at ``NLMSG_DONE``."""
    pos = 0
    while pos + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, pos)
        if length < _NLMSG.size:
            return
        body = data[pos + _NLMSG.size : pos + length]
        pos += _align(length)
        if kind == NLMSG_DONE:
            return
        if kind == NLMSG_ERROR:
            errno = -int(struct.unpack_from("=i", body)[0]) if len(body) >= 4 else 0
            if errno:
                raise RouteDumpError(errno, f"route dump: {errno}")
            continue
        if kind != RTM_NEWROUTE or len(body) < _RTMSG.size:
            continue
        rt = _RTMSG.unpack_from(body)
        attrs = list(_attributes(body[_RTMSG.size :]))
        if rt[5] != RTPROT_BGP or _table(rt, attrs) != RT_TABLE_MAIN:
            continue
        yield body[: _RTMSG.size] + b"".join(raw for kind, raw in attrs if kind != RTA_CACHEINFO)


def _dump(sock: socket.socket, family: int) -> bytes:
    """Ask for every route of ``family`` and read until the dump is done."""
    request = _NLMSG.pack(_NLMSG.size + _RTMSG.size, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    sock.send(request + _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0))
    parts: list[bytes] = []
    while True:
        chunk = sock.recv(1 << 16)
        parts.append(chunk)
        pos = 0
        while pos + _NLMSG.size <= len(chunk):
            length, kind = _NLMSG.unpack_from(chunk, pos)[:2]
            if kind in (NLMSG_DONE, NLMSG_ERROR) or length < _NLMSG.size:
                return b"".join(parts)
            pos += _align(length)


def _netlink(namespace: str) -> socket.socket:
    """A route netlink socket of ``namespace`` (made in it; it stays there), bound."""
    with netns.entered(namespace):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.settimeout(30.0)
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


def read(namespace: str, families: tuple[int, ...] = (socket.AF_INET,)) -> bytes:
    """The BGP routes of ``families`` in ``namespace``'s main table, as bytes that are
    equal for equal routes (see the module doc)."""
    with _netlink(namespace) as sock:
        return b"".join(
            route
            for family in families
            for route in (b"%d" % family, *bgp_routes(_dump(sock, family)))
        )


def destinations(namespace: str, family: int = socket.AF_INET) -> list[str]:
    """The prefixes of ``namespace``'s BGP routes of ``family``, in the kernel's order."""
    with _netlink(namespace) as sock:
        out = []
        for route in bgp_routes(_dump(sock, family)):
            dst_len = route[1]
            dst = bytes(4 if family == socket.AF_INET else 16)
            for kind, raw in _attributes(route[_RTMSG.size :]):
                if kind == RTA_DST:
                    dst = raw[_RTA.size :]
            out.append(str(ipaddress.ip_network((dst, dst_len))))
        return out
