"""Every kind of site speaker against a real FRR router, one veth link between them.

Lab tests (class :class:`TestSpeakerAgainstRouter`, marker ``lab``): per speaker kind two
fresh namespaces ``aet-<hex>-r`` (FRR router, AS 65001) and ``aet-<hex>-s`` (the site,
AS 64500) on 100.64.0.0/30; the site originates 198.51.100.0/24 and the router
originates 203.0.113.0/24 towards it, which the site must not learn.  Checks: session,
kernel route on the router via the site, AS path, origin, no MED, the site's router id,
prepends, withdraw, re-announce.  The time from ``apply([])`` until the route left the
router's kernel table is printed (``pytest -s`` shows it).

The render tests at the end need no root: the configuration each driver writes.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from anyedge.adapters import netns
from anyedge.adapters.bgp.base import Neighbor, Route, SiteSpeaker, SpeakerConfig, SpeakerError
from anyedge.adapters.bgp.bird import Bird, render_bird_conf
from anyedge.adapters.bgp.exabgp import ExaBgp, announce_line, exabgp_env, render_exabgp_conf
from anyedge.adapters.bgp.exabgp_pipe import State
from anyedge.adapters.bgp.frr import Frr, RouterNeighbor
from anyedge.adapters.bgp.gobgp import GoBgp, render_gobgp_toml, rib_add_args
from lab_support import lab_directory

PREFIX = "198.51.100.0/24"  # originated by the site
OTHER = "203.0.113.0/24"  # originated by the router: the site must not learn it
ROUTER_AS, SITE_AS = 65001, 64500
ROUTER_IP, SITE_IP = "100.64.0.1", "100.64.0.2"
ROUTER_ID, SITE_ID = "10.0.1.0", "10.0.0.7"
KINDS: dict[str, type[Bird | ExaBgp | Frr | GoBgp]] = {
    "frr": Frr,
    "bird": Bird,
    "gobgp": GoBgp,
    "exabgp": ExaBgp,
}


def site_config(workdir: Path, namespace: str = "unused") -> SpeakerConfig:
    return SpeakerConfig(
        node="s",
        namespace=namespace,
        workdir=workdir,
        asn=SITE_AS,
        router_id=SITE_ID,
        neighbors=(Neighbor(ROUTER_IP, ROUTER_AS, SITE_IP, "eth1"),),
    )


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until it holds; the seconds it took.  Errors count as "not yet"."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except (SpeakerError, netns.NetnsError, ValueError):
            pass  # e.g. a question racing a daemon that just started
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


@dataclass
class Lab:
    kind: str
    router: Frr
    site: SiteSpeaker
    router_ns: str
    site_ns: str
    site_pids: list[int]

    def router_json(self, command: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.router.show(command) or "{}")
        return data

    def kernel_route(self, namespace: str | None = None, prefix: str = PREFIX) -> str:
        """The main-table route for ``prefix`` in a namespace (the router's by default)."""
        return netns.run(namespace or self.router_ns, ["ip", "route", "show", prefix]).strip()

    def best_path(self) -> dict[str, Any] | None:
        paths = self.router_json(f"show bgp ipv4 unicast {PREFIX} json").get("paths", [])
        best = [p for p in paths if p.get("bestpath")]
        return best[0] if best else None

    def as_path(self) -> str | None:
        best = self.best_path()
        return None if best is None else str(best["aspath"]["string"])

    def routes_from_site(self) -> set[str]:
        out = self.router_json(f"show ip bgp neighbors {SITE_IP} routes json")
        return set(out.get("routes", {}))

    def site_learned(self) -> set[str]:
        """Prefixes in the site speaker's own RIB other than those it originates."""
        s = self.site
        if isinstance(s, Frr):
            found = set(json.loads(s.show("show bgp ipv4 unicast json")).get("routes", {}))
        elif isinstance(s, Bird):
            found = {line.split()[0] for line in s.birdc("show", "route").splitlines()[1:]}
            found = {p for p in found if "/" in p}
        elif isinstance(s, GoBgp):
            found = set(json.loads(s.gobgp("global", "rib", "-a", "ipv4", "-j") or "{}"))
        else:  # ExaBGP keeps no received routes at all (no "receive" section)
            found = set()
        return found - {PREFIX}


@pytest.fixture(params=list(KINDS))
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    kind: str = request.param
    # FRR's daemons run as ``frr``: a directory of their own under /tmp, not pytest's
    # (0700, and set back to 0700 whenever another pytest session starts)
    tmp_path = lab_directory()
    tag = secrets.token_hex(3)
    r_ns, s_ns = f"aet-{tag}-r", f"aet-{tag}-s"
    made: list[str] = []
    pids: list[int] = []
    try:
        for ns in (r_ns, s_ns):
            netns.add(ns)
            made.append(ns)
        netns.veth(r_ns, "eth1", s_ns, "eth1")
        netns.batch(r_ns, [f"addr add {ROUTER_IP}/30 dev eth1", f"route add blackhole {OTHER}"])
        netns.batch(s_ns, [f"addr add {SITE_IP}/30 dev eth1", "addr add 198.51.100.1/32 dev lo"])
        router = Frr(
            SpeakerConfig("r", r_ns, tmp_path / "r", ROUTER_AS, ROUTER_ID, ()),
            (RouterNeighbor(Neighbor(SITE_IP, SITE_AS, ROUTER_IP, "eth1"), "customer"),),
        )
        pids += router.start()
        wait_for(
            lambda: bool(router.show("show bgp summary")),
            5,
            "router's bgpd answers on its vty",
        )
        router.vtysh(
            "configure terminal",
            f"router bgp {ROUTER_AS}",
            "address-family ipv4 unicast",
            f"network {OTHER}",
        )
        site = KINDS[kind](site_config(tmp_path / "s", s_ns))
        site_pids = site.start([Route(PREFIX)])
        pids += site_pids
        yield Lab(kind, router, site, r_ns, s_ns, site_pids)
    finally:
        netns.stop(pids)
        for ns in made:
            netns.remove(ns)
        shutil.rmtree(tmp_path, ignore_errors=True)


class TestSpeakerAgainstRouter:
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.lab]

    def test_session_and_announcement(self, lab: Lab) -> None:
        wait_for(lambda: lab.router.established() == 1, 10, "router: session established")
        wait_for(lambda: PREFIX in lab.kernel_route(), 10, "router: kernel route installed")
        assert f"via {SITE_IP} dev eth1" in lab.kernel_route()
        best = lab.best_path()
        assert best is not None
        assert best["aspath"]["string"] == str(SITE_AS)
        assert best["origin"] == "IGP"
        if lab.kind == "frr":  # FRR's ``network`` statement always attaches MED 0
            assert best.get("metric", 0) == 0
        else:
            assert "metric" not in best  # no MED
        assert best["peer"]["routerId"] == SITE_ID
        nb = lab.router_json(f"show ip bgp neighbors {SITE_IP} json")[SITE_IP]
        assert nb["remoteRouterId"] == SITE_ID
        wait_for(lambda: lab.site.established() == 1, 5, f"{lab.kind}: established() == 1")

    def test_learns_and_reexports_nothing(self, lab: Lab) -> None:
        def offered() -> bool:
            out = lab.router_json(f"show ip bgp neighbors {SITE_IP} advertised-routes json")
            return OTHER in out.get("advertisedRoutes", {})

        wait_for(offered, 10, f"router offers {OTHER} to the site")
        wait_for(lambda: PREFIX in lab.kernel_route(), 10, "router: kernel route installed")
        time.sleep(0.5)  # let an update the site should ignore arrive
        assert lab.site_learned() == set()
        assert lab.routes_from_site() == {PREFIX}
        for prefix in (PREFIX, OTHER):  # the site's kernel table is left alone
            assert lab.kernel_route(lab.site_ns, prefix) == ""

    def test_prepend_withdraw_reannounce(self, lab: Lab) -> None:
        wait_for(lambda: lab.as_path() == "64500", 10, "router: AS path 64500")
        lab.site.apply([Route(PREFIX, prepend=2)])
        wait_for(lambda: lab.as_path() == "64500 64500 64500", 5, "router: prepended path")
        lab.site.apply([Route(PREFIX, prepend=2)])  # idempotent
        assert lab.as_path() == "64500 64500 64500"
        wait_for(lambda: PREFIX in lab.kernel_route(), 5, "router: route still installed")

        lab.site.apply([])
        gone = wait_for(lambda: lab.kernel_route() == "", 5, "router: kernel route removed")
        print(f"\n[{lab.kind}] apply([]) -> route gone from the router's kernel: {gone:.3f} s")
        assert lab.best_path() is None

        lab.site.apply([Route(PREFIX)])
        back = wait_for(lambda: PREFIX in lab.kernel_route(), 5, "router: route back")
        print(f"[{lab.kind}] re-announce -> route back in the router's kernel: {back:.3f} s")
        wait_for(lambda: lab.as_path() == "64500", 5, "router: AS path 64500 again")
        assert lab.site.established() == 1

    def test_session_comes_back_after_a_reset(self, lab: Lab) -> None:
        def connections() -> int:
            nb = lab.router_json(f"show ip bgp neighbors {SITE_IP} json")[SITE_IP]
            return int(nb["connectionsEstablished"])

        wait_for(lambda: PREFIX in lab.kernel_route(), 10, "router: kernel route installed")
        assert connections() == 1
        lab.router.vtysh("clear ip bgp *")
        back = wait_for(lambda: connections() == 2, 10, "router: session re-established")
        wait_for(lambda: PREFIX in lab.kernel_route(), 5, "router: route back after reset")
        print(f"\n[{lab.kind}] session back after the router's reset: {back:.3f} s")
        wait_for(lambda: lab.site.established() == 1, 5, f"{lab.kind}: established() == 1")

    def test_a_dead_speaker_raises_instead_of_hanging(self, lab: Lab) -> None:
        wait_for(lambda: lab.site.established() == 1, 10, f"{lab.kind}: established() == 1")
        netns.stop(lab.site_pids)
        start = time.monotonic()
        with pytest.raises(SpeakerError):
            lab.site.apply([Route(PREFIX, prepend=1)])
        took = time.monotonic() - start
        print(f"\n[{lab.kind}] apply() to a dead speaker raised after {took:.3f} s")
        assert took < 15
        with pytest.raises(SpeakerError):
            lab.site.established()  # a daemon that is gone cannot be asked


