"""A customer's firewall as one libnftables JSON batch (pure: no I/O).

Everything lives in one table, ``inet transit``, in the customer's own namespace.  Its
base chain ``inbound`` hooks ``forward``: packets coming from the edge (interface
:data:`UPLINK`) towards the customer meet the customer's rules in order, first match
wins, each with its own counter; what none matches meets the default action (a last
counted rule, and the chain's policy).  Packets the other way — the customer's
replies, decapsulated from its GRE tunnel — pass.

:func:`batch` replaces the chain's rules whole in one batch (create the table and chain
if missing, flush the chain, add every rule), which the kernel applies as one
transaction: a packet meets the old rules or the new ones, never a mixture.  (Flushing
the chain rather than deleting and re-creating the table costs the kernel less: the
hook stays registered.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from .config import Customer, Rule

TABLE = "transit"
CHAIN = "inbound"
UPLINK = "up0"  # the customer namespace's end of its veth to the edge
_T = {"family": "inet", "name": TABLE}

Json = dict[str, Any]


def _match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _prefixes(nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> Any:
    elems = [{"prefix": {"addr": str(n.network_address), "len": n.prefixlen}} for n in nets]
    return elems[0] if len(elems) == 1 else {"set": elems}


def _ports(ports: tuple[int | tuple[int, int], ...]) -> Any:
    elems: list[Any] = [p if isinstance(p, int) else {"range": list(p)} for p in ports]
    return elems[0] if len(elems) == 1 else {"set": elems}


def limit_set(index: int, fam: int) -> str:
    """The dynamic set of sources behind rule ``index``'s per-source limit."""
    return f"rl{index}v{fam}"


def rule_exprs(rule: Rule, index: int = 0) -> list[list[Json]]:
    """The nft expressions of ``rule``: one list per rule (two when it spans IPv4 and IPv6
    or limits per source)."""
    src = [ipaddress.ip_network(s) for s in rule.sources]
    dst = [ipaddress.ip_network(d) for d in rule.destinations]
    head = [_match({"meta": {"key": "iifname"}}, UPLINK)]
    if rule.protocol != "any":
        head.append(_match({"meta": {"key": "l4proto"}}, rule.protocol))
    if rule.ports:
        head.append(_match({"payload": {"protocol": "th", "field": "dport"}}, _ports(rule.ports)))
    out = []
    lim = rule.rate_limit if rule.action == "accept" else None
    per_source = lim is not None and lim.per_source
    fams: list[int | None] = [None] if not (src or dst or per_source) else [4, 6]
    for fam in fams:
        exprs = list(head)
        if fam is not None:
            s = [n for n in src if n.version == fam]
            d = [n for n in dst if n.version == fam]
            if (src and not s) or (dst and not d):
                continue  # nothing of this family can match
            proto = "ip" if fam == 4 else "ip6"
            if s:
                exprs.append(
                    _match({"payload": {"protocol": proto, "field": "saddr"}}, _prefixes(s))
                )
            if d:
                exprs.append(
                    _match({"payload": {"protocol": proto, "field": "daddr"}}, _prefixes(d))
                )
        if lim is not None:
            over: Json = {
                "limit": {"rate": lim.pps, "per": "second", "burst": lim.burst, "inv": True}
            }
            if per_source and fam is not None:
                saddr = {"payload": {"protocol": "ip" if fam == 4 else "ip6", "field": "saddr"}}
                over = {
                    "set": {
                        "op": "update",
                        "elem": saddr,
                        "set": "@" + limit_set(index, fam),
                        "stmt": [over],
                    }
                }
            out.append([*exprs, over, {"counter": None}, {"drop": None}])
        out.append([*exprs, {"counter": None}, {rule.action: None}])
    return out


def limit_sets(customer: Customer) -> list[str]:
    """The names of the dynamic sets ``customer``'s per-source limits keep their sources in."""
    return [
        limit_set(i, fam)
        for i, r in enumerate(customer.rules)
        if r.rate_limit is not None and r.rate_limit.per_source
        for fam in (4, 6)
    ]


def batch(customer: Customer, present: Iterable[str] = ()) -> list[Json]:
    """The commands that make ``customer``'s table exactly its configuration.

    ``present``: the limit sets the table already has (:func:`limit_sets` of the
    configuration applied before).  They are kept, with the sources they hold, and not
    declared again: the kernel marks a set that a rule updates as dynamic, and nft 1.0.6's
    JSON cannot say ``dynamic``, so re-declaring one fails with "File exists".  Sets the
    new configuration no longer uses are deleted once the flush has dropped their rules.
    """
    cmds: list[Json] = [
        {"add": {"table": _T}},
        {
            "add": {
                "chain": {
                    "family": "inet",
                    "table": TABLE,
                    "name": CHAIN,
                    "type": "filter",
                    "hook": "forward",
                    "prio": 0,
                    "policy": "accept",
                }
            }
        },
        {"flush": {"chain": {"family": "inet", "table": TABLE, "name": CHAIN}}},
        # replies from the customer's side are not the customer's firewall's business
        _rule([_match({"meta": {"key": "iifname"}}, UPLINK, "!="), {"accept": None}], "replies"),
    ]
    have, want = set(present), limit_sets(customer)
    for name in sorted(have - set(want)):
        cmds.append({"delete": {"set": {"family": "inet", "table": TABLE, "name": name}}})
    for name in want:
        if name not in have:
            kind = "ipv4_addr" if name.endswith("v4") else "ipv6_addr"
            elem_set = {
                "family": "inet",
                "table": TABLE,
                "name": name,
                "type": kind,
                "flags": ["timeout"],
                "timeout": 60,
                "size": 65536,
            }
            cmds.append({"add": {"set": elem_set}})
    for i, r in enumerate(customer.rules):
        for exprs in rule_exprs(r, i):
            cmds.append(_rule(exprs, r.comment or f"rule {i}"))
    cmds.append(_rule([{"counter": None}, {customer.default: None}], "default"))
    return cmds


def _rule(exprs: list[Json], comment: str) -> Json:
    rule = {"family": "inet", "table": TABLE, "chain": CHAIN, "expr": exprs, "comment": comment}
    return {"add": {"rule": rule}}


def counters(ruleset: Json) -> dict[str, int]:
    """Packets counted per rule comment, from ``Nft.ruleset()`` output of one namespace."""
    out: dict[str, int] = {}
    for item in ruleset.get("nftables", []):
        rule = item.get("rule")
        if not rule or rule.get("table") != TABLE:
            continue
        for e in rule["expr"]:
            if "counter" in e and isinstance(e["counter"], dict):
                c = rule.get("comment", "")
                out[c] = out.get(c, 0) + int(e["counter"]["packets"])
    return out
