"""The kernel's IPsec tables (XFRM) over netlink, without ``ip xfrm``.

pyroute2 (0.9) has no XFRM module, so the messages are declared here on its netlink
classes (:class:`pyroute2.netlink.nlmsg` and :class:`~pyroute2.netlink.nla`), laid out as
``<linux/xfrm.h>`` lays out its structs, and sent on a ``NETLINK_XFRM`` socket of the
calling thread's network namespace:

- :func:`new_sa` — ``XFRM_MSG_NEWSA``: ``xfrm_usersa_info`` (selector, id with SPI and
  protocol, source, lifetimes, reqid, mode) with ``XFRMA_ALG_AEAD`` (``rfc4106(gcm(aes))``,
  the key with its 4-byte salt, a 128-bit ICV), ``XFRMA_REPLAY_ESN_VAL`` for a window over
  32 packets (the struct's own 8-bit field otherwise) and ``XFRMA_ENCAP`` for ESP in UDP
  (RFC 3948, port 4500).  The attributes come in the order ``ip xfrm state add`` sends
  them, so that the bytes can be compared with iproute2's;
- :func:`del_sa` — ``XFRM_MSG_DELSA`` (``xfrm_usersa_id``, ``XFRMA_SRCADDR``);
- :func:`new_policy` / :func:`del_policy` — ``XFRM_MSG_NEWPOLICY`` with
  ``xfrm_userpolicy_info`` and one ``XFRMA_TMPL`` (``xfrm_user_tmpl``: which SA, by
  addresses, protocol, reqid and mode), ``XFRM_MSG_DELPOLICY`` by selector and direction;
- :class:`XfrmSocket` — sends a request and waits for its acknowledgement (an error
  raises :class:`XfrmError` with the errno and the kernel's extended-ack text), or
  dumps policies (``XFRM_MSG_GETPOLICY`` with ``NLM_F_DUMP``) as :class:`Policy` records.

Everything is in host order except what the kernel keeps in network order (SPIs,
ports), as the header does.  Records (:class:`Sa`, :class:`Policy`) are plain data; the
mapping from negotiated Child SAs lives in :mod:`anyedge.transit.ipsec_xfrm`.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    nla,
    nlmsg,
)

NETLINK_XFRM = 6
XFRM_MSG_NEWSA, XFRM_MSG_DELSA = 0x10, 0x11
XFRM_MSG_NEWPOLICY, XFRM_MSG_DELPOLICY, XFRM_MSG_GETPOLICY = 0x13, 0x14, 0x15
XFRM_INF = 0xFFFFFFFFFFFFFFFF
IPPROTO_ESP = 50
MODE_TUNNEL = 1
DIR_IN, DIR_OUT, DIR_FWD = 0, 1, 2
UDP_ENCAP_ESPINUDP = 2
AEAD_GCM = "rfc4106(gcm(aes))"
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200

_SELECTOR = (
    ("sel_daddr", "16s"),
    ("sel_saddr", "16s"),
    ("sel_dport", ">H"),
    ("sel_dport_mask", ">H"),
    ("sel_sport", ">H"),
    ("sel_sport_mask", ">H"),
    ("sel_family", "H"),
    ("sel_prefixlen_d", "B"),
    ("sel_prefixlen_s", "B"),
    ("sel_proto", "B"),
    ("__sel_pad", "3x"),
    ("sel_ifindex", "i"),
    ("sel_user", "I"),
)
_LIFETIME_CFG = tuple(
    (f"lft_{n}", "Q")
    for n in (
        "soft_byte", "hard_byte", "soft_packet", "hard_packet",
        "soft_add", "hard_add", "soft_use", "hard_use",
    )
)  # fmt: skip
_LIFETIME_CUR = tuple((f"cur_{n}", "Q") for n in ("bytes", "packets", "add_time", "use_time"))
LIFETIME_DEFAULTS = {
    "lft_soft_byte": XFRM_INF,
    "lft_hard_byte": XFRM_INF,
    "lft_soft_packet": XFRM_INF,
    "lft_hard_packet": XFRM_INF,
}


_ZERO = b"\0" * 16
_ADDRS = dict.fromkeys(("sel_daddr", "sel_saddr", "daddr", "saddr", "encap_oa"), _ZERO)


class _xfrm_nla(nlmsg):  # type: ignore[misc]  # pyroute2 has no types
    """The XFRMA_* attributes this module sends and reads."""

    defaults = _ADDRS

    nla_map = (
        (5, "XFRMA_TMPL", "xfrm_user_tmpl"),
        (4, "XFRMA_ENCAP", "xfrm_encap_tmpl"),
        (13, "XFRMA_SRCADDR", "xfrm_address"),
        (18, "XFRMA_ALG_AEAD", "xfrm_algo_aead"),
        (23, "XFRMA_REPLAY_ESN_VAL", "xfrm_replay_state_esn"),
    )

    class xfrm_algo_aead(nla):  # type: ignore[misc]  # pyroute2 has no types
        fields = (
            ("alg_name", "64s"),
            ("alg_key_len", "I"),  # bits
            ("alg_icv_len", "I"),  # bits
            ("alg_key", "s"),
        )

    class xfrm_address(nla):  # type: ignore[misc]  # pyroute2 has no types
        fields = (("addr", "16s"),)

    class xfrm_replay_state_esn(nla):  # type: ignore[misc]  # pyroute2 has no types
        fields = (
            ("bmp_len", "I"),  # 32-bit words of the bitmap
            ("oseq", "I"),
            ("seq", "I"),
            ("oseq_hi", "I"),
            ("seq_hi", "I"),
            ("replay_window", "I"),
        )

    class xfrm_encap_tmpl(nla):  # type: ignore[misc]  # pyroute2 has no types
        defaults = _ADDRS
        fields = (
            ("encap_type", "H"),
            ("encap_sport", ">H"),
            ("encap_dport", ">H"),
            ("__pad", "2x"),
            ("encap_oa", "16s"),
        )

    class xfrm_user_tmpl(nla):  # type: ignore[misc]  # pyroute2 has no types
        defaults = _ADDRS
        fields = (
            ("daddr", "16s"),
            ("spi", ">I"),
            ("proto", "B"),
            ("__pad1", "3x"),
            ("family", "H"),
            ("__pad2", "2x"),
            ("saddr", "16s"),
            ("reqid", "I"),
            ("mode", "B"),
            ("share", "B"),
            ("optional", "B"),
            ("__pad3", "x"),
            ("aalgos", "I"),
            ("ealgos", "I"),
            ("calgos", "I"),
        )


class xfrm_usersa_info(_xfrm_nla):
    fields = (
        *_SELECTOR,
        ("daddr", "16s"),
        ("spi", ">I"),
        ("proto", "B"),
        ("__id_pad", "3x"),
        ("saddr", "16s"),
        *_LIFETIME_CFG,
        *_LIFETIME_CUR,
        ("stats_replay_window", "I"),
        ("stats_replay", "I"),
        ("stats_integrity_failed", "I"),
        ("seq", "I"),
        ("reqid", "I"),
        ("family", "H"),
        ("mode", "B"),
        ("replay_window", "B"),
        ("flags", "B"),
        ("__pad", "7x"),
    )


class xfrm_usersa_id(_xfrm_nla):
    fields = (
        ("daddr", "16s"),
        ("spi", ">I"),
        ("family", "H"),
        ("proto", "B"),
        ("__pad", "x"),
    )


class xfrm_userpolicy_info(_xfrm_nla):
    fields = (
        *_SELECTOR,
        *_LIFETIME_CFG,
        *_LIFETIME_CUR,
        ("priority", "I"),
        ("index", "I"),
        ("dir", "B"),
        ("action", "B"),
        ("flags", "B"),
        ("share", "B"),
        ("__pad", "4x"),
    )


class xfrm_userpolicy_id(_xfrm_nla):
    fields = (*_SELECTOR, ("index", "I"), ("dir", "B"), ("__pad", "3x"))


class XfrmError(OSError):
    """The kernel refused a request: ``errno`` and its extended-ack ``text``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text or os.strerror(code))
        self.text = text or os.strerror(code)


