"""TUN devices: an IP packet per ``read`` and per ``write``, opened in the current namespace.

The transit plumbing makes each customer's ``gre0`` a persistent TUN device
(``ip tuntap add``); :func:`open_tun` attaches to it from the thread's current network
namespace (so call it inside :func:`anyedge.adapters.netns.entered`).  Without a reader
attached the device has no carrier and the kernel drops what is routed into it.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str, nonblocking: bool = True) -> int:
    """A file descriptor on TUN device ``name`` (raw IP packets, no packet-info header)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | (os.O_NONBLOCK if nonblocking else 0))
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def wait_ready(ns: str | None, name: str, timeout: float = 5.0) -> bool:
    """Wait until the kernel passes packets to TUN ``name`` in ``ns`` (after attaching).

    The kernel turns a device's carrier on at once but gives it a real queueing
    discipline only later, in its link-watch work (up to a second); until then packets
    routed into it are dropped.  This polls ``ip -j link`` until the ``noop`` qdisc is gone.
    """
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
