"""BIRD 2 as a site's BGP speaker.

One ``bird`` per site, started in the foreground inside the site's namespace
(``bird -f -c bird.conf -s bird.ctl -P bird.pid``) with every file — configuration,
control socket, pid file, log — under the node's ``workdir``.  ``birdc -s bird.ctl``
reaches it through the file system from the root namespace.

The configuration (:func:`render_bird_conf`) has:

* ``protocol device`` — BIRD learns the interfaces from it; a BGP session to a directly
  connected neighbour needs it;
* ``protocol static originated`` with one ``route P blackhole;`` per originated prefix:
  the routes exist only in BIRD's own table.  There is no ``protocol kernel``, so BIRD
  neither reads nor writes the namespace's kernel routing table;
* a filter ``originated_only`` that lets out only the routes of that static protocol,
  sets ``bgp_origin = ORIGIN_IGP`` and prepends the ASN ``prepend`` times per prefix
  (BIRD adds its own ASN once more on eBGP export, so the path the router sees holds the
  ASN ``1 + prepend`` times); no MED is set; a session with a prepend, MED or
  communities of its own gets a filter of its own (``originated_only_<i>``) that also
  prepends, sets ``bgp_med`` and adds to ``bgp_community``;
* in a dual-stack lab, ``protocol static originated6`` for the IPv6 prefixes, and on
  each session an ``ipv6`` channel beside the ``ipv4`` one (the same filters; its next
  hop is the site's IPv6 address on the link, ``next hop address``, since the session
  runs over IPv4);
* one ``protocol bgp`` per neighbour with ``import none`` (nothing is learned, hence
  nothing can be re-exported), ``export filter originated_only`` and the lab's timers
  (hold, keepalive, connect retry, a one-second connect delay and error wait so that a
  session comes back quickly after the peer restarts).

:meth:`Bird.apply` rewrites ``bird.conf`` and runs ``birdc configure``: BIRD re-reads the
file, updates the static routes and re-runs the export filters without resetting the
BGP sessions.  A reply other than "Reconfigured" / "Reconfiguration in progress" (a
parse error, for instance — BIRD then keeps the old configuration) raises
:class:`~.base.SpeakerError`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import netns
from .base import Neighbor, Route, SpeakerConfig, SpeakerError, by_prefix, run_tool

BIRD = "bird"
BIRDC = "birdc"
STATIC = "originated"
STATIC6 = "originated6"  # the IPv6 prefixes' static protocol (a dual-stack lab)
FILTER = "originated_only"
ERROR_WAIT = (1, 2)  # seconds BIRD waits after a session error before trying again


def render_bird_conf(cfg: SpeakerConfig, routes: Mapping[str, Route]) -> str:
    """bird.conf for a site speaker that originates ``routes``."""
    t = cfg.timers
    lines = [
        f'log "{cfg.workdir / "bird.log"}" all;',
        f"router id {cfg.router_id};",
        "",
        "protocol device {",
        "}",
        "",
        "protocol bfd {",
        '  interface "*" {',
        f"    min rx interval {t.bfd_interval_ms} ms;",
        f"    min tx interval {t.bfd_interval_ms} ms;",
        f"    multiplier {t.bfd_multiplier};",
        "  };",
        "}",
        "",
        f"protocol static {STATIC} {{",
        "  ipv4;",
        *(f"  route {p} blackhole;" for p in routes if ":" not in p),
        "}",
        "",
    ]
    if cfg.ipv6:
        lines += [
            f"protocol static {STATIC6} {{",
            "  ipv6;",
            *(f"  route {p} blackhole;" for p in routes if ":" in p),
            "}",
            "",
        ]
    lines += _filter(cfg.asn, routes, FILTER, Neighbor("", 0, "", ""))
    for i, n in enumerate(cfg.neighbors, start=1):
        if n.shaped:
            lines += _filter(cfg.asn, routes, f"{FILTER}_{i}", n)
    for i, n in enumerate(cfg.neighbors, start=1):
        lines += [
            "",
            f"protocol bgp peer{i} {{",
            f'  description "{n.address} AS{n.asn} on {n.interface}";',
            f"  local {n.local_address} as {cfg.asn};",
            f"  neighbor {n.address} as {n.asn};",
            f"  hold time {t.hold};",
            f"  keepalive time {t.keepalive};",
            f"  connect retry time {t.connect_retry};",
            f"  connect delay time {t.connect_retry};",
            f"  error wait time {ERROR_WAIT[0]}, {ERROR_WAIT[1]};",
            f"  bfd {'on' if n.bfd else 'off'};",
            "  ipv4 {",
            "    import none;",
            f"    export filter {f'{FILTER}_{i}' if n.shaped else FILTER};",
            "  };",
        ]
        if cfg.ipv6:  # IPv6 unicast over the IPv4 session: the next hop must be said
            lines += [
                "  ipv6 {",
                "    import none;",
                f"    export filter {f'{FILTER}_{i}' if n.shaped else FILTER};",
                f"    next hop address {n.local_address6};",
                "  };",
            ]
        lines += ["}"]
    return "\n".join(lines) + "\n"


def _filter(asn: int, routes: Mapping[str, Route], name: str, n: Neighbor) -> list[str]:
    """The export filter ``name``, with what the session to ``n`` sends of its own."""
    lines = [
        "",
        f"filter {name}",
        "{",
        f'  if proto != "{STATIC}" && proto != "{STATIC6}" then reject;',
        "  bgp_origin = ORIGIN_IGP;",
    ]
    for p, r in routes.items():
        if r.prepend:
            prepends = " ".join([f"bgp_path.prepend({asn});"] * r.prepend)
            lines.append(f"  if net = {p} then {{ {prepends} }}")
    lines += [f"  bgp_path.prepend({asn});"] * n.prepend
    if n.med:
        lines += [f"  bgp_med = {n.med};"]
    for c in n.communities:
        a, v = c.split(":")
        lines += [f"  bgp_community.add(({a}, {v}));"]
    lines += ["  accept;", "}"]
    return lines


@dataclass
class Bird:
    """One ``bird`` in a site's namespace."""

    config: SpeakerConfig
    _routes: dict[str, Route] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.config.workdir / "bird.conf"

    @property
    def socket(self) -> Path:
        return self.config.workdir / "bird.ctl"

    def _write(self, routes: Mapping[str, Route]) -> None:
        self.conf.write_text(render_bird_conf(self.config, routes))

    def birdc(self, *command: str, timeout: float = 10.0) -> str:
        return run_tool(self.config.node, [BIRDC, "-s", str(self.socket), *command], timeout)

    def start(self, routes: Iterable[Route] = ()) -> list[int]:
        cfg = self.config
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        self._routes = dict(by_prefix(routes))
        self._write(self._routes)
        self.socket.unlink(missing_ok=True)
        argv = [BIRD, "-f", "-c", str(self.conf), "-s", str(self.socket)]
        argv += ["-P", str(cfg.workdir / "bird.pid")]
        pid = netns.spawn(cfg.namespace, argv, cfg.workdir / "bird.out")
        end = time.monotonic() + 10.0
        while True:
            try:
                self.birdc("show", "status", timeout=2.0)
                break
            except SpeakerError:
                if not netns.alive(pid):
                    out = (cfg.workdir / "bird.out").read_text(errors="replace")
                    raise SpeakerError(f"{cfg.node}: bird exited: {out.strip()}") from None
                if time.monotonic() > end:
                    netns.stop([pid])
                    raise SpeakerError(f"{cfg.node}: bird did not start in 10 s") from None
                time.sleep(0.05)
        return [pid]

    def assume(self, routes: Iterable[Route]) -> None:
        """What the running daemon announces now (a driver made afresh does not know)."""
        self._routes = dict(by_prefix(routes))

    def apply(self, routes: Iterable[Route]) -> None:
        want = dict(by_prefix(routes))
        if want == self._routes:
            return
        self._write(want)
        try:
            out = self.birdc("configure")
            if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
                raise SpeakerError(f"{self.config.node}: birdc configure: {out.strip()}")
        except SpeakerError:
            self._write(self._routes)  # keep the file equal to what BIRD runs
            raise
        self._routes = want

    def established(self) -> int:
        """BGP protocols in state Established (``birdc show protocols``)."""
        return sum(self.sessions().values())

    def sessions(self) -> dict[str, bool]:
        """Per neighbour address: is its session (protocol ``peerI``) established."""
        up = set()
        for line in self.birdc("show", "protocols").splitlines():
            cols = line.split()
            if len(cols) >= 6 and cols[1] == "BGP" and "Established" in cols[5:]:
                up.add(cols[0])
        return {n.address: f"peer{i}" in up for i, n in enumerate(self.config.neighbors, start=1)}