def _addr(a: str) -> tuple[bytes, int]:
    ip = ipaddress.ip_address(a)
    return ip.packed.ljust(16, b"\0"), socket.AF_INET if ip.version == 4 else socket.AF_INET6


def _net(n: str) -> tuple[bytes, int, int]:
    net = ipaddress.ip_network(n, strict=False)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    return net.network_address.packed.ljust(16, b"\0"), net.prefixlen, family


@dataclass(frozen=True, slots=True)
class Sa:
    """One ESP SA in tunnel mode with AES-GCM (the kernel's view: ``src`` sends to
    ``dst`` on ``spi``).  ``key`` is the AES key with the 4-byte salt at its end.
    ``encap`` is (source port, destination port) of the UDP encapsulation, or None.
    ``sel`` is (source, destination) network, or None for any.  Lifetimes in seconds
    (0: none)."""

    src: str
    dst: str
    spi: int
    key: bytes
    reqid: int
    replay_window: int = 64
    encap: tuple[int, int] | None = None
    sel: tuple[str, str] | None = None
    soft_seconds: int = 0
    hard_seconds: int = 0
    oseq: int = 0


@dataclass(frozen=True, slots=True)
class Policy:
    """A tunnel-mode policy: traffic from ``src`` to ``dst`` (networks) in direction
    ``dir`` goes through the ESP SA between ``tmpl_src`` and ``tmpl_dst`` with
    ``reqid``."""

    src: str
    dst: str
    dir: int
    tmpl_src: str
    tmpl_dst: str
    reqid: int
    priority: int = 0
    extra: dict[str, int] = field(default_factory=dict, compare=False)


