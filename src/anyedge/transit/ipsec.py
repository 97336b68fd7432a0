"""The IPsec endpoint of one server: IKE on UDP 500 and 4500, ESP in user space.

The kernel here has no ESP, so a server carries a customer's IPsec tunnel itself:

- IKE datagrams (port 500, or 4500 after the non-ESP marker) go to the sans-IO
  :class:`~anyedge.proto.ike.Responder`; its ``Send`` outputs go back out of the
  socket they came in on, ``ChildUp`` / ``ChildDown`` install and remove SAs in the
  :class:`~anyedge.proto.esp.EspEndpoint` and go to ``on_child``, ``IkeUpdate`` /
  ``IkeDown`` to ``on_ike`` (the distribution hooks into both);
- ESP arrives either in UDP on 4500 (NAT traversal, RFC 3948) or as IP protocol 50 on
  a raw socket; it is decrypted, checked against the replay window, and the inner
  packet written to a TUN device, whence the kernel routes it to the hosts behind;
- what the kernel routes into the TUN device (the remote selectors are routed there)
  is encrypted with the SA whose selectors cover its destination and sent the way the
  peer's last packet came (UDP 4500 when IKE or ESP used it, raw protocol 50 otherwise).

Where the kernel has ESP (:func:`.ipsec_xfrm.probe`, run by ``anyedge ipsec serve``),
a :class:`~.ipsec_xfrm.KernelInbound` is given: every SA installed here also goes into
the kernel's XFRM tables, the kernel decrypts (ESP in UDP through the 4500 socket's
``UDP_ENCAP`` option, no raw socket), and sending stays here.  ``dataplane`` (what the
probe found, which path does what) goes into the status file.

One thread, one :mod:`selectors` loop; the responder's timer is run from it.  Work from
other threads (SAs arriving from the store, :mod:`.ipsec_store`) is handed to the loop
with :meth:`IpsecEndpoint.submit`, which wakes it through a socket pair.  A status file
(JSON: SAs with when they were made and installed here, counters) is rewritten after
changes, at most five times a second, for tests and operators.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..proto.esp import EspEndpoint, classify
from ..proto.esp.packet import NON_ESP_MARKER
from ..proto.ike import ChildDown, ChildSA, ChildUp, IkeDown, IkeUpdate, Responder, Send
from .ipsec_xfrm import KernelInbound

IKE_PORT, NATT_PORT = 500, 4500
UDP_ENCAP, UDP_ENCAP_ESPINUDP = 100, 2


class IpsecEndpoint:
    def __init__(
        self,
        responder: Responder,
        esp: EspEndpoint,
        listen: str,
        tun_fd: int,
        status: Path | None = None,
        raw_esp: bool = True,
        on_child: Callable[[str, ChildSA], None] | None = None,
        kernel: KernelInbound | None = None,
        dataplane: dict[str, Any] | None = None,
    ) -> None:
        self.responder, self.esp, self.listen, self.tun_fd = responder, esp, listen, tun_fd
        self.status_path = status
        self.on_child = on_child
        self.on_ike: Callable[[bytes, dict[str, Any] | None], None] | None = None
        self.ike = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ike.bind((listen, IKE_PORT))
        self.natt = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.natt.bind((listen, NATT_PORT))
        self.kernel = kernel
        self.dataplane = dataplane or {"inbound": "user", "outbound": "user"}
        if kernel is not None:
            self.natt.setsockopt(socket.IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
        self.raw: socket.socket | None = None
        if raw_esp and kernel is None:
            self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)
            self.raw.bind((listen, 0))
        self.paths: dict[int, tuple[str, tuple[str, int]]] = {}  # spi_in -> ("udp"|"raw", peer)
        self.ike_paths: dict[bytes, tuple[str, tuple[str, int]]] = {}  # IKE SPIs -> last path
        self.installed_at: dict[int, float] = {}
        self.stop = threading.Event()
        self._dirty = True
        self._jobs: deque[Callable[[], object]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)

    def submit(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the loop's thread (from any thread)."""
        self._jobs.append(job)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def stopping(self) -> None:
        """Ask the loop to end (from a signal handler or another thread)."""
        self.stop.set()
        self.submit(lambda: None)

    # --- IKE ------------------------------------------------------------------------
    def _ike(self, data: bytes, peer: tuple[str, int], port: int) -> None:
        for out in self.responder.receive(time.time(), data, peer, (self.listen, port)):
            if isinstance(out, Send):
                sock = self.natt if out.local[1] == NATT_PORT else self.ike
                sock.sendto((NON_ESP_MARKER if sock is self.natt else b"") + out.data, out.peer)
            elif isinstance(out, ChildUp):
                self.install(out.child, "udp" if port == NATT_PORT else "raw")
                if self.on_child is not None:
                    self.on_child("up", out.child)
            elif isinstance(out, ChildDown):
                child = self.esp.inbound.get(out.spi_in)
                self.remove(out.spi_in)
                if self.on_child is not None and child is not None:
                    self.on_child("down", child.child)
            elif isinstance(out, IkeUpdate) and self.on_ike is not None:
                self.on_ike(out.spi_r, out.record)
            elif isinstance(out, IkeDown) and self.on_ike is not None:
                self.on_ike(out.ike_spi[8:], None)
            self._dirty = True

    def install(self, child: ChildSA, transport: str = "udp") -> None:
        """Install a Child SA (negotiated here or received from the store)."""
        have = self.esp.inbound.get(child.spi_in)
        if have is not None and have.child == child:
            return
        if self.kernel is not None:
            self.kernel.install(child, encap=transport == "udp")
        self.installed_at[child.spi_in] = time.time()
        self.esp.install(child)
        path = (transport, child.peer if transport == "udp" else (child.peer[0], 0))
        if child.replaces is not None and child.replaces in self.paths:
            path = self.paths[child.replaces]
        self.paths[child.spi_in] = path
        self._dirty = True

    def remove(self, spi_in: int) -> None:
        if self.kernel is not None:
            self.kernel.remove(spi_in)
        self.esp.remove(spi_in)
        self.paths.pop(spi_in, None)
        self.installed_at.pop(spi_in, None)
        self._dirty = True

    # --- ESP ------------------------------------------------------------------------
    def _esp_in(self, packet: bytes, transport: str, peer: tuple[str, int]) -> None:
        inner = self.esp.decrypt(packet)
        if inner is None:
            self._dirty = True
            return
        spi = int.from_bytes(packet[:4], "big")
        self.paths[spi] = (transport, peer)
        self._dirty = True
        with contextlib.suppress(OSError):
            os.write(self.tun_fd, inner)

    def _tun_out(self) -> None:
        for _ in range(64):
            try:
                inner = os.read(self.tun_fd, 65535)
            except BlockingIOError:
                return
            made = self.esp.encrypt(inner, time.time())
            if made is None:
                continue
            child, packet = made
            transport, peer = self.paths.get(child.spi_in, ("udp", child.peer))
            try:
                if transport == "raw" and self.raw is not None:
                    self.raw.sendto(packet, (peer[0], 0))
                else:
                    self.natt.sendto(packet, peer)
            except OSError:
                pass

    # --- loop -----------------------------------------------------------------------
    def write_status(self) -> None:
        if self.status_path is None:
            return
        doc = {
            "ike": asdict(self.responder.counters),
            "esp": asdict(self.esp.counters),
            "half_open": self.responder.half_open,
            "children": sorted(self.esp.inbound),
            "sas": {
                str(spi): {"created": sa.child.created, "installed": self.installed_at.get(spi)}
                for spi, sa in self.esp.inbound.items()
            },
            "established": sum(1 for s in self.responder.sas.values() if s.established),
            "dataplane": self.dataplane,
        }
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.status_path)

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.ike, selectors.EVENT_READ, "ike")
        sel.register(self.natt, selectors.EVENT_READ, "natt")
        sel.register(self.tun_fd, selectors.EVENT_READ, "tun")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self.raw is not None:
            sel.register(self.raw, selectors.EVENT_READ, "raw")
        last = 0.0
        try:
            while not self.stop.is_set():
                deadline = self.responder.next_deadline()
                timeout = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.time()))
                for key, _ in sel.select(timeout):
                    if key.data == "tun":
                        self._tun_out()
                        continue
                    if key.data == "wake":
                        while True:
                            try:
                                self._wake_r.recv(4096)
                            except BlockingIOError:
                                break
                        while self._jobs:
                            self._jobs.popleft()()
                        continue
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    data, addr = sock.recvfrom(65535)
                    if key.data == "ike":
                        self._ike(data, addr, IKE_PORT)
                    elif key.data == "natt":
                        kind = classify(data)
                        if kind == "ike":
                            self._ike(data[4:], addr, NATT_PORT)
                        elif kind == "esp":
                            self._esp_in(data, "udp", addr)
                    else:
                        ihl = (data[0] & 0x0F) * 4
                        self._esp_in(data[ihl:], "raw", (addr[0], 0))
                self.responder.tick(time.time())
                if self._dirty and time.monotonic() - last >= 0.2:
                    self.write_status()
                    self._dirty, last = False, time.monotonic()
        finally:
            sel.close()
            for s in (self.ike, self.natt, self.raw, self._wake_r, self._wake_w):
                if s is not None:
                    s.close()
