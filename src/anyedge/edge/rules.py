"""The L4Drop rules file: which packets the edge drops in XDP, before anything else
sees them.

A rules file is a YAML mapping with one key, ``rules``, a list tried in order; the
first rule that matches a packet decides (``action: drop``, the default, or ``pass``
to exempt traffic from the rules after it).  Every field but ``name`` is optional;
a field left out matches everything::

    rules:
      - name: syn-flood                  # SYN without ACK from a spoofed range
        protocol: tcp
        source: 198.51.100.0/24
        destination_ports: 80-443
        tcp_flags: SYN !ACK              # SYN set, ACK clear
      - name: memcached-reflection       # UDP from port 11211 carrying "VALUE "
        protocol: udp
        source_ports: 11211
        payload: {offset: 8, text: "VALUE "}
      - name: ntp-monlist                # NTP mode 7 monlist responses
        protocol: udp
        source_ports: 123
        payload: {offset: 0, hex: "d7 00 03 2a", mask: "ff 00 ff ff"}
      - name: big-udp-to-dns
        family: ipv6
        protocol: udp
        destination_ports: 53
        length: 1200-65535               # IP length, header included

Fields: ``family`` (ipv4, ipv6), ``protocol`` (tcp, udp, icmp, icmpv6 or a number),
``source`` and ``destination`` (a prefix; its family is the rule's), ``source_ports``
and ``destination_ports`` (a port or ``low-high``; needs tcp or udp), ``tcp_flags``
(flag names, ``!`` for a flag that must be clear), ``length`` (IP length or
``low-high``), ``payload`` (up to 16 bytes at ``offset`` into the transport payload,
as ``hex`` or ``text``, with an optional hex ``mask``; needs tcp or udp).  At most
:data:`MAX_RULES` rules.

:func:`load_rules` reports every problem as ``file:line: place: problem`` (exit status
2); :func:`compile_rules` turns the rules into the records the BPF program reads,
:class:`Rule` mirroring ``struct l4drop_rule`` of ``bpf/l4drop.bpf.c`` byte for byte.
"""

from __future__ import annotations

import ctypes
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import InputError, Problem
from ..model.files.text import read_text
from ..model.files.validate import parse_model
from ..model.files.yamlpos import line_of

MAX_RULES = 64  # L4DROP_MAX_RULES
SIG_MAX = 16  # L4DROP_SIG_MAX
NEED_L4 = 0x01
ACTIONS = {"drop": 1, "pass": 2}
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
FAMILY_OF_PROTOCOL = {PROTOCOLS["icmp"]: 4, PROTOCOLS["icmpv6"]: 6}
TCP_FLAGS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20}
TCP_FLAGS |= {"ECE": 0x40, "CWR": 0x80}
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}$"


