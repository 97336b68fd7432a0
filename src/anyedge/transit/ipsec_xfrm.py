"""Child SAs in the kernel's IPsec tables (XFRM), where the kernel has ESP.

The store's record of a Child SA (:class:`~anyedge.proto.ike.ChildSA`) becomes, through
:mod:`anyedge.adapters.xfrm`:

- the inbound SA (peer -> us, our SPI, the peer's key; ESP in UDP from the peer's port
  to 4500 when the tunnel is encapsulated) and the outbound SA (us -> peer);
- a tunnel-mode policy per pair of networks (the selectors' address ranges cut into
  prefixes) in each direction: ``in`` and ``fwd`` (the hosts behind us are forwarded to)
  from the peer's networks to ours, ``out`` from ours to the peer's.

:func:`probe` asks the kernel at run time whether it can do this at all: in a network
namespace of its own (a thread that unshares, so nothing is left behind) it adds a
throwaway AES-GCM SA.  A kernel without ESP (this lab's: ``esp4`` and the rfc4106 AEAD
are missing) answers ENOSYS, "Requested AEAD algorithm not found", or
EPROTONOSUPPORT, "Requested type not found"; then the user-space endpoint
(:mod:`.ipsec`) carries the tunnels, and says so in its log and status file.

:class:`KernelInbound` is what ``anyedge ipsec serve`` uses when the probe passes: the
kernel decrypts (inbound SA and the ``in``/``fwd`` policies) while sending stays in user
space, because the kernel counts an SA's outbound sequence numbers from one and cannot
partition them between servers; two servers sending on one SA from the kernel would
reuse GCM nonces (docs/ipsec.md).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import threading
import zlib
from dataclasses import dataclass

from ..adapters.xfrm import DIR_FWD, DIR_IN, DIR_OUT, Policy, Sa, XfrmError, XfrmSocket
from ..proto.ike import ChildSA, Selector

NATT_PORT = 4500
CLONE_NEWNET = 0x40000000
NO_ESP = {errno.ENOSYS, errno.EPROTONOSUPPORT, errno.ENOENT}


def _text(b: bytes) -> str:
    return str(ipaddress.ip_address(b))


def prefixes(sel: Selector) -> list[str]:
    """A selector's address range as the prefixes that cover exactly it."""
    lo, hi = ipaddress.ip_address(sel.start), ipaddress.ip_address(sel.end)
    return [str(n) for n in ipaddress.summarize_address_range(lo, hi)]


def reqid(child: ChildSA) -> int:
    """The reqid tying a Child SA's policies to its SAs: from the peer's address and the
    selectors, so that a rekeyed SA (new SPIs, same traffic) matches the same policies."""
    key = [child.peer[0].encode()]
    key += [s.encode() for s in (*child.ts_remote, *child.ts_local)]
    return zlib.crc32(b"|".join(key)) or 1


def sas(child: ChildSA, local: str, encap: bool) -> tuple[Sa, Sa]:
    """(inbound, outbound) kernel SAs of a Child SA; ``local`` is our (anycast) address."""
    peer, port = child.peer
    enc_in = (port, NATT_PORT) if encap else None
    enc_out = (NATT_PORT, port) if encap else None
    return (
        Sa(peer, local, child.spi_in, child.key_in, reqid(child), encap=enc_in),
        Sa(local, peer, child.spi_out, child.key_out, reqid(child), encap=enc_out),
    )


def policies(child: ChildSA, local: str) -> list[Policy]:
    """The tunnel-mode policies of a Child SA: in and fwd from every remote prefix to
    every local one, out the other way."""
    peer, rid = child.peer[0], reqid(child)
    out: list[Policy] = []
    for r in (p for s in child.ts_remote for p in prefixes(s)):
        for loc in (p for s in child.ts_local for p in prefixes(s)):
            out.append(Policy(r, loc, DIR_IN, peer, local, rid))
            out.append(Policy(r, loc, DIR_FWD, peer, local, rid))
            out.append(Policy(loc, r, DIR_OUT, local, peer, rid))
    return out


@dataclass(frozen=True, slots=True)
class Probe:
    """Whether this kernel takes ESP SAs; ``reason`` is its answer when it does not."""

    esp: bool
    reason: str
    errno: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"kernel_esp": self.esp, "reason": self.reason, "errno": self.errno}


def _probe_here() -> Probe:
    try:
        with XfrmSocket() as s:
            s.add_sa(Sa("192.0.2.2", "192.0.2.1", 0x100, bytes(36), 1))
    except XfrmError as e:
        return Probe(False, e.text, e.errno or 0)
    except OSError as e:
        return Probe(False, f"no XFRM netlink: {e.strerror}", e.errno or 0)
    return Probe(True, "a throwaway AES-GCM SA was accepted")


def probe() -> Probe:
    """Add a throwaway AES-GCM ESP SA in a network namespace of a thread's own (which
    goes when the thread ends) and report whether the kernel took it."""
    result: list[Probe] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            result.append(Probe(False, f"cannot make a namespace to probe in: errno {code}", code))
            return
        result.append(_probe_here())

    t = threading.Thread(target=run, name="xfrm-probe")
    t.start()
    t.join()
    return result[0]


class KernelInbound:
    """Installs Child SAs' inbound halves in the kernel of the current namespace: the
    inbound SA and the ``in`` and ``fwd`` policies (see the module's docstring for why
    sending stays in user space)."""

    def __init__(self, local: str, sock: XfrmSocket | None = None) -> None:
        self.local = local
        self.sock = sock or XfrmSocket()
        self.installed: dict[int, tuple[Sa, list[Policy]]] = {}

    def install(self, child: ChildSA, encap: bool = True) -> None:
        if child.spi_in in self.installed:
            return
        sa_in, _ = sas(child, self.local, encap)
        pols = [p for p in policies(child, self.local) if p.dir != DIR_OUT]
        self.sock.add_sa(sa_in)
        for p in pols:
            try:
                self.sock.add_policy(p)
            except XfrmError as e:  # a rekeyed SA's policies are already there
                if e.errno != errno.EEXIST:
                    raise
        self.installed[child.spi_in] = (sa_in, pols)

    def remove(self, spi_in: int) -> None:
        got = self.installed.pop(spi_in, None)
        if got is None:
            return
        sa_in, pols = got
        self.sock.delete_sa(sa_in.src, sa_in.dst, sa_in.spi)
        still = {(p.src, p.dst, p.dir) for _, ps in self.installed.values() for p in ps}
        for p in pols:
            if (p.src, p.dst, p.dir) not in still:
                try:
                    self.sock.delete_policy(p.src, p.dst, p.dir)
                except XfrmError as e:
                    if e.errno != errno.ENOENT:
                        raise

    def close(self) -> None:
        self.sock.close()
