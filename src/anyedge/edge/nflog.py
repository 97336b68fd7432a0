"""NFLOG over netlink: packets an nftables ``log group N`` rule copies to user space.

An nft rule such as ``icmpv6 type packet-too-big log group 33`` hands a copy of every
matching packet to the kernel's ``nfnetlink_log``; a process that has bound group 33 on
a ``NETLINK_NETFILTER`` socket reads them, one netlink message per packet.  The packet
itself goes on through the stack untouched (logging is not queueing).

The protocol (``include/uapi/linux/netfilter/nfnetlink_log.h``), written down here:

* every message is a ``nlmsghdr`` (length, type, flags, seq, pid: ``=IHHII``), then an
  ``nfgenmsg`` (family, version, resource id big-endian: ``=BBH``, the id is the group),
  then attributes (``nlattr``: length, type, value padded to 4 bytes);
* the message type is ``NFNL_SUBSYS_ULOG << 8 | msg``: ``NFULNL_MSG_PACKET`` (0)
  coming in, ``NFULNL_MSG_CONFIG`` (1) going out;
* configuration: bind the group (``NFULA_CFG_CMD`` = BIND), copy whole packets
  (``NFULA_CFG_MODE``), and turn batching off — the kernel otherwise holds up to 100
  packets or one second before sending (``NFULA_CFG_QTHRESH`` 1, ``NFULA_CFG_TIMEOUT``
  0), which would delay every Packet Too Big by up to a second.

:func:`parse` is bytes in, :class:`Packet` records out (no I/O, tested on built
messages); :class:`NflogSocket` is the socket.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

# configuration attributes and commands
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2

# packet attributes
NFULA_PACKET_HDR = 1
NFULA_IFINDEX_INDEV = 4
NFULA_HWADDR = 8
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_HWHEADER = 16

_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
_NLA_TYPE_MASK = 0x3FFF


class NflogError(OSError):
    """The kernel refused a configuration request (errno and the request's meaning)."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True, slots=True)
class Packet:
    """One logged packet: its family (``AF_INET``/``AF_INET6``), the interface it came
    in on, the link-layer header it came with (``b""`` when the kernel gave none), and
    the packet from its network header on."""

    family: int
    ifindex: int
    hwheader: bytes
    payload: bytes
    prefix: str = ""

    @property
    def source_mac(self) -> bytes:
        """The Ethernet source address, when the link header is Ethernet's."""
        return self.hwheader[6:12] if len(self.hwheader) >= 14 else b""


def _align(n: int) -> int:
    return (n + 3) & ~3


def attributes(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """The ``(type, value)`` attributes from ``offset`` to the end of ``data``."""
    while offset + _NLA.size <= len(data):
        length, kind = _NLA.unpack_from(data, offset)
        if length < _NLA.size or offset + length > len(data):
            return
        yield kind & _NLA_TYPE_MASK, data[offset + _NLA.size : offset + length]
        offset += _align(length)


def attribute(kind: int, value: bytes) -> bytes:
    raw = _NLA.pack(_NLA.size + len(value), kind) + value
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def message(msg: int, group: int, attrs: bytes, seq: int, family: int = 0) -> bytes:
    """One nfnetlink_log request (``NFULNL_MSG_CONFIG`` and its attributes)."""
    body = _NFGEN.pack(family, 0, socket.htons(group)) + attrs
    kind = NFNL_SUBSYS_ULOG << 8 | msg
    return _NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def parse(data: bytes) -> Iterator[Packet | int]:
    """The messages of one netlink datagram: a :class:`Packet` for each logged packet,
    an ``int`` (0 or a negative errno) for each acknowledgement or error."""
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size or offset + length > len(data):
            return
        body = data[offset + _NLMSG.size : offset + length]
        offset += _align(length)
        if kind == NLMSG_ERROR:
            yield struct.unpack_from("=i", body)[0] if len(body) >= 4 else -1
        elif kind == (NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET) and len(body) >= _NFGEN.size:
            family = body[0]
            ifindex, hwheader, payload, prefix = 0, b"", b"", ""
            for a, value in attributes(body, _NFGEN.size):
                if a == NFULA_IFINDEX_INDEV and len(value) >= 4:
                    ifindex = struct.unpack("!I", value[:4])[0]
                elif a == NFULA_HWHEADER:
                    hwheader = value
                elif a == NFULA_PAYLOAD:
                    payload = value
                elif a == NFULA_PREFIX:
                    prefix = value.rstrip(b"\0").decode(errors="replace")
            yield Packet(family, ifindex, hwheader, payload, prefix)


class NflogSocket:
    """A ``NETLINK_NETFILTER`` socket bound to one NFLOG group, batching off.

    Open it in the namespace whose nft rules log to the group (the socket stays there).
    Only one process may bind a group at a time; a second gets ``EPERM``."""

    def __init__(self, group: int, copy_range: int = 0xFFFF, rcvbuf: int = 1 << 22) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG groups are 0-65535, not {group}")
        self.group = group
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, 0))
            self._seq = 0
            self._config(attribute(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])))
            self._config(
                attribute(NFULA_CFG_MODE, struct.pack("!IBB", copy_range, NFULNL_COPY_PACKET, 0))
                + attribute(NFULA_CFG_QTHRESH, struct.pack("!I", 1))
                + attribute(NFULA_CFG_TIMEOUT, struct.pack("!I", 0))
            )
        except BaseException:
            self.sock.close()
            raise

    def _config(self, attrs: bytes) -> None:
        self._seq += 1
        self.sock.send(message(NFULNL_MSG_CONFIG, self.group, attrs, self._seq))
        while True:
            for item in parse(self.sock.recv(65536)):
                if isinstance(item, int):
                    if item:
                        why = os.strerror(-item)
                        if -item in (errno.EPERM, errno.EBUSY):
                            why += " (another process has bound it?)"
                        raise NflogError(-item, f"NFLOG group {self.group}: {why}")
                    return

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[Packet]:
        """The packets of the next datagram (blocks unless the socket is non-blocking)."""
        return [p for p in parse(self.sock.recv(1 << 17)) if isinstance(p, Packet)]

    def close(self) -> None:
        try:
            self._seq += 1
            unbind = attribute(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND]))
            self.sock.send(message(NFULNL_MSG_CONFIG, self.group, unbind, self._seq))
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> NflogSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