# -- rendering, no root needed ------------------------------------------------------------


def _cfg(tmp_path: Path) -> SpeakerConfig:
    return site_config(tmp_path / "s")


def test_bird_conf_has_router_id_timers_and_prepends(tmp_path: Path) -> None:
    routes = {PREFIX: Route(PREFIX, prepend=2), OTHER: Route(OTHER)}
    text = render_bird_conf(_cfg(tmp_path), routes)
    assert f"router id {SITE_ID};" in text
    assert f"local {SITE_IP} as {SITE_AS};" in text
    assert f"neighbor {ROUTER_IP} as {ROUTER_AS};" in text
    for line in ("hold time 3;", "keepalive time 1;", "connect retry time 1;"):
        assert line in text
    assert "import none;" in text
    assert "protocol kernel" not in text
    assert f"route {PREFIX} blackhole;" in text
    assert f"route {OTHER} blackhole;" in text
    assert "bgp_origin = ORIGIN_IGP;" in text
    prepend_lines = [line for line in text.splitlines() if "bgp_path.prepend" in line]
    assert len(prepend_lines) == 1  # only the prefix with prepends gets a rule
    assert PREFIX in prepend_lines[0]
    assert prepend_lines[0].count(f"bgp_path.prepend({SITE_AS});") == 2


