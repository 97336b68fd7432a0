"""A customer's namespace on a server, and the routes that lead into it.

As in the post: per customer, a network namespace joined to the server's own namespace
(the *host*) by a veth pair.  In the host, the customer's prefixes are routed into its
veth from a routing table of their own (:data:`TABLE`, reached by one ``ip rule`` per
prefix), so transit routes never mix with the host's main table.  In the customer's
namespace the prefixes are routed into a TUN device, :data:`TUN` — the anycast GRE
forwarder (:mod:`.tunnel`) reads it and encapsulates towards the customer's router —
and everything else (the customer's replies) goes back to the host.

Every customer's veth has the same link addresses (169.254.0.1 and fe80::1 on the host
side, .2 and ::2 inside): routes name the interface, so they never collide.  These changes happen
when a customer arrives, leaves or changes prefixes, through ``ip -batch`` (one process
per change of plumbing); firewall changes, the frequent ones, never come here.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence

from anyedge.adapters import netns

from .ruleset import UPLINK

TABLE = 4242  # the host's routing table for transit prefixes
RULE_PREF = 4242
TUN = "gre0"
TUN_MTU = 1472  # 1500 less the outer IPv4 header (20) and GRE with a key (8)
HOST_ADDR, NS_ADDR = "169.254.0.1", "169.254.0.2"
HOST_ADDR6, NS_ADDR6 = "fe80::1", "fe80::2"


def host_ifname(ns: str) -> str:
    """The host end of a customer namespace's veth (at most 15 characters, stable)."""
    return "mt" + hashlib.sha1(ns.encode()).hexdigest()[:12]


def _ip(host: str | None, commands: Sequence[str], check: bool = True) -> None:
    """Run ``ip`` commands in ``host``: IPv4 ones in one batch, IPv6 ones (a leading
    ``-6 ``, which a batch line cannot carry) in an ``ip -6`` batch."""
    for six in (False, True):
        cmds = [c[3:] if six else c for c in commands if c.startswith("-6 ") == six]
        if not cmds:
            continue
        argv = ["ip", *(["-n", host] if host else []), *(["-6"] if six else [])]
        argv += ["-force", "-batch", "-"]
        p = subprocess.run(argv, input="\n".join(cmds) + "\n", capture_output=True, text=True)
        if check and p.returncode != 0:
            raise netns.NetnsError(f"{' '.join(argv)}: {p.stderr.strip()}\n" + "\n".join(cmds))


def _fam(prefix: str) -> str:
    return "-6 " if ":" in prefix else ""


def create(host: str | None, ns: str, customer_id: str) -> None:
    """The customer's namespace, its veth to ``host`` and its TUN (no prefixes yet)."""
    hif = host_ifname(ns)
    netns.add(ns)
    _ip(
        host,
        [
            f"link add {hif} type veth peer name {UPLINK} netns {ns}",
            f"link set {hif} up",
            f"addr add {HOST_ADDR}/30 dev {hif}",
            f"-6 addr add {HOST_ADDR6}/64 dev {hif} nodad",
        ],
    )
    _ip(
        ns,
        [
            f"link set {UPLINK} up",
            f"addr add {NS_ADDR}/30 dev {UPLINK}",
            f"route add default via {HOST_ADDR} dev {UPLINK}",
            f"-6 addr add {NS_ADDR6}/64 dev {UPLINK} nodad",
            f"-6 route add default via {HOST_ADDR6} dev {UPLINK}",
            f"tuntap add dev {TUN} mode tun",
            f"link set {TUN} mtu {TUN_MTU} multicast off addrgenmode none",  # no chatter
            f"link set {TUN} up",
        ],
    )


def set_prefixes(
    host: str | None, ns: str, customer_id: str, old: Sequence[str], new: Sequence[str]
) -> None:
    """Route the prefixes that came into the customer's namespace; unroute those that went."""
    hif = host_ifname(ns)
    gone = [p for p in old if p not in new]
    came = [p for p in new if p not in old]
    _ip(
        host,
        [f"{_fam(p)}rule del pref {RULE_PREF} to {p} lookup {TABLE}" for p in gone]
        + [f"{_fam(p)}route del {p} table {TABLE}" for p in gone],
        check=False,
    )
    _ip(ns, [f"{_fam(p)}route del {p} dev {TUN}" for p in gone], check=False)
    # a rule left by an applier that died would make "rule add" fail
    _ip(
        host,
        [f"{_fam(p)}rule del pref {RULE_PREF} to {p} lookup {TABLE}" for p in came],
        check=False,
    )
    host_cmds = []
    for p in came:
        via = NS_ADDR6 if ":" in p else NS_ADDR
        host_cmds += [
            f"{_fam(p)}route replace {p} via {via} dev {hif} table {TABLE}",
            f"{_fam(p)}rule add pref {RULE_PREF} to {p} lookup {TABLE}",
        ]
    _ip(host, host_cmds)
    _ip(ns, [f"{_fam(p)}route replace {p} dev {TUN}" for p in came])


def destroy(host: str | None, ns: str, customer_id: str, prefixes: Sequence[str]) -> None:
    """Remove the customer's routes from ``host`` and its namespace (with its veth)."""
    _ip(
        host,
        [f"{_fam(p)}rule del pref {RULE_PREF} to {p} lookup {TABLE}" for p in prefixes]
        + [f"{_fam(p)}route del {p} table {TABLE}" for p in prefixes],
        check=False,
    )
    remove(host, ns)


def remove(host: str | None, ns: str) -> None:
    """Delete the customer's namespace and, first, its veth: the kernel tears a deleted
    namespace down later, in the background, and until then the host's end of the veth
    would still hold its name (a namespace made again at once could not reuse it)."""
    _ip(host, [f"link del {host_ifname(ns)}"], check=False)
    netns.remove(ns)