def _selector(src: str, dst: str) -> dict[str, object]:
    saddr, plen_s, family = _net(src)
    daddr, plen_d, _ = _net(dst)
    return {
        "sel_saddr": saddr,
        "sel_daddr": daddr,
        "sel_prefixlen_s": plen_s,
        "sel_prefixlen_d": plen_d,
        "sel_family": family,
    }


def _finish(msg: nlmsg, kind: int, flags: int, seq: int) -> bytes:
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


def new_sa(sa: Sa, seq: int = 0, flags: int = NLM_F_REQUEST | NLM_F_ACK) -> bytes:
    """The XFRM_MSG_NEWSA request for ``sa`` (as ``ip xfrm state add`` builds it)."""
    daddr, family = _addr(sa.dst)
    saddr, _ = _addr(sa.src)
    msg = xfrm_usersa_info()
    msg.update(dict(LIFETIME_DEFAULTS))
    if sa.sel is not None:
        msg.update(_selector(*sa.sel))
    msg.update(
        {
            "daddr": daddr,
            "spi": sa.spi,
            "proto": IPPROTO_ESP,
            "saddr": saddr,
            "reqid": sa.reqid,
            "family": family,
            "mode": MODE_TUNNEL,
            "lft_soft_add": sa.soft_seconds,
            "lft_hard_add": sa.hard_seconds,
            "replay_window": sa.replay_window if sa.replay_window <= 32 else 0,
        }
    )
    attrs: list[tuple[str, dict[str, object]]] = [
        (
            "XFRMA_ALG_AEAD",
            {
                "alg_name": AEAD_GCM.encode(),
                "alg_key_len": len(sa.key) * 8,
                "alg_icv_len": 128,
                "alg_key": sa.key,
            },
        )
    ]
    if sa.encap is not None:
        attrs.append(
            (
                "XFRMA_ENCAP",
                {
                    "encap_type": UDP_ENCAP_ESPINUDP,
                    "encap_sport": sa.encap[0],
                    "encap_dport": sa.encap[1],
                    "encap_oa": b"\0" * 16,
                },
            )
        )
    if sa.replay_window > 32:
        attrs.append(
            (
                "XFRMA_REPLAY_ESN_VAL",
                {
                    "bmp_len": (sa.replay_window + 31) // 32,
                    "oseq": sa.oseq,
                    "replay_window": sa.replay_window,
                },
            )
        )
    msg["attrs"] = attrs
    return _finish(msg, XFRM_MSG_NEWSA, flags, seq)


def del_sa(src: str, dst: str, spi: int, seq: int = 0) -> bytes:
    """The XFRM_MSG_DELSA request (the source as XFRMA_SRCADDR, as iproute2 sends it)."""
    daddr, family = _addr(dst)
    msg = xfrm_usersa_id()
    msg.update({"daddr": daddr, "spi": spi, "family": family, "proto": IPPROTO_ESP})
    msg["attrs"] = [("XFRMA_SRCADDR", {"addr": _addr(src)[0]})]
    return _finish(msg, XFRM_MSG_DELSA, NLM_F_REQUEST | NLM_F_ACK, seq)


def new_policy(p: Policy, seq: int = 0) -> bytes:
    """The XFRM_MSG_NEWPOLICY request for ``p`` (as ``ip xfrm policy add`` builds it)."""
    tdst, family = _addr(p.tmpl_dst)
    tsrc, _ = _addr(p.tmpl_src)
    msg = xfrm_userpolicy_info()
    msg.update(dict(LIFETIME_DEFAULTS))
    msg.update(_selector(p.src, p.dst))
    msg.update({"priority": p.priority, "dir": p.dir})
    msg["attrs"] = [
        (
            "XFRMA_TMPL",
            {
                "daddr": tdst,
                "proto": IPPROTO_ESP,
                "family": family,
                "saddr": tsrc,
                "reqid": p.reqid,
                "mode": MODE_TUNNEL,
                "aalgos": 0xFFFFFFFF,
                "ealgos": 0xFFFFFFFF,
                "calgos": 0xFFFFFFFF,
            },
        )
    ]
    # no NLM_F_CREATE | NLM_F_EXCL, as iproute2: NEWPOLICY is exclusive by its type
    # (XFRM_MSG_UPDPOLICY replaces)
    return _finish(msg, XFRM_MSG_NEWPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq)


