"""The backbone in the lab: three sites, two transit providers, an origin, SRv6 paths.

The topology (one namespace per node, names ``PREFIX`` + node)::

            b ---- t1 ----.
          /  \\              o   (the origin, 198.51.100.10)
        a     |            /
          \\  /            /
            c ---- t2 ---'

``a`` is the site where requests land; ``b`` and ``c`` are egress sites, each with its
own transit provider (``t1``, ``t2``) toward the origin.  The backbone links a–b, a–c,
b–c and the providers' links to the origin are delay lines (:mod:`.delayline`, one
process for all of them) with one-way delays from :data:`DELAYS`; a site's link to its
own provider, in the same city, is a veth pair.

Addressing: site ``i`` is ``2001:db8:5:i::1`` (its SID: the kernel's Segment Routing
Header input makes it *End* when segments are left and decapsulates when none are);
backbone link i–j is ``2001:db8:ff:ij::/64``, and each site routes its neighbours'
``/64`` over the direct link, so every segment list below is a walk over neighbours.
Transit is IPv4 (203.0.113.0/24).

Paths (:data:`PATHS`) from ``a`` to the origin are SR-TE's two shortest backbone paths
to each egress (:func:`candidates`), each a segment list with a return list for the
replies: ``ab`` (a→b, out by t1), ``acb`` (a→c→b, out by t1), ``ac`` (a→c, out by t2) and
``abc`` (a→b→c, out by t2).  Path ``k`` has a client address ``100.64.k.1`` on
``a``: the origin routes it back through the path's provider, the egress site's head end
puts the replies on the path's return list, so a round trip measured from that address
is the path's, both ways.  In ``a`` each path has a TUN device ``sr-NAME`` and a routing
table (rule ``from 100.64.k.1``) that sends the origin into it — the probes' way — and
the main table's route to the origin, with the path's address as source, is the path
in use: :meth:`BackboneLab.install` replaces it with pyroute2.  :mod:`.srhead` pushes
the headers (this kernel has no ``encap seg6`` routes).

Counters: an nftables rule per backbone interface in every site counts the SRv6 packets
that come in on it (``ip6 nexthdr 43``); :meth:`BackboneLab.counters` reads them, so a
test can see which links the traffic took.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import NetNS

from ..adapters import netns
from ..backbone import Graph, k_shortest
from .delayline import End, LinkSpec, Shape

SITES = {"a": 1, "b": 2, "c": 3}
STATE = "state.json"
NFT_TABLE = "backbone_counters"
ORIGIN = "198.51.100.10"
ECHO_PORT = 7
BACKBONE = [("a", "b"), ("a", "c"), ("b", "c")]
DELAYED = [*BACKBONE, ("t1", "o"), ("t2", "o")]
# one-way delays, ms.  Round trips asked: ab 14, ac 20, abc 26, acb 28 — the best two
# 6 ms apart, more than Argo's margin, so it moves back when a cut heals
DELAYS: dict[tuple[str, str], float] = {
    ("a", "b"): 6.0,
    ("a", "c"): 8.0,
    ("b", "c"): 5.0,
    ("t1", "o"): 1.0,
    ("t2", "o"): 2.0,
}
EGRESS = {"b": ("t1", "203.0.113.0"), "c": ("t2", "203.0.113.4")}
PROVIDER_TO_ORIGIN = {"t1": "203.0.113.8", "t2": "203.0.113.12"}


@dataclass(frozen=True)
class SrPath:
    name: str  # the sites it walks, e.g. "acb"
    index: int  # k: client address 100.64.k.1, table 100 + k

    @property
    def sites(self) -> list[str]:
        return list(self.name)

    @property
    def egress(self) -> str:
        return self.name[-1]

    @property
    def provider(self) -> str:
        return EGRESS[self.egress][0]

    @property
    def source(self) -> str:
        return f"100.64.{self.index}.1"

    @property
    def table(self) -> int:
        return 100 + self.index

    @property
    def device(self) -> str:
        return f"sr-{self.name}"

    @property
    def segments(self) -> list[str]:
        return [sid(s) for s in self.sites[1:]]

    @property
    def return_segments(self) -> list[str]:
        return [sid(s) for s in reversed(self.sites[:-1])]

    @property
    def links(self) -> list[tuple[str, str]]:
        """The backbone links it crosses, each as (from, to)."""
        return list(zip(self.sites, self.sites[1:], strict=False))


def candidates(delays: Mapping[tuple[str, str], float], k: int = 2) -> list[SrPath]:
    """SR-TE's candidates: the ``k`` lowest-latency backbone paths from ``a`` to each
    egress site (:func:`anyedge.backbone.k_shortest` over the lab's links), numbered in
    that order."""
    names = list(SITES)
    graph = Graph.from_edges(
        len(names), [(names.index(x), names.index(y), delays[(x, y)], 100.0) for x, y in BACKBONE]
    )
    walks = [
        "".join(names[i] for i in path)
        for egress in EGRESS
        for _ms, path in k_shortest(graph, names.index("a"), names.index(egress), k)
    ]
    return [SrPath(w, i + 1) for i, w in enumerate(walks)]


PATHS = candidates(DELAYS)  # ab, acb (out by t1); ac, abc (out by t2)


def sid(site: str) -> str:
    return f"2001:db8:5:{SITES[site]}::1"


def neighbours(site: str) -> list[str]:
    return [y if x == site else x for x, y in BACKBONE if site in (x, y)]


def link_net(x: str, y: str) -> str:
    i, j = sorted((SITES[x], SITES[y]))
    return f"2001:db8:ff:{i}{j}::"


def port(there: str) -> str:
    """A node's interface toward ``there``."""
    return f"to-{there}"


def path_rtt(path: SrPath, delays: Mapping[tuple[str, str], float]) -> float:
    """The round trip the delay lines ask for on ``path``, ms."""
    one_way = sum(delays[_key(*hop)] for hop in path.links)
    return 2 * (one_way + delays[(path.provider, "o")])


def _key(x: str, y: str) -> tuple[str, str]:
    return (x, y) if (x, y) in DELAYS else (y, x)


def oracle(delays: Mapping[tuple[str, str], float]) -> SrPath:
    """The path with the lowest configured round trip."""
    return min(PATHS, key=lambda p: path_rtt(p, delays))


class BackboneLab:
    """Namespaces, links, head ends and routes of the topology above; ``down`` removes
    everything (namespaces, and with them every process started inside)."""

    def __init__(
        self, prefix: str, workdir: Path, delays: Mapping[tuple[str, str], float] | None = None
    ) -> None:
        self.prefix = prefix
        self.workdir = workdir
        self.delays: dict[tuple[str, str], float] = dict(delays or DELAYS)
        self.installed: SrPath | None = None
        self.pids: list[int] = []
        self.line_pid = 0
        self._shapes: dict[int, Shape] = {}  # links given a shape at run time

    def ns(self, node: str) -> str:
        return self.prefix + node

    # ------------------------------------------------------------------ up and down

    def up(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> None:
        (self.workdir / "echo.log").unlink(missing_ok=True)
        for node in (*SITES, "t1", "t2", "o"):
            netns.add(self.ns(node))
            netns.sysctl(
                self.ns(node),
                {
                    "net.ipv6.conf.all.seg6_enabled": "1",
                    "net.ipv6.conf.default.seg6_enabled": "1",
                    "net.ipv6.conf.all.accept_dad": "0",
                    "net.ipv6.conf.default.accept_dad": "0",
                },
            )
        for site, (provider, _) in EGRESS.items():
            netns.veth(self.ns(site), port(provider), self.ns(provider), port(site))
        self._spawn_lines()
        self._address()
        self._spawn_heads()
        self._counters()
        self.pids.append(
            netns.spawn(
                self.ns("o"),
                [sys.executable, "-m", "anyedge.lab.srecho", ORIGIN, str(ECHO_PORT)],
                self.workdir / "echo.log",
                env=_env(),
            )
        )
        _wait_file(self.workdir / "echo.log", self.pids[-1], "the origin's echo server", "ready")
        self.install(oracle(self.delays))
        self.save()

    def _line_specs(self) -> list[dict[str, Any]]:
        return [
            LinkSpec(
                End(self.ns(x), port(y)),
                End(self.ns(y), port(x)),
                self._shapes.get(i, Shape(delay_ms=self.delays[(x, y)])),
            ).to_dict()
            for i, (x, y) in enumerate(DELAYED)
        ]

    def _spawn_lines(self) -> None:
        spec, ready = self.workdir / "links.json", self.workdir / "links.ready"
        spec.write_text(json.dumps(self._line_specs()))
        ready.unlink(missing_ok=True)  # a lab that was here before left its own
        argv = [sys.executable, "-m", "anyedge.lab.delayline", str(spec), "--ready", str(ready)]
        self.line_pid = netns.spawn(self.ns("a"), argv, self.workdir / "links.log", env=_env())
        self.pids.append(self.line_pid)
        _wait_file(ready, self.line_pid, "the delay lines")

    def _spawn_heads(self) -> None:
        devices: list[dict[str, Any]] = [
            {
                "namespace": self.ns("a"),
                "ifname": p.device,
                "source": sid("a"),
                "segments": p.segments,
            }
            for p in PATHS
        ]
        for egress in EGRESS:
            back = {p.source: p.return_segments for p in PATHS if p.egress == egress}
            devices.append(
                {
                    "namespace": self.ns(egress),
                    "ifname": "sr-back",
                    "source": sid(egress),
                    "by_destination": back,
                }
            )
        spec, ready = self.workdir / "heads.json", self.workdir / "heads.ready"
        spec.write_text(json.dumps(devices))
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "anyedge.lab.srhead", str(spec), "--ready", str(ready)]
        pid = netns.spawn(self.ns("a"), argv, self.workdir / "heads.log", env=_env())
        self.pids.append(pid)
        _wait_file(ready, pid, "the SRv6 head ends")
        for p in PATHS:  # the probes' way: from the path's address, into its device
            with NetNS(self.ns("a")) as ns:
                idx = ns.link_lookup(ifname=p.device)[0]
                ns.rule("add", src=p.source, src_len=32, table=p.table, priority=1000 + p.index)
                ns.route("replace", dst=f"{ORIGIN}/32", oif=idx, table=p.table)
        for egress in EGRESS:
            netns.batch(self.ns(egress), ["route replace 100.64.0.0/16 dev sr-back"])

    def _address(self) -> None:
        cmds: dict[str, list[str]] = {n: [] for n in (*SITES, "t1", "t2", "o")}
        for s in SITES:
            cmds[s].append(f"addr add {sid(s)}/128 dev lo")
        for x, y in BACKBONE:
            net = link_net(x, y)
            for here, there in ((x, y), (y, x)):
                cmds[here].append(f"addr add {net}{SITES[here]}/64 dev {port(there)} nodad")
                cmds[here].append(
                    f"route replace 2001:db8:5:{SITES[there]}::/64 via {net}{SITES[there]}"
                )
        for site, (provider, net) in EGRESS.items():
            base = net.rsplit(".", 1)[0]
            last = int(net.rsplit(".", 1)[1])
            s_ip, p_ip = f"{base}.{last + 1}", f"{base}.{last + 2}"
            cmds[site] += [
                f"addr add {s_ip}/30 dev {port(provider)}",
                f"route replace {ORIGIN}/32 via {p_ip}",
            ]
            cmds[provider] += [
                f"addr add {p_ip}/30 dev {port(site)}",
                f"route replace 100.64.0.0/10 via {s_ip}",
            ]
        for provider, net in PROVIDER_TO_ORIGIN.items():
            base, last = net.rsplit(".", 1)[0], int(net.rsplit(".", 1)[1])
            p_ip, o_ip = f"{base}.{last + 1}", f"{base}.{last + 2}"
            cmds[provider] += [
                f"addr add {p_ip}/30 dev {port('o')}",
                f"route replace {ORIGIN}/32 via {o_ip}",
            ]
            cmds["o"].append(f"addr add {o_ip}/30 dev {port(provider)}")
            for p in PATHS:
                if p.provider == provider:
                    cmds["o"].append(f"route replace 100.64.{p.index}.0/24 via {p_ip}")
        cmds["o"].append(f"addr add {ORIGIN}/32 dev lo")
        for p in PATHS:
            cmds["a"].append(f"addr add {p.source}/32 dev lo")
        for node, lines in cmds.items():
            netns.batch(self.ns(node), lines)

    def _counters(self) -> None:
        for s in SITES:
            rules = [
                f'add rule inet {NFT_TABLE} in iifname "{port(t)}" ip6 nexthdr 43 counter'
                for t in neighbours(s)
            ]
            chain = (
                f"add chain inet {NFT_TABLE} in {{ type filter hook prerouting priority -300; }}"
            )
            _nft(self.ns(s), "\n".join([f"add table inet {NFT_TABLE}", chain, *rules]))

    def down(self) -> None:
        netns.stop(self.pids)
        self.pids = []
        for node in (*SITES, "t1", "t2", "o"):
            netns.remove(self.ns(node))
        (self.workdir / STATE).unlink(missing_ok=True)

    def save(self) -> None:
        """Write what the lab made to ``workdir/state.json`` (for :meth:`attach`)."""
        state = {
            "prefix": self.prefix,
            "pids": self.pids,
            "delay_lines": self.line_pid,
            "delays": {f"{x}-{y}": d for (x, y), d in self.delays.items()},
            "shapes": {str(i): [s.delay_ms, s.jitter_ms, s.loss] for i, s in self._shapes.items()},
        }
        tmp = self.workdir / (STATE + ".new")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.workdir / STATE)

    @classmethod
    def attach(cls, workdir: Path) -> BackboneLab:
        """The lab whose state ``workdir`` holds; the installed path is read from the
        kernel (the device of ``a``'s route to the origin)."""
        try:
            state = json.loads((workdir / STATE).read_text())
        except (OSError, ValueError) as e:
            raise OSError(f"{workdir / STATE}: no backbone lab here ({e})") from None
        delays: dict[tuple[str, str], float] = {}
        for k, v in state["delays"].items():
            x, y = k.split("-", 1)
            delays[(x, y)] = float(v)
        lab = cls(state["prefix"], workdir, delays)
        lab.pids = [int(p) for p in state["pids"]]
        lab.line_pid = int(state["delay_lines"])
        lab._shapes = {int(i): Shape(*v) for i, v in state["shapes"].items()}
        with NetNS(lab.ns("a")) as ns:
            routes = ns.route("get", dst=ORIGIN)
            oif = routes[0].get("oif") if routes else None
            names = {ns.link("get", index=oif)[0].get("ifname")} if oif else set()
        lab.installed = next((p for p in PATHS if p.device in names), None)
        return lab

    # ------------------------------------------------------------------ at run time

    def install(self, path: SrPath) -> None:
        """Make ``path`` the way to the origin from ``a`` (the main table's route)."""
        with NetNS(self.ns("a")) as ns:
            idx = ns.link_lookup(ifname=path.device)[0]
            ns.route("replace", dst=f"{ORIGIN}/32", oif=idx, prefsrc=path.source)
        self.installed = path

    def shape(self, link: tuple[str, str], shape: Shape) -> None:
        """Give one delay line a new shape now (its process re-reads the spec on SIGHUP)."""
        i = DELAYED.index(_key(*link))
        self.delays[DELAYED[i]] = shape.delay_ms
        self._shapes[i] = shape
        spec = self._line_specs()
        tmp = self.workdir / "links.json.new"
        tmp.write_text(json.dumps(spec))
        tmp.replace(self.workdir / "links.json")
        os.kill(self.line_pid, 1)  # SIGHUP
        self.save()

    def counters(self) -> dict[tuple[str, str], int]:
        """SRv6 packets that came in over each backbone link, by (from, to)."""
        out: dict[tuple[str, str], int] = {}
        for s in SITES:
            data = json.loads(
                netns.run(self.ns(s), ["nft", "-j", "list", "table", "inet", NFT_TABLE])
            )
            for item in data["nftables"]:
                rule = item.get("rule")
                if not rule:
                    continue
                iif = packets = None
                for e in rule["expr"]:
                    if "match" in e and e["match"]["left"].get("meta", {}).get("key") == "iifname":
                        iif = e["match"]["right"]
                    if "counter" in e:
                        packets = e["counter"]["packets"]
                if iif and packets is not None:
                    out[(iif.removeprefix("to-"), s)] = packets
        return out


def _nft(ns: str, script: str) -> None:
    p = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode:
        raise netns.NetnsError(f"nft in {ns}: {p.stderr.strip()}")


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2])
    return {"PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _wait_file(path: Path, pid: int, what: str, says: str = "", timeout: float = 30.0) -> None:
    """Wait until ``path`` exists (and holds ``says``) while process ``pid`` lives."""
    end = time.monotonic() + timeout
    while not (path.exists() and says in path.read_text()):
        if not netns.alive(pid) or time.monotonic() > end:
            raise RuntimeError(f"{what} did not start (see {path.with_suffix('.log')})")
        time.sleep(0.05)
