"""``turn.yaml``: what the TURN relay listens on, relays from, and lets in.

Example (the defaults are RFC 8656's lifetimes and safe limits)::

    realm: anyedge.example
    listen:
      - {transport: udp, address: 203.0.113.7, port: 3478}
      - {transport: tcp, address: 203.0.113.7, port: 3478}
      - {transport: tls, address: 203.0.113.7, port: 5349, cert: cert.pem, key: key.pem}
      - {transport: dtls, address: 203.0.113.7, port: 5349, cert: cert.pem, key: key.pem}
    relay:
      ipv4: 203.0.113.7          # the (anycast) relay address
      ports: [49152, 65535]
      site: {index: 0, count: 1} # anycast: this site's slice of the ports
    auth:
      users_file: users.txt      # "user:password" lines, # comments
      rest_secrets: [s3cret-2026-11, s3cret-2026-10]   # TURN REST API, newest first
      fleet_keys: [k3y]          # nonce keys, the same at every site
    limits: {user_quota: 20, user_bandwidth: null, max_allocations: 100000}
    workers: auto               # one process per core, all on the same ports
    metrics: {address: 127.0.0.1, port: 9641}
    drain: {alternates: ["198.51.100.9:3478"], domain: turn.example}  # SIGUSR1 drains
    stun: {other_address: 203.0.113.8, other_port: 3479}  # RFC 5780 NAT discovery
    fast_path: {interfaces: [eth0], mode: native}  # ChannelData relayed in XDP (off if absent)
    udp_batch: 32               # UDP datagrams per recvmmsg/sendmmsg; 0: one per call
    udp_gso: true               # same-size datagrams to one destination in one send

Every problem is reported with the file, line and place (exit status 2); relative
paths (``users_file``, ``cert``, ``key``) are read beside the config file.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...errors import InputError, Problem
from ...model.files.text import read_text
from ...model.files.validate import parse_model
from ...proto.turn import Credentials, Drain, TurnConfig
from ...proto.turn.discovery import NatDiscovery
from ...proto.turn.ports import port_slice

MIN_SECRET = 8  # characters of a REST secret or fleet key: an empty one lets anyone in


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ip(value: str) -> str:
    return str(ipaddress.ip_address(value))


class ListenIn(_Strict):
    transport: Literal["udp", "tcp", "tls", "dtls"]
    address: str = "0.0.0.0"
    port: int = Field(3478, ge=1, le=65535)
    cert: str | None = None
    key: str | None = None

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        return _ip(v)

    @model_validator(mode="after")
    def _tls_needs_cert(self) -> ListenIn:
        if self.transport in ("tls", "dtls") and not (self.cert and self.key):
            raise ValueError(f"a {self.transport} listener needs cert and key")
        if self.transport in ("udp", "dtls") and ipaddress.ip_address(self.address).is_unspecified:
            raise ValueError(
                "a UDP listener needs its own address (the anycast one): on a wildcard "
                "address its answers would leave from whatever address routing picks"
            )
        return self


class SiteIn(_Strict):
    index: int = Field(0, ge=0)
    count: int = Field(1, ge=1, le=4096)

    @model_validator(mode="after")
    def _in_range(self) -> SiteIn:
        if self.index >= self.count:
            raise ValueError(f"site index {self.index} must be below count {self.count}")
        return self


class RelayIn(_Strict):
    ipv4: str | None = "127.0.0.1"
    ipv6: str | None = None
    ports: tuple[int, int] = (49152, 65535)
    site: SiteIn = SiteIn()

    @field_validator("ipv4", "ipv6")
    @classmethod
    def _addr(cls, v: str | None) -> str | None:
        return None if v is None else _ip(v)

    @model_validator(mode="after")
    def _check(self) -> RelayIn:
        lo, hi = self.ports
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"ports must be [first, last] within 1-65535, got {lo}-{hi}")
        if self.ipv4 is None and self.ipv6 is None:
            raise ValueError("give a relay address: ipv4, ipv6 or both")
        if hi - lo + 1 < self.site.count:
            raise ValueError(f"{hi - lo + 1} ports cannot be shared by {self.site.count} sites")
        return self


Secret = Annotated[str, Field(min_length=MIN_SECRET)]


class AuthIn(_Strict):
    users: dict[str, str] = {}
    users_file: str | None = None
    rest_secrets: list[Secret] = []
    fleet_keys: list[Secret] = Field(min_length=1)
    nonce_lifetime: float = Field(600.0, gt=0, le=600)
    rest_max_ttl: float = Field(30 * 86400.0, gt=0)  # REST usernames expiring later: 401


class LimitsIn(_Strict):
    user_quota: int | None = Field(20, ge=1)
    user_bandwidth: float | None = Field(None, gt=0)
    max_allocations: int = Field(100_000, ge=1)
    unauth_rate: float = Field(20.0, gt=0)
    unauth_burst: float = Field(100.0, ge=1)
    allow_peers: list[str] = []
    deny_peers: list[str] = []
    default_lifetime: int = Field(600, ge=1, le=3600)
    max_lifetime: int = Field(3600, ge=1, le=86400)

    @field_validator("allow_peers", "deny_peers")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(c, strict=False)) for c in v]


def _host_port(value: str) -> tuple[str, int]:
    """``198.51.100.9:3478`` or ``[2001:db8::9]:3478`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not address:port ([address]:port for IPv6)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, [address]:port")
    return _ip(host), int(port)


class DrainIn(_Strict):
    """Draining before maintenance: where new allocations are sent (300 Try Alternate)."""

    alternates: list[str] = []  # address:port of other relays, tried by client family
    domain: str | None = None  # ALTERNATE-DOMAIN: the name on the alternates' certificate
    active: bool = False  # start draining (also: serve --drain, SIGUSR1; SIGUSR2 stops)

    @field_validator("alternates")
    @classmethod
    def _alternates(cls, v: list[str]) -> list[str]:
        for a in v:
            _host_port(a)
        return v

    def addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(_host_port(a) for a in self.alternates)


class StunIn(_Strict):
    """RFC 5780 NAT behaviour discovery: the server's other IP address and port."""

    other_address: str | None = None
    other_port: int | None = Field(None, ge=1, le=65535)

    @field_validator("other_address")
    @classmethod
    def _addr(cls, v: str | None) -> str | None:
        return None if v is None else _ip(v)

    @model_validator(mode="after")
    def _both(self) -> StunIn:
        if (self.other_address is None) != (self.other_port is None):
            raise ValueError("give other_address and other_port together")
        return self


class MetricsIn(_Strict):
    address: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)  # None: no metrics endpoint


class FastPathIn(_Strict):
    """``fast_path:``: ChannelData relayed in XDP on these interfaces (docs/turn.md)."""

    interfaces: list[str] = Field(min_length=1)
    mode: Literal["native", "generic"] = "native"

    @field_validator("interfaces")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not 1 <= len(name) <= 15 or "/" in name or name.strip() != name:
                raise ValueError(f"{name!r} is not an interface name")
        return v


class TurnFileIn(_Strict):
    realm: str = Field(min_length=1)
    listen: list[ListenIn] = Field(min_length=1)
    relay: RelayIn = RelayIn()
    auth: AuthIn
    limits: LimitsIn = LimitsIn()
    workers: int | Literal["auto"] = Field("auto", description="processes; auto: one per core")
    metrics: MetricsIn = MetricsIn()
    drain: DrainIn = DrainIn()
    stun: StunIn = StunIn()
    software: str | None = "anyedge"
    log: Literal["json", "text"] = "json"
    fast_path: FastPathIn | None = None  # off unless given
    # datagrams read (recvmmsg) and sent (sendmmsg) per system call on UDP; 0: one each,
    # through asyncio's transports (docs/turn.md, "Batches")
    udp_batch: int = Field(32, ge=0, le=256)
    # with udp_batch: same-size datagrams of a batch to one destination sent as one
    # (UDP_SEGMENT, segmentation offload) when at most 1,232 bytes
    udp_gso: bool = True

    @model_validator(mode="after")
    def _listeners_outside_relay_ports(self) -> TurnFileIn:
        # the relay's own relayed ports are peers; a listener among them would be too
        lo, hi = self.relay.ports
        relay_ips = {self.relay.ipv4, self.relay.ipv6} - {None}
        for lis in self.listen:
            on_relay = lis.address in relay_ips or ipaddress.ip_address(lis.address).is_unspecified
            if on_relay and lo <= lis.port <= hi:
                raise ValueError(
                    f"listener {lis.transport} {lis.address} port {lis.port} is inside the "
                    f"relay ports {lo}-{hi}: relayed clients could reach it"
                )
        other = self.stun.other_address
        if other is not None:
            pairs = nat_pairs(self)
            if not pairs:
                raise ValueError(
                    f"stun.other_address {other} has no UDP listener of its family to pair with"
                )
            for primary, alt in pairs:
                if primary[0] == alt[0] or primary[1] == alt[1]:
                    raise ValueError(
                        f"stun: the other address {alt[0]} port {alt[1]} must differ from the "
                        f"udp listener {primary[0]} port {primary[1]} in both address and port"
                    )
        return self


def nat_pairs(doc: TurnFileIn) -> tuple[tuple[tuple[str, int], tuple[str, int]], ...]:
    """(UDP listener, the other address) for RFC 5780, one per listener of its family."""
    other, port = doc.stun.other_address, doc.stun.other_port
    if other is None or port is None:
        return ()
    v6 = ":" in other
    return tuple(
        ((x.address, x.port), (other, port))
        for x in doc.listen
        if x.transport == "udp" and (":" in x.address) == v6
    )


def own_addresses(doc: TurnFileIn, allowed: list[str]) -> list[str]:
    """The relay's listening and relayed addresses, as host routes, but for those the
    allow list names."""
    hosts = {x.address for x in doc.listen} | {a for a in (doc.relay.ipv4, doc.relay.ipv6) if a}
    if doc.stun.other_address is not None:
        hosts.add(doc.stun.other_address)
    nets = [ipaddress.ip_network(c) for c in allowed]
    out = []
    for h in sorted(hosts):
        ip = ipaddress.ip_address(h)
        if not ip.is_unspecified and not any(ip in n for n in nets):
            out.append(f"{ip}/{ip.max_prefixlen}")
    return out


class ServiceConfig:
    """A checked ``turn.yaml``: the core's settings and credentials, and the IO's."""

    def __init__(self, doc: TurnFileIn, base: Path, users: dict[str, str]) -> None:
        self.doc = doc
        self.base = base
        self.start_draining = doc.drain.active  # serve --drain sets it too
        self.source: Path | None = None  # the file it was read from: SIGHUP reads it again
        lim = doc.limits
        self.turn = TurnConfig(
            software=doc.software,
            default_lifetime=lim.default_lifetime,
            max_lifetime=max(lim.max_lifetime, lim.default_lifetime),
            max_allocations=lim.max_allocations,
            user_quota=lim.user_quota,
            user_bandwidth=lim.user_bandwidth,
            unauth_rate=lim.unauth_rate,
            unauth_burst=lim.unauth_burst,
            allow_peers=tuple(lim.allow_peers),
            # the relay's own addresses are not peers: no TURN inside TURN, no loops
            # through other allocations, no reaching services on the anycast address
            # (unless the allow list names them: a test on loopback, say)
            deny_peers=(*lim.deny_peers, *own_addresses(doc, lim.allow_peers)),
            # ...but its relayed addresses are: two clients of this relay (or of two sites
            # of the fleet, each site owning a slice of these ports) reach each other
            nat_pairs=nat_pairs(doc),
            # a data connection (RFC 6062) is a new 4-tuple that SO_REUSEPORT may hand to
            # another worker than the one holding its allocation: TCP relaying needs one
            tcp_relay=self.workers == 1,
            relayed_peers=tuple(
                (ip, doc.relay.ports[0], doc.relay.ports[1])
                for ip in (doc.relay.ipv4, doc.relay.ipv6)
                if ip is not None
            ),
        )
        self.credentials = Credentials(
            realm=doc.realm,
            fleet_keys=tuple(k.encode() for k in doc.auth.fleet_keys),
            users=users,
            rest_secrets=tuple(s.encode() for s in doc.auth.rest_secrets),
            nonce_lifetime=doc.auth.nonce_lifetime,
            rest_max_ttl=doc.auth.rest_max_ttl,
        )

    @property
    def workers(self) -> int:
        w = self.doc.workers
        return max(1, os.cpu_count() or 1) if w == "auto" else w

    def path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.base / p

    def stun_listeners(self) -> list[tuple[str, int]]:
        """The UDP addresses RFC 5780 adds to the ``listen`` ones: the other IP and port
        of each pair, and their crossings."""
        listed = {(x.address, x.port) for x in self.doc.listen if x.transport == "udp"}
        square = NatDiscovery(self.turn.nat_pairs).addresses()
        return [a for a in square if a not in listed]

    def drain(self) -> Drain:
        """Where a draining relay sends new allocations (``drain:``)."""
        d = self.doc.drain
        return Drain(d.addresses(), d.domain)

    def relay_ports(self, worker: int = 0, workers: int = 1) -> tuple[int, int]:
        """The relay ports of this site's slice that worker ``worker`` hands out."""
        r = self.doc.relay
        lo, hi = port_slice(r.ports[0], r.ports[1], r.site.index, r.site.count)
        return port_slice(lo, hi, worker, workers)


def read_users(path: Path) -> dict[str, str]:
    """``user:password`` per line; blank lines and ``#`` comments skipped."""
    users: dict[str, str] = {}
    problems = []
    for i, line in enumerate(read_text(path).splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        user, sep, password = text.partition(":")
        if not sep or not user or not password:
            problems.append(Problem("", "expected user:password", i))
        elif user in users:
            problems.append(Problem("", f"user {user!r} is given twice", i))
        else:
            users[user] = password
    if problems:
        raise InputError(path, problems)
    return users


def load_config(path: str | Path) -> ServiceConfig:
    path = Path(path)
    what = "a TURN configuration is a YAML mapping (realm:, listen:, auth:, ...)"
    doc = parse_model(read_text(path), path, TurnFileIn, what)
    users = dict(doc.auth.users)
    base = path.parent
    if doc.auth.users_file:
        f = Path(doc.auth.users_file)
        users.update(read_users(f if f.is_absolute() else base / f))
    if not users and not doc.auth.rest_secrets:
        raise InputError.one(path, "auth", "no users and no rest_secrets: nobody could log in")
    if doc.workers != "auto" and not 1 <= doc.workers <= 256:
        raise InputError.one(path, "workers", f"between 1 and 256, or auto; got {doc.workers}")
    for i, lis in enumerate(doc.listen):
        for key in ("cert", "key"):
            name = getattr(lis, key)
            if name and not os.path.exists(name if os.path.isabs(name) else base / name):
                raise InputError.one(path, f"listen[{i}].{key}", f"no such file: {name}")
    config = ServiceConfig(doc, base, users)
    config.source = path
    return config
