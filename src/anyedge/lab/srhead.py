"""SRv6 head ends in user space: IPv4 packets in, IPv6 packets with a segment list out.

This kernel is built without ``CONFIG_IPV6_SEG6_LWTUNNEL``: ``ip route ... encap seg6``
and ``seg6local`` routes are refused ("lwt encapsulation type not supported").  What it
does have is the Segment Routing Header itself (RFC 8754) in the IPv6 input path: a
packet addressed to one of a node's addresses with segments left is sent on to the next
segment (the *End* behaviour), and one with no segments left whose next header is IPv4
or IPv6 is decapsulated and the inner packet routed by its own destination (End.DT4/DT6
on the main table) — wherever ``net.ipv6.conf.*.seg6_enabled`` is 1.  So only the head
end, the push of the header, is done here.

How a packet flows: the site routes what must be steered into a TUN device (with
pyroute2: the route *is* the choice of segment list); this process reads the IPv4 packet
from the device, finds its segment list — fixed per device, or by the inner destination
for a device that carries return traffic to many clients — and writes back into the same
device an IPv6 packet: outer source the site's address, outer destination the first
segment, a Segment Routing Header listing the segments, the original packet inside.  The
kernel forwards it like any packet that came in on an interface.

:func:`encap` is pure and tested against the header's layout; :func:`serve` is the loop;
``python -m anyedge.lab.srhead SPEC`` makes the devices a JSON spec names (see
:class:`Device`) and serves them until SIGTERM, then prints its counts.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import selectors
import signal
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..adapters import netns
from ..adapters.tuntap import open_tun, wait_ready

NEXT_IPV4, NEXT_IPV6, NEXT_ROUTING = 4, 41, 43
SRH_TYPE = 4
HOP_LIMIT = 64
MAX_PACKET = 65_536


def srh(segments: Sequence[str], next_header: int = NEXT_IPV4, tag: int = 0) -> bytes:
    """The Segment Routing Header for ``segments`` in the order they are visited (RFC
    8754: the list is stored last segment first, and Segments Left points at the one
    the packet is headed to)."""
    if not segments:
        raise ValueError("a segment list needs at least one segment")
    n = len(segments)
    head = struct.pack("!BBBBBBH", next_header, 2 * n, SRH_TYPE, n - 1, n - 1, 0, tag)
    return head + b"".join(ipaddress.IPv6Address(s).packed for s in reversed(segments))


def encap(inner: bytes, source: str, segments: Sequence[str]) -> bytes:
    """``inner`` (an IPv4 or IPv6 packet) inside an IPv6 packet from ``source`` that
    visits ``segments`` in turn."""
    nh = NEXT_IPV6 if inner[:1] and inner[0] >> 4 == 6 else NEXT_IPV4
    ext = srh(segments, nh)
    first = ipaddress.IPv6Address(segments[0]).packed
    src = ipaddress.IPv6Address(source).packed
    fixed = struct.pack("!IHBB", 6 << 28, len(ext) + len(inner), NEXT_ROUTING, HOP_LIMIT)
    return fixed + src + first + ext + inner


def ipv4_destination(packet: bytes) -> str | None:
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return str(ipaddress.IPv4Address(packet[16:20]))


@dataclass
class Device:
    """One TUN device in a site: a fixed segment list for everything routed into it, or
    a list per inner IPv4 destination (``by_destination``)."""

    namespace: str
    ifname: str
    source: str  # the outer source address (the site's)
    segments: list[str] = field(default_factory=list)
    by_destination: dict[str, list[str]] = field(default_factory=dict)
    encapsulated: int = 0
    dropped: int = 0  # no segment list for the packet

    def segments_for(self, packet: bytes) -> list[str] | None:
        if self.segments:
            return self.segments
        dst = ipv4_destination(packet)
        return self.by_destination.get(dst) if dst else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "ifname": self.ifname,
            "source": self.source,
            "segments": self.segments,
            "by_destination": self.by_destination,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Device:
        return cls(
            d["namespace"],
            d["ifname"],
            d["source"],
            list(d.get("segments", [])),
            {k: list(v) for k, v in d.get("by_destination", {}).items()},
        )


def open_devices(devices: Sequence[Device]) -> list[int]:
    fds: list[int] = []
    try:
        for d in devices:
            with netns.entered(d.namespace):
                fds.append(open_tun(d.ifname))
            netns.batch(d.namespace, [f"link set {d.ifname} up"])
        for d in devices:
            if not wait_ready(d.namespace, d.ifname):
                raise OSError(f"{d.namespace}:{d.ifname} did not come up in 5 s")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def serve(devices: Sequence[Device], fds: Sequence[int], stop: list[bool]) -> None:
    """Encapsulate what each device reads and write it back, until ``stop[0]``."""
    sel = selectors.DefaultSelector()
    for d, fd in zip(devices, fds, strict=True):
        sel.register(fd, selectors.EVENT_READ, d)
    while not stop[0]:
        for key, _ in sel.select(0.5):
            d = key.data
            while True:
                try:
                    packet = os.read(key.fd, MAX_PACKET)
                except BlockingIOError:
                    break
                except OSError:  # the namespace went away
                    stop[0] = True
                    break
                segs = d.segments_for(packet)
                if segs is None:
                    d.dropped += 1
                    continue
                try:
                    os.write(key.fd, encap(packet, d.source, segs))
                    d.encapsulated += 1
                except OSError:
                    d.dropped += 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m anyedge.lab.srhead",
        description="SRv6 head ends on TUN devices (see the module doc).",
    )
    ap.add_argument("spec", type=Path, help="JSON: a list of devices (Device.to_dict)")
    ap.add_argument("--ready", type=Path, help="file to write once every device is up")
    args = ap.parse_args(argv)
    devices = [Device.from_dict(d) for d in json.loads(args.spec.read_text())]
    stop = [False]

    def ask_stop(*_: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, ask_stop)
    signal.signal(signal.SIGINT, ask_stop)
    fds = open_devices(devices)
    if args.ready:
        args.ready.write_text(json.dumps({"pid": os.getpid(), "devices": len(fds)}))
    serve(devices, fds, stop)
    counts = {f"{d.namespace}:{d.ifname}": [d.encapsulated, d.dropped] for d in devices}
    print(json.dumps({"encapsulated_dropped": counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