def del_policy(src: str, dst: str, dir: int, seq: int = 0) -> bytes:
    msg = xfrm_userpolicy_id()
    msg.update(_selector(src, dst))
    msg.update({"dir": dir})
    return _finish(msg, XFRM_MSG_DELPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq)


def _text(addr: bytes, family: int) -> str:
    return str(ipaddress.ip_address(addr[:4] if family == socket.AF_INET else addr))


def decode_policy(data: bytes) -> Policy:
    """A :class:`Policy` from one XFRM_MSG_NEWPOLICY message (a dump's answer)."""
    msg = xfrm_userpolicy_info(bytearray(data))
    msg.decode()
    fam = msg["sel_family"]
    tmpl = msg.get_attr("XFRMA_TMPL")
    return Policy(
        f"{_text(msg['sel_saddr'], fam)}/{msg['sel_prefixlen_s']}",
        f"{_text(msg['sel_daddr'], fam)}/{msg['sel_prefixlen_d']}",
        msg["dir"],
        _text(tmpl["saddr"], tmpl["family"]),
        _text(tmpl["daddr"], tmpl["family"]),
        tmpl["reqid"],
        msg["priority"],
        {"mode": tmpl["mode"], "proto": tmpl["proto"], "index": msg["index"]},
    )


def _error(data: bytes) -> tuple[int, str]:
    """(errno, extended-ack text) of an NLMSG_ERROR message (errno 0: an ack)."""
    _, _, flags, _, _ = struct.unpack_from("=IHHII", data)
    (code,) = struct.unpack_from("=i", data, 16)
    if code == 0 or not flags & NLM_F_ACK_TLVS:
        return -code, ""
    (orig_len,) = struct.unpack_from("=I", data, 20)
    off = 20 + (16 if flags & NLM_F_CAPPED else (orig_len + 3) & ~3)
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        if kind == NLMSGERR_ATTR_MSG:
            return -code, data[off + 4 : off + length].rstrip(b"\0").decode(errors="replace")
        off += (length + 3) & ~3
    return -code, ""


class XfrmSocket:
    """A NETLINK_XFRM socket in the namespace of the thread that opens it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
        self.sock.setsockopt(270, NETLINK_EXT_ACK, 1)  # SOL_NETLINK
        self.sock.bind((0, 0))
        self.sock.settimeout(5.0)
        self._seq = 0

    def __enter__(self) -> XfrmSocket:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _messages(self) -> list[tuple[int, int, bytes]]:
        data = self.sock.recv(1 << 16)
        out, off = [], 0
        while off + 16 <= len(data):
            length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, off)
            out.append((kind, seq, data[off : off + length]))
            off += (length + 3) & ~3
        return out

    def request(self, build: object) -> None:
        """Send one request (a function of the sequence number returning its bytes) and
        wait for the kernel's answer; a refusal raises :class:`XfrmError`."""
        seq = self._next()
        self.sock.send(build(seq))  # type: ignore[operator]
        while True:
            for kind, got, data in self._messages():
                if kind == NLMSG_ERROR and got == seq:
                    code, text = _error(data)
                    if code:
                        raise XfrmError(code, text)
                    return

    def add_sa(self, sa: Sa) -> None:
        self.request(lambda seq: new_sa(sa, seq))

    def delete_sa(self, src: str, dst: str, spi: int) -> None:
        self.request(lambda seq: del_sa(src, dst, spi, seq))

    def add_policy(self, p: Policy) -> None:
        self.request(lambda seq: new_policy(p, seq))

    def delete_policy(self, src: str, dst: str, dir: int) -> None:
        self.request(lambda seq: del_policy(src, dst, dir, seq))

    def policies(self) -> list[Policy]:
        """Every policy in the namespace (an XFRM_MSG_GETPOLICY dump)."""
        seq = self._next()
        head = struct.pack("=IHHII", 16, XFRM_MSG_GETPOLICY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        self.sock.send(head)
        out: list[Policy] = []
        while True:
            for kind, got, data in self._messages():
                if got != seq:
                    continue
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code, text = _error(data)
                    raise XfrmError(code or errno.EIO, text)
                if kind == XFRM_MSG_NEWPOLICY:
                    out.append(decode_policy(data))
