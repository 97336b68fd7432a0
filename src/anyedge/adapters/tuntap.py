"""TUN and TAP devices: an interface in a network namespace whose packets (TUN, IP) or
frames (TAP, Ethernet) a process reads and writes through a file descriptor.

The kernel here has no netem, GRE or IPIP, so what a link or a tunnel does to packets
is done in user space on such a device: the lab's delay lines carry Ethernet frames
between two TAP devices.  The device is made in the namespace the calling thread is in
(use :func:`anyedge.adapters.netns.entered`); its file descriptor keeps working from
any namespace, and the device goes away when the last descriptor closes.

A TAP device offers the kernel no offloads unless asked (``IFF_VNET_HDR``), so what is
read is a whole frame, no longer than the MTU, with its checksums filled in — what a
wire carries.  Magic Transit's customer tunnels attach to persistent TUN devices
(``ip tuntap add``) the same way: :func:`open_device` with the existing name.

The kernel turns a device's carrier on as soon as a reader attaches but gives it a real
queueing discipline only later, in its link-watch work (up to a second); until then
what is routed into it is dropped.  :func:`wait_ready` waits for that.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import time

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_TAP, IFF_NO_PI = 0x0001, 0x0002, 0x1000
IFNAMSIZ = 16


def open_device(name: str, tap: bool = True, nonblocking: bool = True) -> int:
    """Make (or attach to) the TAP (or TUN) device ``name`` in this thread's namespace;
    returns its file descriptor.  A new device is down: bring it up with ``ip link``."""
    if not 0 < len(name.encode()) < IFNAMSIZ:
        raise ValueError(f"interface name {name!r}: 1 to {IFNAMSIZ - 1} bytes")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0))
    try:
        flags = (IFF_TAP if tap else IFF_TUN) | IFF_NO_PI
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd


def open_tun(name: str, nonblocking: bool = True) -> int:
    """A file descriptor on TUN device ``name`` (raw IP packets, no packet-info header)."""
    return open_device(name, tap=False, nonblocking=nonblocking)


def wait_ready(ns: str | None, name: str, timeout: float = 5.0) -> bool:
    """Wait until the kernel passes packets to device ``name`` in ``ns`` (after a reader
    attached and the device is up): polls ``ip -j link`` until the ``noop`` qdisc is
    gone and the carrier is on.  False after ``timeout``."""
    argv = ["ip", *(["-n", ns] if ns else []), "-j", "link", "show", "dev", name]
    end = time.monotonic() + timeout
    while True:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        info = json.loads(out or "[{}]")[0]
        if info.get("qdisc", "noop") != "noop" and "NO-CARRIER" not in info.get("flags", []):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
