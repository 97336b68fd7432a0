"""The IKEv2 responder (RFC 7296) as a state machine: datagrams and ``now`` in, outputs
out (:mod:`.outputs`).  It never initiates; a customer's peer does.

Inputs: ``receive(now, data, peer, local)`` with one IKE message (without the 4-byte
non-ESP marker of port 4500), ``tick(now)`` at ``next_deadline()``, and ``adopt`` /
``forget`` for IKE SAs other servers made.  Outputs: ``Send`` (a response), ``ChildUp``
/ ``ChildDown`` (a Child SA to install or remove on every server), ``IkeUpdate`` /
``IkeDown``.

How an SA comes up.  IKE_SA_INIT: the first acceptable proposal (AES-GCM-16 of 128 or
256 bits, PRF HMAC-SHA2-256, DH 19 or 31) is chosen; a KE of another offered group
gets INVALID_KE_PAYLOAD naming the group to use; the response carries our SA, KE,
nonce and NAT detection hashes, and the SA is *half-open* until IKE_AUTH.  When more
than ``cookie_threshold`` are half-open, an IKE_SA_INIT without a valid COOKIE gets
only a COOKIE (RFC 7296 §2.6) and costs no state: the cookie is a hash of the
initiator's nonce, address and SPI with a secret.  IKE_AUTH: the initiator's AUTH is
checked against the pre-shared key for its ID (AUTHENTICATION_FAILED and the SA is
gone if wrong); the first ESP proposal with AES-GCM-16 and no ESN is taken, the
traffic selectors are narrowed to what the configuration allows (TS_UNACCEPTABLE if
nothing is left) and a :class:`~.outputs.ChildSA` comes out.

Later exchanges on an established SA: CREATE_CHILD_SA makes a new Child SA (with
REKEY_SA, it ``replaces`` the old one, which stays until the peer deletes it; a KE in
the request gives PFS) or rekeys the IKE SA itself (its Child SAs move to the new
one); INFORMATIONAL answers liveness checks (empty) and deletes (ESP SPIs are answered
with ours; a delete of the IKE SA takes its Child SAs with it).  A request with the
last message ID gets the last response again byte for byte; other IDs are dropped.
Malformed messages and messages that do not authenticate are dropped and counted.

Anycast: after every exchange it answers on an established SA, the responder outputs an
``IkeUpdate`` with the SA's whole state (``IkeSA.to_dict``); the edge distributes it
and every other server's responder adopts it (``adopt``, never going back to an older message
ID), so whichever server the peer's next request reaches can answer it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import struct
from dataclasses import dataclass, field

from . import codec as c
from .certs import CertAuth, names_id
from .codec import IkeDecodeError, Message, Selector
from .crypto import (
    DiffieHellman,
    child_keys,
    ike_keys,
    open_sk,
    prf,
    psk_auth,
    rekey_skeyseed,
    seal,
    signed_octets,
    skeyseed,
)
from .outputs import Addr, ChildDown, ChildSA, ChildUp, IkeDown, IkeUpdate, Output, Send

ENCR_AES_GCM_16, PRF_HMAC_SHA2_256 = 20, 5
HALF_OPEN_TIMEOUT = 30.0


@dataclass(slots=True)
class ResponderConfig:
    """``psks`` maps an initiator ID's data (b"" for any ID) to its key; ``local_id`` is
    (ID type, data); the selectors are what Child SAs may cover on each side."""

    psks: dict[bytes, bytes]
    local_id: tuple[int, bytes]
    local_ts: tuple[Selector, ...]
    remote_ts: tuple[Selector, ...]
    cookie_threshold: int = 64
    half_open_timeout: float = HALF_OPEN_TIMEOUT
    certs: CertAuth | None = None  # certificate authentication (ECDSA P-256) besides PSKs


@dataclass(slots=True)
class Counters:
    received: int = 0
    malformed: int = 0
    cookies_sent: int = 0
    auth_failed: int = 0
    established: int = 0
    no_proposal: int = 0
    retransmits: int = 0


@dataclass(slots=True)
class IkeSA:
    spi_i: bytes
    spi_r: bytes
    peer: Addr
    local: Addr
    ni: bytes
    nr: bytes
    enc_len: int
    sk_d: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes
    init_request: bytes
    init_response: bytes
    created: float
    established: bool = False
    next_mid: int = 1
    last_response: bytes = b""
    children: dict[int, ChildSA] = field(default_factory=dict)

    _BYTES = (
        "spi_i",
        "spi_r",
        "ni",
        "nr",
        "sk_d",
        "sk_ei",
        "sk_er",
        "sk_pi",
        "sk_pr",
        "last_response",
    )

    def to_dict(self) -> dict[str, object]:
        """An established SA's state, enough for another server to go on with it (the
        IKE_SA_INIT messages, needed only for IKE_AUTH, are left out)."""
        d: dict[str, object] = {k: getattr(self, k).hex() for k in self._BYTES}
        d.update(peer=list(self.peer), local=list(self.local), enc_len=self.enc_len,
                 created=self.created, next_mid=self.next_mid,
                 children=[ch.to_dict() for ch in self.children.values()])  # fmt: skip
        return d

    @classmethod
    def from_dict(cls, d: dict) -> IkeSA:  # type: ignore[type-arg]
        b = {k: bytes.fromhex(d[k]) for k in cls._BYTES}
        children = [ChildSA.from_dict(x) for x in d["children"]]
        return cls(b["spi_i"], b["spi_r"], (str(d["peer"][0]), int(d["peer"][1])),
                   (str(d["local"][0]), int(d["local"][1])), b["ni"], b["nr"], int(d["enc_len"]),
                   b["sk_d"], b["sk_ei"], b["sk_er"], b["sk_pi"], b["sk_pr"], b"", b"",
                   float(d["created"]), True, int(d["next_mid"]), b["last_response"],
                   {ch.spi_in: ch for ch in children})  # fmt: skip


def _select(
    proposals: tuple[c.Proposal, ...], protocol: int, need_dh: bool, group: int | None = None
) -> tuple[c.Proposal, int] | None:
    """The first proposal we accept as the single-transform-each answer, and its key
    length in bytes.  IKE: with ``need_dh`` its DH groups must include one of ours (the
    caller puts the KE's group in).  ESP: with ``group`` (a KE came, PFS) the proposal
    must offer that group, which the answer names; without, the answer has no DH
    transform (none was exchanged)."""
    for p in proposals:
        if p.protocol != protocol:
            continue
        enc = [kl for tid, kl in p.ids(c.T_ENCR) if tid == ENCR_AES_GCM_16 and kl in (128, 256)]
        if not enc or any(tid != 0 for tid, _ in p.ids(c.T_INTEG)):
            continue
        chosen = [c.Transform(c.T_ENCR, ENCR_AES_GCM_16, enc[0])]
        if protocol == c.PROTO_IKE:
            if PRF_HMAC_SHA2_256 not in [tid for tid, _ in p.ids(c.T_PRF)]:
                continue
            chosen.append(c.Transform(c.T_PRF, PRF_HMAC_SHA2_256))
        groups = [tid for tid, _ in p.ids(c.T_DH) if tid in DiffieHellman.GROUPS]
        if protocol == c.PROTO_IKE:
            if need_dh and not groups:
                continue
            if groups:
                chosen.append(c.Transform(c.T_DH, groups[0]))
        elif group is not None:
            if group not in groups:
                continue
            chosen.append(c.Transform(c.T_DH, group))
        if protocol == c.PROTO_ESP:
            if 0 not in [tid for tid, _ in p.ids(c.T_ESN)] and p.ids(c.T_ESN):
                continue
            chosen.append(c.Transform(c.T_ESN, 0))
        return c.Proposal(p.number, protocol, p.spi, tuple(chosen)), enc[0] // 8
    return None


def _groups(p: c.Proposal) -> list[int]:
    return [t.id for t in p.transforms if t.type == c.T_DH]


def _narrow(asked: tuple[Selector, ...], allowed: tuple[Selector, ...]) -> tuple[Selector, ...]:
    """The intersections of each asked selector with each allowed one (§2.9)."""
    out: list[Selector] = []
    for a in asked:
        for b in allowed:
            if len(a.start) != len(b.start):
                continue
            lo = max(int.from_bytes(a.start, "big"), int.from_bytes(b.start, "big"))
            hi = min(int.from_bytes(a.end, "big"), int.from_bytes(b.end, "big"))
            plo, phi = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
            if a.protocol and b.protocol and a.protocol != b.protocol:
                continue
            if lo > hi or plo > phi:
                continue
            n = len(a.start)
            out.append(
                Selector(
                    lo.to_bytes(n, "big"), hi.to_bytes(n, "big"), a.protocol or b.protocol, plo, phi
                )
            )
    return tuple(dict.fromkeys(out))


def _nat_hash(spi_i: bytes, spi_r: bytes, addr: Addr) -> bytes:
    ip = ipaddress.ip_address(addr[0]).packed
    return hashlib.sha1(spi_i + spi_r + ip + struct.pack("!H", addr[1])).digest()


class Responder:
    def __init__(self, config: ResponderConfig, now: float, secret: bytes | None = None) -> None:
        self.config = config
        self.counters = Counters()
        self.sas: dict[bytes, IkeSA] = {}  # by SPIr
        self._by_init: dict[tuple[bytes, Addr], bytes] = {}  # (SPIi, peer) -> SPIr, half-open
        self._secret = secret or os.urandom(32)

    # --- inputs -------------------------------------------------------------------
    def receive(self, now: float, data: bytes, peer: Addr, local: Addr) -> list[Output]:
        self.counters.received += 1
        try:
            m, first = c.decode_header(data)
            if m.is_response:
                return []
            if m.exchange == c.IKE_SA_INIT:
                m.payloads = c.decode_chain(first, data[c.HEADER_LEN :])
                return self._sa_init(now, m, data, peer, local)
            sa = self.sas.get(m.spi_r)
            if sa is None or sa.spi_i != m.spi_i:
                return []
            if m.message_id == sa.next_mid - 1 and sa.last_response:
                self.counters.retransmits += 1
                return [Send(sa.last_response, peer, local)]
            if m.message_id != sa.next_mid:
                return []
            outer = c.decode_chain(first, data[c.HEADER_LEN :])
            if not outer or not isinstance(outer[-1], c.Encrypted):
                raise IkeDecodeError("no SK payload")
            sk = outer[-1]
            inner = open_sk(data, len(data) - 4 - len(sk.data), sa.sk_ei)
            m.payloads = c.decode_chain(sk.first, inner)
            sa.peer, sa.local = peer, local
            out = self._encrypted(now, sa, m)
            if sa.established and self.sas.get(sa.spi_r) is sa:
                out.append(IkeUpdate(sa.spi_r, sa.to_dict()))
            return out
        except IkeDecodeError:
            self.counters.malformed += 1
            return []

    def tick(self, now: float) -> list[Output]:
        out: list[Output] = []
        for key, spi_r in list(self._by_init.items()):
            sa = self.sas.get(spi_r)
            if sa is None or sa.established:
                del self._by_init[key]
            elif now - sa.created > self.config.half_open_timeout:
                del self._by_init[key]
                del self.sas[spi_r]
        return out

    def next_deadline(self) -> float | None:
        times = [
            self.sas[s].created + self.config.half_open_timeout
            for s in self._by_init.values()
            if s in self.sas
        ]
        return min(times) if times else None

    def adopt(self, record: dict) -> bool:  # type: ignore[type-arg]
        """Take over an IKE SA another server established (its :class:`IkeUpdate`
        record), unless this server already holds it at the same or a later message ID.
        True if adopted."""
        sa = IkeSA.from_dict(record)
        have = self.sas.get(sa.spi_r)
        if have is not None and have.next_mid >= sa.next_mid:
            return False
        self.sas[sa.spi_r] = sa
        return True

    def forget(self, spi_r: bytes) -> None:
        """Another server deleted this IKE SA."""
        self.sas.pop(spi_r, None)

    @property
    def half_open(self) -> int:
        return len(self._by_init)

    # --- IKE_SA_INIT ----------------------------------------------------------------
    def cookie(self, ni: bytes, peer: Addr, spi_i: bytes) -> bytes:
        ip = ipaddress.ip_address(peer[0]).packed
        return b"\x00" + hmac.new(self._secret, ni + ip + spi_i, "sha256").digest()

    def _plain(
        self, m: Message, payloads: list[object], peer: Addr, local: Addr, spi_r: bytes = bytes(8)
    ) -> Send:
        resp = Message(m.spi_i, spi_r, m.exchange, c.FLAG_RESPONSE, m.message_id, payloads)
        return Send(c.encode_message(resp), peer, local)

    def _sa_init(
        self, now: float, m: Message, data: bytes, peer: Addr, local: Addr
    ) -> list[Output]:
        if m.spi_r != bytes(8) or m.message_id != 0:
            return []
        known = self._by_init.get((m.spi_i, peer))
        if known is not None and known in self.sas and self.sas[known].init_request == data:
            self.counters.retransmits += 1
            return [Send(self.sas[known].init_response, peer, local)]
        sa_p, ke, nonce = m.find(c.SA), m.find(c.KE), m.find(c.Nonce)
        if not sa_p or not ke or not nonce or not 16 <= len(nonce[0].data) <= 256:
            raise IkeDecodeError("IKE_SA_INIT without SA, KE or a nonce of 16-256 bytes")
        if any(isinstance(p, c.Unknown) and p.critical for p in m.payloads):
            return [self._plain(m, [c.Notify(c.UNSUPPORTED_CRITICAL_PAYLOAD)], peer, local)]
        ni = nonce[0].data
        if len(self._by_init) >= self.config.cookie_threshold:
            want = self.cookie(ni, peer, m.spi_i)
            first = m.payloads[0]
            if not (
                isinstance(first, c.Notify)
                and first.type == c.COOKIE
                and hmac.compare_digest(first.data, want)
            ):
                self.counters.cookies_sent += 1
                return [self._plain(m, [c.Notify(c.COOKIE, want)], peer, local)]
        chosen = _select(sa_p[0].proposals, c.PROTO_IKE, need_dh=True)
        if chosen is None:
            self.counters.no_proposal += 1
            return [self._plain(m, [c.Notify(c.NO_PROPOSAL_CHOSEN)], peer, local)]
        prop, enc_len = chosen
        offered = [g for p in sa_p[0].proposals if p.number == prop.number for g in _groups(p)]
        if ke[0].group not in offered or ke[0].group not in DiffieHellman.GROUPS:
            group = _groups(prop)[0]
            return [
                self._plain(
                    m, [c.Notify(c.INVALID_KE_PAYLOAD, struct.pack("!H", group))], peer, local
                )
            ]
        prop = c.Proposal(
            prop.number,
            prop.protocol,
            b"",
            tuple(
                t if t.type != c.T_DH else c.Transform(c.T_DH, ke[0].group) for t in prop.transforms
            ),
        )
        dh = DiffieHellman(ke[0].group)
        shared = dh.shared(ke[0].data)
        spi_r = os.urandom(8)
        nr = os.urandom(32)
        keys = ike_keys(skeyseed(ni, nr, shared), ni, nr, m.spi_i, spi_r, enc_len)
        payloads: list[object] = [c.SA((prop,)), c.KE(dh.group, dh.public), c.Nonce(nr)]
        if self.config.certs is not None:  # ask for the peer's certificate (§3.7)
            payloads.append(c.Cert(c.CERT_X509_SIGNATURE, self.config.certs.request, request=True))
        if m.find(c.Notify, c.NAT_DETECTION_SOURCE_IP):
            payloads += [
                c.Notify(c.NAT_DETECTION_SOURCE_IP, _nat_hash(m.spi_i, spi_r, local)),
                c.Notify(c.NAT_DETECTION_DESTINATION_IP, _nat_hash(m.spi_i, spi_r, peer)),
            ]
        resp = self._plain(m, payloads, peer, local, spi_r)
        self.sas[spi_r] = IkeSA(
            m.spi_i,
            spi_r,
            peer,
            local,
            ni,
            nr,
            enc_len,
            keys.sk_d,
            keys.sk_ei,
            keys.sk_er,
            keys.sk_pi,
            keys.sk_pr,
            data,
            resp.data,
            now,
        )
        self._by_init[(m.spi_i, peer)] = spi_r
        return [resp]

    # --- encrypted exchanges ----------------------------------------------------------
    def _respond(self, sa: IkeSA, m: Message, payloads: list[object]) -> Send:
        first, inner = c.encode_chain(payloads)
        head = Message(sa.spi_i, sa.spi_r, m.exchange, c.FLAG_RESPONSE, m.message_id)
        data = seal(c.encode_header(head, c.PT_SK, 0), first, inner, sa.sk_er)
        sa.last_response = data
        sa.next_mid = m.message_id + 1
        return Send(data, sa.peer, sa.local)

    def _encrypted(self, now: float, sa: IkeSA, m: Message) -> list[Output]:
        if m.exchange == c.IKE_AUTH and not sa.established:
            return self._auth(now, sa, m)
        if not sa.established:
            return []
        if m.exchange == c.CREATE_CHILD_SA:
            return self._create_child(now, sa, m)
        if m.exchange == c.INFORMATIONAL:
            return self._informational(sa, m)
        return []

    def _drop(self, sa: IkeSA) -> list[Output]:
        self.sas.pop(sa.spi_r, None)
        self._by_init.pop((sa.spi_i, sa.peer), None)
        out: list[Output] = [ChildDown(ch.spi_in, ch.spi_out) for ch in sa.children.values()]
        return [*out, IkeDown(sa.spi_i + sa.spi_r)]

    def _new_spi(self) -> int:
        while True:
            spi = int.from_bytes(os.urandom(4), "big")
            if spi >= 256 and not any(spi in s.children for s in self.sas.values()):
                return spi

    def _child(
        self,
        now: float,
        sa: IkeSA,
        m: Message,
        ni: bytes,
        nr: bytes,
        shared: bytes,
        replaces: int | None,
        group: int | None = None,
    ) -> tuple[list[object], ChildSA] | list[object]:
        """The SA, TSi and TSr of a new Child SA and the SA itself, or the notify that
        refuses it."""
        sa_p, tsi, tsr = m.find(c.SA), m.find(c.TrafficSelectors), m.find(c.TrafficSelectors)
        tsi = [t for t in tsi if t.initiator]
        tsr = [t for t in tsr if not t.initiator]
        if not sa_p or not tsi or not tsr:
            return [c.Notify(c.INVALID_SYNTAX)]
        chosen = _select(sa_p[0].proposals, c.PROTO_ESP, need_dh=False, group=group)
        if chosen is None or len(chosen[0].spi) != 4:
            self.counters.no_proposal += 1
            return [c.Notify(c.NO_PROPOSAL_CHOSEN)]
        prop, enc_len = chosen
        remote = _narrow(tsi[0].selectors, self.config.remote_ts)
        local = _narrow(tsr[0].selectors, self.config.local_ts)
        if not remote or not local:
            return [c.Notify(c.TS_UNACCEPTABLE)]
        spi_in = self._new_spi()
        k_ir, k_ri = child_keys(sa.sk_d, ni, nr, enc_len, shared)
        child = ChildSA(
            spi_in,
            int.from_bytes(prop.spi, "big"),
            k_ir,
            k_ri,
            remote,
            local,
            sa.peer,
            sa.spi_i + sa.spi_r,
            now,
            replaces,
        )
        ours = c.Proposal(prop.number, c.PROTO_ESP, struct.pack("!I", spi_in), prop.transforms)
        return [
            c.SA((ours,)),
            c.TrafficSelectors(remote, True),
            c.TrafficSelectors(local, False),
        ], child

    def _authenticated(self, now: float, sa: IkeSA, m: Message, idi: c.Identification,
                       auth: c.Auth) -> list[object] | None:  # fmt: skip
        """Our IDr, [CERT] and AUTH if the initiator's AUTH holds (PSK or ECDSA
        certificate), else None."""
        idr = c.Identification(self.config.local_id[0], self.config.local_id[1], initiator=False)
        if auth.method == c.AUTH_SHARED_KEY:
            psk = self.config.psks.get(idi.data, self.config.psks.get(b""))
            if psk is None:
                return None
            want = psk_auth(psk, sa.init_request, sa.nr, sa.sk_pi, idi.encode())
            if not hmac.compare_digest(auth.data, want):
                return None
            return [
                idr,
                c.Auth(
                    c.AUTH_SHARED_KEY,
                    psk_auth(psk, sa.init_response, sa.ni, sa.sk_pr, idr.encode()),
                ),
            ]
        certs = self.config.certs
        if auth.method != c.AUTH_ECDSA_SHA256_P256 or certs is None:
            return None
        theirs = [
            p for p in m.find(c.Cert) if not p.request and p.encoding == c.CERT_X509_SIGNATURE
        ]
        cert = certs.peer_cert(theirs[0].data, now) if theirs else None
        if cert is None or not names_id(cert, idi.id_type, idi.data):
            return None
        if not certs.verify(
            cert, signed_octets(sa.init_request, sa.nr, sa.sk_pi, idi.encode()), auth.data
        ):
            return None
        mine = certs.sign(signed_octets(sa.init_response, sa.ni, sa.sk_pr, idr.encode()))
        return [
            idr,
            c.Cert(c.CERT_X509_SIGNATURE, certs.der),
            c.Auth(c.AUTH_ECDSA_SHA256_P256, mine),
        ]

    def _auth(self, now: float, sa: IkeSA, m: Message) -> list[Output]:
        idi = [p for p in m.find(c.Identification) if p.initiator]
        auth = m.find(c.Auth)
        if not idi or not auth:
            raise IkeDecodeError("IKE_AUTH without IDi or AUTH")
        ours = self._authenticated(now, sa, m, idi[0], auth[0])
        if ours is None:
            self.counters.auth_failed += 1
            resp = self._respond(sa, m, [c.Notify(c.AUTHENTICATION_FAILED)])
            return [resp, *self._drop(sa)[:-1]]
        sa.established = True
        self._by_init.pop((sa.spi_i, sa.peer), None)
        self.counters.established += 1
        made = self._child(now, sa, m, sa.ni, sa.nr, b"", None)
        if isinstance(made, tuple):
            payloads, child = made
            sa.children[child.spi_in] = child
            return [self._respond(sa, m, [*ours, *payloads]), ChildUp(child)]
        return [self._respond(sa, m, [*ours, *made])]

    def _create_child(self, now: float, sa: IkeSA, m: Message) -> list[Output]:
        sa_p, nonce, ke = m.find(c.SA), m.find(c.Nonce), m.find(c.KE)
        if not sa_p or not nonce:
            raise IkeDecodeError("CREATE_CHILD_SA without SA or nonce")
        ni, nr = nonce[0].data, os.urandom(32)
        dh = DiffieHellman(ke[0].group) if ke and ke[0].group in DiffieHellman.GROUPS else None
        if ke and dh is None:
            return [self._respond(sa, m, [c.Notify(c.INVALID_KE_PAYLOAD, struct.pack("!H", 19))])]
        shared = dh.shared(ke[0].data) if dh is not None else b""
        if any(p.protocol == c.PROTO_IKE for p in sa_p[0].proposals):
            return self._rekey_ike(now, sa, m, ni, nr, dh, shared)
        rekey = m.find(c.Notify, c.REKEY_SA)
        replaces = None
        if rekey:
            old = [
                ch
                for ch in sa.children.values()
                if ch.spi_out == int.from_bytes(rekey[0].spi, "big")
            ]
            if not old:
                return [
                    self._respond(
                        sa,
                        m,
                        [c.Notify(c.CHILD_SA_NOT_FOUND, protocol=c.PROTO_ESP, spi=rekey[0].spi)],
                    )
                ]
            replaces = old[0].spi_in
        made = self._child(
            now, sa, m, ni, nr, shared, replaces, dh.group if dh is not None else None
        )
        if not isinstance(made, tuple):
            return [self._respond(sa, m, made)]
        payloads, child = made
        sa.children[child.spi_in] = child
        extra: list[object] = [c.KE(dh.group, dh.public)] if dh is not None else []
        return [
            self._respond(sa, m, [payloads[0], c.Nonce(nr), *extra, *payloads[1:]]),
            ChildUp(child),
        ]

    def _rekey_ike(
        self,
        now: float,
        sa: IkeSA,
        m: Message,
        ni: bytes,
        nr: bytes,
        dh: DiffieHellman | None,
        shared: bytes,
    ) -> list[Output]:
        chosen = _select(m.find(c.SA)[0].proposals, c.PROTO_IKE, need_dh=True)
        if chosen is None or dh is None or len(chosen[0].spi) != 8:
            return [self._respond(sa, m, [c.Notify(c.NO_PROPOSAL_CHOSEN)])]
        prop, enc_len = chosen
        spi_i, spi_r = prop.spi, os.urandom(8)
        keys = ike_keys(rekey_skeyseed(sa.sk_d, shared, ni, nr), ni, nr, spi_i, spi_r, enc_len)
        prop = c.Proposal(
            prop.number,
            c.PROTO_IKE,
            spi_r,
            tuple(
                t if t.type != c.T_DH else c.Transform(c.T_DH, dh.group) for t in prop.transforms
            ),
        )
        resp = self._respond(sa, m, [c.SA((prop,)), c.Nonce(nr), c.KE(dh.group, dh.public)])
        new = IkeSA(
            spi_i,
            spi_r,
            sa.peer,
            sa.local,
            ni,
            nr,
            enc_len,
            keys.sk_d,
            keys.sk_ei,
            keys.sk_er,
            keys.sk_pi,
            keys.sk_pr,
            b"",
            b"",
            now,
            established=True,
            next_mid=0,
        )
        new.children, sa.children = sa.children, {}
        self.sas[spi_r] = new
        return [resp, IkeUpdate(spi_r, new.to_dict())]

    def _informational(self, sa: IkeSA, m: Message) -> list[Output]:
        deletes = m.find(c.Delete)
        if any(d.protocol == c.PROTO_IKE for d in deletes):
            return [self._respond(sa, m, []), *self._drop(sa)]
        answer: list[bytes] = []
        out: list[Output] = []
        for d in deletes:
            if d.protocol != c.PROTO_ESP:
                continue
            for spi in d.spis:
                for ch in [
                    ch for ch in sa.children.values() if ch.spi_out == int.from_bytes(spi, "big")
                ]:
                    del sa.children[ch.spi_in]
                    answer.append(struct.pack("!I", ch.spi_in))
                    out.append(ChildDown(ch.spi_in, ch.spi_out))
        payloads: list[object] = [c.Delete(c.PROTO_ESP, tuple(answer))] if answer else []
        return [self._respond(sa, m, payloads), *out]


__all__ = ["Counters", "IkeSA", "Responder", "ResponderConfig", "prf"]
