"""MEDs and communities per session, without root: what the routing engine decides and
what each speaker's configuration says.  The real daemons are in test_lab_policy.py.

The engine's rules: among routes an AS holds from anyedge's sessions, equal by rank,
path length and neighbour ASN, the lowest MED wins (before the site tie-break), and
the MED goes no further; a session's communities bind only the AS it is sent to —
NO_EXPORT keeps the route there, "no-peers" and "no-providers" keep it from that AS's
peers or providers — and the full propagation, the incremental update and the
hot-potato exits all follow them.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np

from anyedge.adapters.bgp.base import Neighbor, Route, SpeakerConfig
from anyedge.adapters.bgp.bird import render_bird_conf
from anyedge.adapters.bgp.exabgp import announce_lines
from anyedge.adapters.bgp.frr import RouterNeighbor, router_config, site_config
from anyedge.adapters.bgp.gobgp import render_gobgp_toml
from anyedge.lab.plan import lab_world, make_plan
from anyedge.model.files.topology import load_world, save_world
from anyedge.routing import Announcement, Mode, Router, Seeds, propagate, update
from anyedge.routing.graph import RoutingGraph

DATA = Path(__file__).parent / "data"
PREFIX = "198.51.100.0/24"


def model():  # type: ignore[no-untyped-def]
    return lab_world(load_world(DATA / "lab3-policy.yaml"))


def test_sessions_carry_meds_and_community_bits(tmp_path: Path) -> None:
    m = model()
    ses, codes = m.network.sessions, m.network.sites.code
    got = {
        (codes[int(s)], int(a)): (int(d), int(b))
        for s, a, d, b in zip(ses.site, ses.asn, ses.med, ses.block, strict=True)
    }
    assert got == {
        ("CHC", 65001): (0, 2),  # no-peers
        ("CHC", 65003): (50, 0),
        ("AKL", 65002): (0, 7),  # NO_EXPORT
        ("SYD", 65003): (10, 0),
    }
    again = load_world(save_world(m, tmp_path / "w"))
    assert np.array_equal(again.network.sessions.med, ses.med)
    assert np.array_equal(again.network.sessions.block, ses.block)


def test_the_engine_follows_meds_and_communities_in_every_mode() -> None:
    m = model()
    sites = list(m.network.sites.code)
    for mode in (Mode.AS, Mode.METRO):
        r = Router(m, mode)
        for gone in ((), ("CHC",), ("AKL",)):
            ann = Announcement.everywhere(len(sites)).withdraw(*[sites.index(s) for s in gone])
            c = r.catchment(ann)
            reach = {
                int(m.internet.asn[m.internet.eyeballs.as_[e]]): sites[s] if s >= 0 else None
                for e, s in enumerate(c.eyeball_site.tolist())
            }
            want = {
                (): {65001: "CHC", 65002: "AKL", 65003: "SYD"},
                ("CHC",): {65001: "SYD", 65002: "AKL", 65003: "SYD"},
                ("AKL",): {65001: "CHC", 65002: "SYD", 65003: "SYD"},
            }[gone]
            assert reach == want, (mode, gone)


def test_the_incremental_update_equals_a_fresh_propagation() -> None:
    m = model()
    g = RoutingGraph.from_internet(m.internet)
    everywhere = Announcement.everywhere(len(m.network.sites))
    before = Seeds.of_world(m, everywhere)
    state = propagate(g, before)
    for site in range(len(m.network.sites)):
        after = Seeds.of_world(m, everywhere.withdraw(site))
        got, fresh = update(g, state, before, after), propagate(g, after)
        for name in ("key", "origin", "via", "block"):
            assert np.array_equal(getattr(got, name), getattr(fresh, name)), (site, name)
    # a community changed on a seed alone (same key) is an update too
    loose = replace(before, block=np.zeros_like(before.block))
    got, fresh = update(g, state, before, loose), propagate(g, loose)
    assert np.array_equal(got.origin, fresh.origin)
    assert np.array_equal(got.key, fresh.key)


def cfg(tmp_path: Path) -> SpeakerConfig:
    return SpeakerConfig(
        node="s",
        namespace="unused",
        workdir=tmp_path,
        asn=64500,
        router_id="10.0.0.7",
        neighbors=(
            Neighbor("100.64.0.1", 65001, "100.64.0.2", "eth1"),
            Neighbor(
                "100.64.0.5",
                65003,
                "100.64.0.6",
                "eth2",
                med=50,
                communities=("65003:990", "65535:65281"),
            ),
        ),
    )


def test_the_plan_puts_communities_on_the_wire() -> None:
    plan = make_plan(load_world(DATA / "lab3-policy.yaml"))
    ports = {p.peer: p for p in plan.node("chc").bgp_ports}
    assert (ports["isp1"].med, ports["isp1"].communities) == (0, ("65001:990",))
    assert (ports["isp3"].med, ports["isp3"].communities) == (50, ())
    [akl] = plan.node("akl").bgp_ports
    assert akl.communities == ("65535:65281",)


def test_speakers_send_the_session_s_med_and_communities(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    frr = site_config(c, {PREFIX: Route(PREFIX)})
    assert " set metric 50\n set community 65003:990 65535:65281 additive\n" in frr
    assert "  neighbor 100.64.0.5 route-map SESSION-2 out" in frr
    bird = render_bird_conf(c, {PREFIX: Route(PREFIX)}).split("\nfilter originated_only_2\n")[1]
    assert "  bgp_med = 50;" in bird
    assert "  bgp_community.add((65003, 990));" in bird
    assert "  bgp_community.add((65535, 65281));" in bird
    toml = tomllib.loads(render_gobgp_toml(c))
    actions = toml["policy-definitions"][0]["statements"][0]["actions"]["bgp-actions"]
    assert actions["set-med"] == "50"
    assert actions["set-community"] == {
        "options": "add",
        "set-community-method": {"communities-list": ["65003:990", "65535:65281"]},
    }
    lines = announce_lines(c, Route(PREFIX))
    assert lines[1].endswith("as-path [ 64500 ] med 50 community [ 65003:990 65535:65281 ]")
    assert "med" not in lines[0]


def test_routers_honour_their_action_communities(tmp_path: Path) -> None:
    c = replace(cfg(tmp_path), asn=65001, neighbors=())
    text = router_config(
        c, [RouterNeighbor(Neighbor("100.64.0.2", 65002, "100.64.0.1", "eth1"), "peer")]
    )
    assert "bgp community-list standard NO-PEERS permit 65001:990\n" in text
    assert "route-map TO-PEER deny 5\n match community NO-PEERS\n" in text
    assert "bgp community-list standard NO-PROVIDERS permit 65001:991\n" in text
    assert "route-map TO-PROVIDER deny 5\n match community NO-PROVIDERS\n" in text
