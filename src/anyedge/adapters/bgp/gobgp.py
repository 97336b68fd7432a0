"""GoBGP as a site's BGP speaker.

One ``gobgpd`` per site, started inside the site's namespace with a TOML configuration
(:func:`render_gobgp_toml`) under the node's ``workdir``.  Its gRPC API listens on a Unix
socket in ``workdir`` (``--api-hosts unix://…/gobgp.sock``, not on a TCP port that
other nodes of the lab could reach), so the ``gobgp`` command line talks to it from the
root namespace with ``--target unix://…``.

The configuration sets the ASN, the router id and ``port = 179``, and:

* on the global RIB, import and export policy ``originated-only`` (accept
  ``route-type = "local"``, i.e. the paths added through the API) with
  ``default-import-policy`` and ``default-export-policy`` ``"reject-route"``: nothing
  received from a neighbour enters the RIB (it stays in that neighbour's adj-rib-in),
  so nothing is learned and nothing is re-exported.  A bare reject default is not
  enough: GoBGP runs the global import policy on API-added paths too, so it would
  reject the site's own prefixes;
* a session with a prepend, MED or communities of its own: a neighbour set of its own
  and, ahead of ``local-paths`` in the same export policy, a statement that accepts
  local paths sent to that neighbour with ``set-as-path-prepend``, ``set-med`` and
  ``set-community`` (added);
* per neighbour the lab's timers (``hold-time``, ``keepalive-interval``,
  ``connect-retry``) and ``minimum-advertisement-interval = 0`` (no MRAI delay), the
  local address of the link as transport address, IPv4 unicast only.

After a session drops, gobgpd stays idle for 5 s before it takes a new connection (the
idle hold time is a constant in GoBGP, not a setting), so a session comes back about
5 s after the peer's reset, slower than with the other speakers.

Originated prefixes are paths added to the global RIB through the API
(``gobgp global rib add -a ipv4 P origin igp nexthop 0.0.0.0 [aspath A,A]``);
GoBGP replaces the next hop by its own address on eBGP export and puts its ASN in
front, so the ``aspath`` given holds the ASN ``prepend`` times and the router sees it
``1 + prepend`` times.  Adding a prefix again replaces its path (that is how a changed
prepend count is announced); ``gobgp global rib del -a ipv4 P`` withdraws it.  No MED
is set.  :meth:`GoBgp.start` announces the initial routes the same way once the API
answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import netns
from .base import Neighbor, Route, SpeakerConfig, SpeakerError, by_prefix, run_tool

GOBGPD = "gobgpd"
GOBGP = "gobgp"
POLICY = "originated-only"  # accepts the paths added through the API, nothing else


def render_gobgp_toml(cfg: SpeakerConfig) -> str:
    """gobgpd.toml for a site speaker (the routes are added through the API)."""
    t = cfg.timers
    local = sorted({n.local_address for n in cfg.neighbors})
    lines = [
        "[global.config]",
        f"  as = {cfg.asn}",
        f'  router-id = "{cfg.router_id}"',
        "  port = 179",
        f"  local-address-list = [{', '.join(json.dumps(a) for a in local)}]",
        "",
        "[global.apply-policy.config]",
        f'  import-policy-list = ["{POLICY}"]',
        '  default-import-policy = "reject-route"',
        f'  export-policy-list = ["{POLICY}"]',
        '  default-export-policy = "reject-route"',
        "",
        *_session_sets(cfg),
        *_link_sets(cfg),
        "[[policy-definitions]]",
        f'  name = "{POLICY}"',
        *_next_hop6_statements(cfg),
        *_session_statements(cfg),
        "  [[policy-definitions.statements]]",
        '    name = "local-paths"',
        "    [policy-definitions.statements.conditions.bgp-conditions]",
        '      route-type = "local"',
        "    [policy-definitions.statements.actions]",
        '      route-disposition = "accept-route"',
    ]
    for n in cfg.neighbors:
        lines += [
            "",
            "[[neighbors]]",
            "  [neighbors.config]",
            f'    neighbor-address = "{n.address}"',
            f"    peer-as = {n.asn}",
            f'    description = "{n.interface}"',
            "  [neighbors.timers.config]",
            f"    hold-time = {t.hold}",
            f"    keepalive-interval = {t.keepalive}",
            f"    connect-retry = {t.connect_retry}",
            "    minimum-advertisement-interval = 0",
            "  [neighbors.transport.config]",
            f'    local-address = "{n.local_address}"',
            "  [[neighbors.afi-safis]]",
            "    [neighbors.afi-safis.config]",
            '      afi-safi-name = "ipv4-unicast"',
        ]
        if cfg.ipv6:
            lines += [
                "  [[neighbors.afi-safis]]",
                "    [neighbors.afi-safis.config]",
                '      afi-safi-name = "ipv6-unicast"',
            ]
    return "\n".join(lines) + "\n"


def _link_sets(cfg: SpeakerConfig) -> list[str]:
    """A neighbour set per neighbour (``link-<i>``) in a dual-stack lab."""
    lines: list[str] = []
    for i, n in enumerate(cfg.neighbors, start=1):
        if cfg.ipv6:
            lines += [
                "[[defined-sets.neighbor-sets]]",
                f'  neighbor-set-name = "link-{i}"',
                f"  neighbor-info-list = [{json.dumps(n.address)}]",
                "",
            ]
    return lines


def _next_hop6_statements(cfg: SpeakerConfig) -> list[str]:
    """IPv6 local paths sent to the neighbour of set ``link-<i>`` get the site's IPv6
    address on that link as their next hop (the session runs over IPv4, whose address
    GoBGP would give them).  No disposition: the statements after it still decide."""
    lines: list[str] = []
    for i, n in enumerate(cfg.neighbors, start=1):
        if cfg.ipv6:
            lines += [
                "  [[policy-definitions.statements]]",
                f'    name = "next-hop6-{i}"',
                "    [policy-definitions.statements.conditions.match-neighbor-set]",
                f'      neighbor-set = "link-{i}"',
                '      match-set-options = "any"',
                "    [policy-definitions.statements.conditions.bgp-conditions]",
                '      route-type = "local"',
                '      afi-safi-in-list = ["ipv6-unicast"]',
                "    [policy-definitions.statements.actions.bgp-actions]",
                f'      set-next-hop = "{n.local_address6}"',
            ]
    return lines


def _shaped(cfg: SpeakerConfig) -> list[tuple[int, Neighbor]]:
    """The neighbours whose session sends something of its own, numbered from 1."""
    return [(i, n) for i, n in enumerate(cfg.neighbors, start=1) if n.shaped]


def _session_sets(cfg: SpeakerConfig) -> list[str]:
    lines: list[str] = []
    for i, n in _shaped(cfg):
        lines += [
            "[[defined-sets.neighbor-sets]]",
            f'  neighbor-set-name = "session-{i}"',
            f"  neighbor-info-list = [{json.dumps(n.address)}]",
            "",
        ]
    return lines


def _session_statements(cfg: SpeakerConfig) -> list[str]:
    """Local paths sent to the neighbour of set ``session-<i>`` get its prepend, MED and
    communities."""
    lines: list[str] = []
    for i, n in _shaped(cfg):
        lines += [
            "  [[policy-definitions.statements]]",
            f'    name = "session-{i}"',
            "    [policy-definitions.statements.conditions.match-neighbor-set]",
            f'      neighbor-set = "session-{i}"',
            '      match-set-options = "any"',
            "    [policy-definitions.statements.conditions.bgp-conditions]",
            '      route-type = "local"',
            "    [policy-definitions.statements.actions]",
            '      route-disposition = "accept-route"',
        ]
        if n.med:
            lines += [
                "    [policy-definitions.statements.actions.bgp-actions]",
                f'      set-med = "{n.med}"',
            ]
        if n.prepend:
            lines += [
                "    [policy-definitions.statements.actions.bgp-actions.set-as-path-prepend]",
                f'      as = "{cfg.asn}"',
                f"      repeat-n = {n.prepend}",
            ]
        if n.communities:
            lines += [
                "    [policy-definitions.statements.actions.bgp-actions.set-community]",
                '      options = "add"',
                "      [policy-definitions.statements.actions.bgp-actions.set-community"
                ".set-community-method]",
                f"        communities-list = [{', '.join(json.dumps(c) for c in n.communities)}]",
            ]
    return lines


def rib_add_args(asn: int, route: Route) -> list[str]:
    """``gobgp`` arguments that (re)announce ``route``."""
    v6 = ":" in route.prefix
    args = ["global", "rib", "add", "-a", "ipv6" if v6 else "ipv4", route.prefix]
    args += ["origin", "igp", "nexthop", "::" if v6 else "0.0.0.0"]
    if route.prepend:
        args += ["aspath", ",".join([str(asn)] * route.prepend)]
    return args


@dataclass
class GoBgp:
    """One ``gobgpd`` in a site's namespace."""

    config: SpeakerConfig
    _routes: dict[str, Route] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.config.workdir / "gobgp.sock"

    def gobgp(self, *args: str, timeout: float = 10.0) -> str:
        argv = [GOBGP, "--target", f"unix://{self.socket}", *args]
        return run_tool(self.config.node, argv, timeout)

    def start(self, routes: Iterable[Route] = ()) -> list[int]:
        cfg = self.config
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        want = dict(by_prefix(routes))
        conf = cfg.workdir / "gobgpd.toml"
        conf.write_text(render_gobgp_toml(cfg))
        self.socket.unlink(missing_ok=True)
        argv = [GOBGPD, "-f", str(conf), "-t", "toml", "-p", "--pprof-disable"]
        argv += ["--api-hosts", f"unix://{self.socket}"]
        log = cfg.workdir / "gobgpd.out"
        pid = netns.spawn(cfg.namespace, argv, log)
        end = time.monotonic() + 10.0
        while True:
            try:
                self.gobgp("global", timeout=2.0)
                break
            except SpeakerError:
                if not netns.alive(pid):
                    out = log.read_text(errors="replace").strip()
                    raise SpeakerError(f"{cfg.node}: gobgpd exited: {out}") from None
                if time.monotonic() > end:
                    netns.stop([pid])
                    raise SpeakerError(f"{cfg.node}: gobgpd did not start in 10 s") from None
                time.sleep(0.05)
        self._routes = {}
        try:
            self.apply(want.values())
        except SpeakerError:
            netns.stop([pid])
            raise
        return [pid]

    def assume(self, routes: Iterable[Route]) -> None:
        """What the running daemon announces now (a driver made afresh does not know)."""
        self._routes = dict(by_prefix(routes))

    def apply(self, routes: Iterable[Route]) -> None:
        want = by_prefix(routes)
        for p in list(self._routes):
            if p not in want:
                self.gobgp("global", "rib", "del", "-a", "ipv6" if ":" in p else "ipv4", p)
                del self._routes[p]
        for p, r in want.items():
            if self._routes.get(p) != r:
                self.gobgp(*rib_add_args(self.config.asn, r))
                self._routes[p] = r

    def established(self) -> int:
        """Neighbours whose session state is established (``gobgp neighbor -j``)."""
        return sum(self.sessions().values())

    def sessions(self) -> dict[str, bool]:
        """Per neighbour address: is its session established."""
        peers: list[dict[str, Any]] = json.loads(self.gobgp("neighbor", "-j") or "[]") or []
        up = {_address(p) for p in peers if _session_state(p) == "established"}
        return {n.address: n.address in up for n in self.config.neighbors}


def _address(peer: Mapping[str, Any]) -> str:
    for part in ("conf", "state"):
        a = peer.get(part, {}).get("neighbor_address")
        if a:
            return str(a)
    return ""


def _session_state(peer: Mapping[str, Any]) -> str:
    state = peer.get("state", {}).get("session_state", "")
    # the JSON holds the enum's number (6 = established) or, in some versions, its name
    if isinstance(state, int):
        return "established" if state == 6 else str(state)
    return str(state).lower().removeprefix("session_state_")