class Rule(ctypes.Structure):
    """``struct l4drop_rule``: addresses, masks and signature bytes in network order."""

    _fields_ = (
        ("src", ctypes.c_uint8 * 16),
        ("src_mask", ctypes.c_uint8 * 16),
        ("dst", ctypes.c_uint8 * 16),
        ("dst_mask", ctypes.c_uint8 * 16),
        ("sig", ctypes.c_uint8 * SIG_MAX),
        ("sig_mask", ctypes.c_uint8 * SIG_MAX),
        ("sport_min", ctypes.c_uint16),
        ("sport_max", ctypes.c_uint16),
        ("dport_min", ctypes.c_uint16),
        ("dport_max", ctypes.c_uint16),
        ("len_min", ctypes.c_uint16),
        ("len_max", ctypes.c_uint16),
        ("sig_offset", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("tcp_flags_mask", ctypes.c_uint8),
        ("tcp_flags_value", ctypes.c_uint8),
        ("sig_len", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("action", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),  # to 120 bytes, sizeof(struct l4drop_rule)
    )


class RuleSet(ctypes.Structure):
    """``struct l4drop_set``: the value of ``l4drop_set0`` and ``l4drop_set1``."""

    _fields_ = (
        ("id", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("rules", Rule * MAX_RULES),
    )


def parse_range(value: object, top: int = 65535) -> tuple[int, int]:
    """``80`` → (80, 80); ``"1024-65535"`` → (1024, 65535); checked against 0..top."""
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str) and (m := _RANGE.match(value)):
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
    else:
        raise ValueError("expected a number or a range low-high")
    if not 0 <= lo <= hi <= top:
        raise ValueError(f"expected a range with 0 <= low <= high <= {top}")
    return lo, hi


def parse_protocol(value: object) -> int:
    """``"udp"`` → 17; a number 1 to 255 as it is."""
    if isinstance(value, str) and value in PROTOCOLS:
        return PROTOCOLS[value]
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 255:
        return value
    raise ValueError(f"expected {', '.join(PROTOCOLS)} or a protocol number 1 to 255")


def parse_tcp_flags(text: str) -> tuple[int, int]:
    """``"SYN !ACK"`` → (mask, value): SYN must be set, ACK clear, the rest ignored."""
    mask = value = 0
    for word in text.replace(",", " ").split():
        clear = word.startswith("!")
        name = word.removeprefix("!").upper()
        if name not in TCP_FLAGS:
            raise ValueError(f"unknown TCP flag {name!r} (known: {' '.join(TCP_FLAGS)})")
        bit = TCP_FLAGS[name]
        if mask & bit:
            raise ValueError(f"TCP flag {name} is given twice")
        mask |= bit
        value |= 0 if clear else bit
    if not mask:
        raise ValueError("no TCP flags given")
    return mask, value


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"not hex bytes: {text!r}") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PayloadIn(_Strict):
    offset: int = Field(0, ge=0, le=1500)
    hex: str | None = None
    text: str | None = None
    mask: str | None = None

    @model_validator(mode="after")
    def _one_pattern(self) -> PayloadIn:
        if (self.hex is None) == (self.text is None):
            raise ValueError("give the bytes as exactly one of hex or text")
        data = self.pattern()
        if not 1 <= len(data) <= SIG_MAX:
            raise ValueError(f"1 to {SIG_MAX} bytes, got {len(data)}")
        if self.mask is not None and len(_hex(self.mask)) != len(data):
            raise ValueError(f"the mask has {len(_hex(self.mask))} bytes, the pattern {len(data)}")
        return self

    def pattern(self) -> bytes:
        return _hex(self.hex) if self.hex is not None else str(self.text).encode()

    def bytes_mask(self) -> bytes:
        return _hex(self.mask) if self.mask is not None else b"\xff" * len(self.pattern())


class RuleIn(_Strict):
    name: str = Field(pattern=_NAME)
    action: Literal["drop", "pass"] = "drop"
    family: Literal["ipv4", "ipv6"] | None = None
    protocol: int | None = None  # a name in the file, its number here
    source: str | None = None
    destination: str | None = None
    source_ports: tuple[int, int] | None = None  # a port or low-high in the file
    destination_ports: tuple[int, int] | None = None
    tcp_flags: str | None = None
    length: tuple[int, int] | None = None
    payload: PayloadIn | None = None

    @field_validator("protocol", mode="before")
    @classmethod
    def _proto(cls, v: object) -> int | None:
        return None if v is None else parse_protocol(v)

    @field_validator("source", "destination")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return str(ipaddress.ip_network(v, strict=True))
        except ValueError as e:
            raise ValueError(f"not a prefix: {e}") from None

    @field_validator("source_ports", "destination_ports", "length", mode="before")
    @classmethod
    def _range(cls, v: object) -> tuple[int, int] | None:
        return None if v is None else parse_range(v)

    @field_validator("tcp_flags")
    @classmethod
    def _flags(cls, v: str | None) -> str | None:
        if v is not None:
            parse_tcp_flags(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RuleIn:
        self.ip_family()  # raises on a conflict
        l4 = self.protocol in (PROTOCOLS["tcp"], PROTOCOLS["udp"])
        for field in ("source_ports", "destination_ports", "payload"):
            if getattr(self, field) is not None and not l4:
                raise ValueError(f"{field} needs protocol: tcp or udp")
        if self.tcp_flags is not None and self.protocol != PROTOCOLS["tcp"]:
            raise ValueError("tcp_flags needs protocol: tcp")
        return self

    def ip_family(self) -> int:
        """4, 6, or 0 for either; a ValueError when the fields disagree."""
        said: dict[str, int] = {}
        if self.family is not None:
            said["family"] = 4 if self.family == "ipv4" else 6
        for field in ("source", "destination"):
            value = getattr(self, field)
            if value is not None:
                said[field] = ipaddress.ip_network(value).version
        if self.protocol in FAMILY_OF_PROTOCOL:
            said["protocol"] = FAMILY_OF_PROTOCOL[self.protocol]
        if len(set(said.values())) > 1:
            raise ValueError(
                "the rule mixes IPv4 and IPv6: "
                + ", ".join(f"{k} is IPv{v}" for k, v in said.items())
            )
        return next(iter(said.values()), 0)


class RulesFileIn(_Strict):
    rules: list[RuleIn] = Field(max_length=MAX_RULES)


@dataclass(frozen=True)
class CompiledRules:
    """Rules as the BPF program reads them: ``records[i]`` is rule ``names[i]``."""

    names: tuple[str, ...]
    records: tuple[Rule, ...]
    actions: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)


def _prefix_bytes(cidr: str | None) -> tuple[bytes, bytes]:
    """Network and mask as 16 bytes each (an IPv4 prefix in the first four)."""
    if cidr is None:
        return bytes(16), bytes(16)
    net = ipaddress.ip_network(cidr)
    return net.network_address.packed.ljust(16, b"\0"), net.netmask.packed.ljust(16, b"\0")


def compile_rule(rule: RuleIn) -> Rule:
    r = Rule()
    r.family = rule.ip_family()
    r.proto = rule.protocol or 0
    for field, addr, mask in (("source", r.src, r.src_mask), ("dest", r.dst, r.dst_mask)):
        net, netmask = _prefix_bytes(rule.source if field == "source" else rule.destination)
        addr[:] = list(net)
        mask[:] = list(netmask)
    every = (0, 65535)
    r.sport_min, r.sport_max = rule.source_ports if rule.source_ports is not None else every
    r.dport_min, r.dport_max = (
        rule.destination_ports if rule.destination_ports is not None else every
    )
    r.len_min, r.len_max = rule.length if rule.length is not None else every
    if rule.tcp_flags is not None:
        r.tcp_flags_mask, r.tcp_flags_value = parse_tcp_flags(rule.tcp_flags)
    if rule.payload is not None:
        data, mask = rule.payload.pattern(), rule.payload.bytes_mask()
        r.sig[: len(data)] = [d & m for d, m in zip(data, mask, strict=True)]
        r.sig_mask[: len(mask)] = list(mask)
        r.sig_len = len(data)
        r.sig_offset = rule.payload.offset
    reads_l4 = (
        rule.source_ports is not None
        or rule.destination_ports is not None
        or rule.tcp_flags is not None
        or rule.payload is not None
    )
    r.flags = NEED_L4 if reads_l4 else 0
    r.action = ACTIONS[rule.action]
    return r


def compile_rules(rules: list[RuleIn]) -> CompiledRules:
    if len(rules) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} rules, got {len(rules)}")
    return CompiledRules(
        tuple(r.name for r in rules),
        tuple(compile_rule(r) for r in rules),
        tuple(r.action for r in rules),
    )


def parse_rules(text: str, file: str | Path = "<rules>") -> CompiledRules:
    """The rules of a rules file's ``text``, checked and compiled."""
    what = "a rules file is a YAML mapping with a list of rules (rules: [...])"
    doc = parse_model(text, file, RulesFileIn, what)
    seen: dict[str, int] = {}
    problems = []
    for i, rule in enumerate(doc.rules):
        if rule.name in seen:
            msg = f"the name {rule.name!r} is given twice (first as rules[{seen[rule.name]}])"
            problems.append(Problem(f"rules[{i}].name", msg, line_of(text, ("rules", i, "name"))))
        seen.setdefault(rule.name, i)
    if problems:
        raise InputError(file, problems)
    return compile_rules(doc.rules)


def load_rules(path: str | Path) -> CompiledRules:
    return parse_rules(read_text(path), path)