def test_gobgp_toml_has_router_id_timers_and_prepends(tmp_path: Path) -> None:
    import tomllib

    conf = tomllib.loads(render_gobgp_toml(_cfg(tmp_path)))
    g = conf["global"]
    assert g["config"] == {
        "as": SITE_AS,
        "router-id": SITE_ID,
        "port": 179,
        "local-address-list": [SITE_IP],
    }
    policy = g["apply-policy"]["config"]
    assert policy["default-import-policy"] == policy["default-export-policy"] == "reject-route"
    [only] = conf["policy-definitions"]
    assert policy["import-policy-list"] == policy["export-policy-list"] == [only["name"]]
    [stmt] = only["statements"]  # accept the paths added through the API, nothing else
    assert stmt["conditions"]["bgp-conditions"] == {"route-type": "local"}
    assert stmt["actions"]["route-disposition"] == "accept-route"
    [nb] = conf["neighbors"]
    assert nb["config"]["neighbor-address"] == ROUTER_IP
    assert nb["config"]["peer-as"] == ROUTER_AS
    assert nb["timers"]["config"] == {
        "hold-time": 3,
        "keepalive-interval": 1,
        "connect-retry": 1,
        "minimum-advertisement-interval": 0,
    }
    assert nb["transport"]["config"]["local-address"] == SITE_IP
    assert "aspath" not in rib_add_args(SITE_AS, Route(PREFIX))
    args = rib_add_args(SITE_AS, Route(PREFIX, prepend=2))
    assert args[args.index("aspath") + 1] == "64500,64500"
    assert args[args.index("origin") + 1] == "igp"


def test_exabgp_conf_has_router_id_timers_and_prepends(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    text = render_exabgp_conf(cfg, tmp_path / "ctl.fifo", tmp_path / "st.json", "/usr/bin/python3")
    assert f"router-id {SITE_ID};" in text
    assert f"local-address {SITE_IP};" in text
    assert f"local-as {SITE_AS};" in text
    assert f"peer-as {ROUTER_AS};" in text
    assert "hold-time 3;" in text
    assert "processes [ ctl ];" in text
    pipe = f"/usr/bin/python3 -m anyedge.adapters.bgp.exabgp_pipe {tmp_path / 'ctl.fifo'}"
    assert f"run {pipe} {tmp_path / 'st.json'};" in text
    assert announce_line(SITE_AS, Route(PREFIX, prepend=2)) == (
        f"announce route {PREFIX} next-hop self origin igp as-path [ 64500 64500 64500 ]"
    )
    assert announce_line(SITE_AS, Route(PREFIX)).endswith("as-path [ 64500 ]")
    env = exabgp_env(cfg)
    assert env["exabgp_tcp_bind"] == SITE_IP
    assert env["exabgp_daemon_user"] == "root"
    assert env["exabgp_api_cli"] == "false"


def test_exabgp_pipe_state_follows_exabgp(tmp_path: Path) -> None:
    st = State(tmp_path / "st.json")
    for line in ("neighbor 100.64.0.1 connected", "neighbor 100.64.0.1 up", "done", "done"):
        st.feed(line)
    st.feed("error")
    st.save()
    data = json.loads((tmp_path / "st.json").read_text())
    assert data["up"] == ["100.64.0.1"]
    assert (data["done"], data["error"], data["running"]) == (2, 1, True)
    st.feed("neighbor 100.64.0.1 down - peer reset")
    assert st.data["up"] == []
