"""TUN and TAP devices: an interface in a network namespace whose packets (TUN, IP) or
frames (TAP, Ethernet) a process reads and writes through a file descriptor.

The kernel here has no netem, GRE or IPIP, so what a link or a tunnel does to packets
is done in user space on such a device: the lab's delay lines carry Ethernet frames
between two TAP devices.  The device is made in the namespace the calling thread is in
(use :func:`anyedge.adapters.netns.entered`); its file descriptor keeps working from
any namespace, and the device goes away when the last descriptor closes.

A TAP device offers the kernel no offloads unless asked (``IFF_VNET_HDR``), so what is
read is a whole frame, no longer than the MTU, with its checksums filled in — what a
wire carries.
"""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_TAP, IFF_NO_PI = 0x0001, 0x0002, 0x1000
IFNAMSIZ = 16


def open_device(name: str, tap: bool = True) -> int:
    """Make the TAP (or TUN) device ``name`` in this thread's namespace; returns its
    non-blocking file descriptor.  The device is down: bring it up with ``ip link``."""
    if not 0 < len(name.encode()) < IFNAMSIZ:
        raise ValueError(f"interface name {name!r}: 1 to {IFNAMSIZ - 1} bytes")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        flags = (IFF_TAP if tap else IFF_TUN) | IFF_NO_PI
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd
