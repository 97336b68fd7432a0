"""Authoritative DNS on anycast, in the lab: Knot DNS at every site, on the same address.

As F-root does it: every site runs an authoritative server that listens on the anycast
address and serves the same zone; a client's query lands on whatever site BGP picks, and
the answer says which site it was — the site code as the server's NSID (RFC 5001) and as
its ``id.server`` / ``hostname.bind`` TXT record in the CHAOS class (RFC 4892), which is
what dig, dnsdiag, DNSViz and Zonemaster ask for.

Data flow: :func:`zone_text` makes the zone from the lab (its name, the anycast address
as the name server's and the service's address), :func:`config` one ``knot.conf`` per
site (listen on the site's anycast addresses, NSID and identity = the site code, every
path in the node's directory), :func:`start` writes them and runs ``knotd`` in each
site's namespace, recording each process id in the lab's state so that ``anyedge lab
down`` ends it with everything else.  :func:`query` asks from a node's namespace with
dnspython; :func:`answering_site` reads the site from an answer's NSID.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from ..adapters import netns
from .build import LabError, locked, node_dir
from .plan import LabPlan, NodePlan

ZONE = "lab.anyedge.test."
DNS_PORT = 53


def zone_text(plan: LabPlan, zone: str = ZONE, serial: int = 1, extra: Sequence[str] = ()) -> str:
    """The zone every site serves: the same bytes everywhere (anycast needs that);
    ``extra`` records (zone-file lines) after the standard ones."""
    a = plan.service_address
    return "\n".join(
        [
            f"$ORIGIN {zone}",
            "$TTL 300",
            f"@ SOA ns.{zone} hostmaster.{zone} {serial} 3600 600 86400 300",
            f"@ NS ns.{zone}",
            f"ns A {a}",
            f"@ A {a}",
            f"www A {a}",
            f'@ TXT "anyedge lab {plan.name}"',
            *extra,
            "",
        ]
    )


def config(node: NodePlan, workdir: Path, zone: str = ZONE, port: int = DNS_PORT) -> str:
    """``knot.conf`` for one site: its anycast addresses, its code as NSID and identity."""
    listen = ", ".join(f"{a}@{port}" for a in node.anycast)
    return "\n".join(
        [
            "server:",
            f"    rundir: {workdir}",
            f"    pidfile: {workdir}/knot.pid",
            f"    listen: [ {listen} ]",
            f"    identity: {node.site}",
            f"    nsid: {node.site}",
            "    udp-workers: 1",
            "    tcp-workers: 1",
            "    background-workers: 1",
            "log:",
            "  - target: stdout",
            "    any: info",
            "database:",
            f"    storage: {workdir}",
            "control:",
            f"    listen: {workdir}/knot.sock",
            "zone:",
            f"  - domain: {zone}",
            f"    storage: {workdir}",
            "    file: zone.txt",
            "    zonefile-sync: -1",
            "    journal-content: none",
            "",
        ]
    )


def knot_dir(directory: Path, node: NodePlan) -> Path:
    return node_dir(directory, node.name) / "knot"


def start_site(
    plan: LabPlan, node: NodePlan, directory: Path, zone: str = ZONE, timeout: float = 10.0
) -> int:
    """Write the site's zone and configuration, start ``knotd`` in its namespace and
    wait until it answers on the anycast address; returns its process id."""
    if shutil.which("knotd") is None:
        raise LabError("knotd is not installed (apt-get install knot)")
    d = knot_dir(directory, node)
    d.mkdir(parents=True, exist_ok=True)
    (d / "zone.txt").write_text(zone_text(plan, zone))
    conf = d / "knot.conf"
    conf.write_text(config(node, d, zone))
    log = d / "knotd.log"
    log.unlink(missing_ok=True)
    pid = netns.spawn(node.namespace, ["knotd", "-c", str(conf)], log)
    with locked(directory) as state:
        state.pids.setdefault(node.name, []).append(pid)
        state.save(directory)
    end = time.monotonic() + timeout
    while True:
        try:
            if query(node.namespace, node.anycast[0], zone, timeout=0.5).site == node.site:
                return pid
        except (OSError, dns.exception.DNSException):
            pass
        if not netns.alive(pid) or time.monotonic() > end:
            tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
            raise LabError(f"{node.site}: knotd did not start: {tail}")
        time.sleep(0.05)


def start(plan: LabPlan, directory: Path, zone: str = ZONE) -> dict[str, int]:
    """Knot at every site; its process id by site code."""
    return {str(n.site): start_site(plan, n, directory, zone) for n in plan.sites}


@dataclass(frozen=True)
class Answer:
    rcode: str
    site: str | None  # the NSID the server put in its answer
    addresses: tuple[str, ...]  # the A records of the answer


def query(
    namespace: str | None,
    address: str,
    name: str = ZONE,
    rdtype: str = "A",
    timeout: float = 1.0,
    port: int = DNS_PORT,
) -> Answer:
    """Ask ``address`` for ``name`` from inside ``namespace`` (with NSID requested)."""
    q = dns.message.make_query(
        name, rdtype, use_edns=0, options=[dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")]
    )
    with netns.entered(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setblocking(False)
        r = dns.query.udp(q, address, timeout=timeout, port=port, sock=sock)
    nsid = next((o for o in r.options if o.otype == dns.edns.NSID), None)
    site = None if nsid is None else _nsid_bytes(nsid).decode(errors="replace")
    addresses = tuple(
        rd.to_text() for rrset in r.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset
    )
    return Answer(dns.rcode.to_text(r.rcode()), site, addresses)


def _nsid_bytes(option: dns.edns.Option) -> bytes:
    data = getattr(option, "nsid", None)  # dnspython >= 2.6 parses NSID
    if data is None:
        data = getattr(option, "data", b"")
    return bytes(data or b"")


def records(
    namespace: str | None, address: str, name: str, rdtype: str, timeout: float = 1.0
) -> list[str]:
    """The answer's records of ``rdtype`` for ``name`` (their text), asked from
    ``namespace``."""
    q = dns.message.make_query(name, rdtype)
    with netns.entered(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setblocking(False)
        r = dns.query.udp(q, address, timeout=timeout, sock=sock)
    want = dns.rdatatype.from_text(rdtype)
    return [rd.to_text() for rrset in r.answer if rrset.rdtype == want for rd in rrset]


def chaos_identity(
    namespace: str | None, address: str, name: str = "id.server.", timeout: float = 1.0
) -> str:
    """The server's ``id.server.`` (or ``hostname.bind.``) TXT in the CHAOS class."""
    q = dns.message.make_query(name, dns.rdatatype.TXT, dns.rdataclass.CH)
    with netns.entered(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setblocking(False)
        r = dns.query.udp(q, address, timeout=timeout, sock=sock)
    for rrset in r.answer:
        for rd in rrset:
            return b"".join(rd.strings).decode()
    raise LabError(f"{address}: no {name} TXT in the CHAOS class")


def answering_sites(plan: LabPlan, clients: list[str] | None = None) -> dict[str, str | None]:
    """client -> the site whose server answered its query (None: no answer)."""
    from ..model.lab import NodeKind

    names = clients or [n.name for n in plan.of_kind(NodeKind.CLIENT)]
    out: dict[str, str | None] = {}
    for c in names:
        try:
            out[c] = query(plan.node(c).namespace, plan.service_address).site
        except (OSError, dns.exception.DNSException):
            out[c] = None
    return out
