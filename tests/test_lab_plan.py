"""The lab's plan and its model, without building anything (no root needed).

The plan must give every link its own /30, router ids that sort like the routing
engine's tie-break, return paths to every client, and the model of the lab must give
the known catchments of the three-site lab.  Also: random lab topologies are valid,
the Plurimog nftables script is what the shares say, FRR's policy is in its config,
and bad lab input is refused with its place.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from anyedge.adapters import nft
from anyedge.adapters.bgp.base import Neighbor, Route, SpeakerConfig
from anyedge.adapters.bgp.frr import RouterNeighbor, router_config, site_config
from anyedge.cli.main import main
from anyedge.lab import rtt
from anyedge.lab.compare import predicted
from anyedge.lab.generate import generate
from anyedge.lab.plan import client_names, lab_world, make_plan, router_id
from anyedge.model.files.topology import dump_yaml, load_world, parse_world, world_to_dict
from anyedge.model.geo import LatencyModel
from anyedge.model.lab import NodeKind

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def lab3():  # type: ignore[no-untyped-def]
    return load_world(DATA / "lab3.yaml")


def test_every_link_has_its_own_subnet_and_both_ends_match(lab3) -> None:  # type: ignore[no-untyped-def]
    plan = make_plan(lab3, "x")
    ends: dict[int, list[str]] = {}
    for n in plan.nodes:
        for p in n.ports:
            ends.setdefault(p.link, []).append(p.address)
            assert ipaddress.ip_interface(p.address).network.prefixlen == 30
            assert ipaddress.ip_address(p.peer_address) in ipaddress.ip_interface(p.address).network
    assert len(ends) == len(lab3.lab.links)
    nets = {str(ipaddress.ip_interface(a[0]).network) for a in ends.values()}
    assert len(nets) == len(ends)
    for pair in ends.values():
        assert len(pair) == 2
        assert ipaddress.ip_interface(pair[0]).network == ipaddress.ip_interface(pair[1]).network
    assert all(n.namespace.startswith("ae-x-") for n in plan.nodes)


def test_sites_hold_the_anycast_address_and_route_out(lab3) -> None:  # type: ignore[no-untyped-def]
    plan = make_plan(lab3)
    assert plan.service_address == "198.51.100.1"
    assert plan.test_address == "203.0.113.1"
    for n in plan.sites:
        assert n.anycast == ("198.51.100.1", "203.0.113.1")
        assert n.prefixes == ("198.51.100.0/24", "203.0.113.0/24")
        assert n.default_via == n.bgp_ports[0].peer_address
    assert [n.site for n in plan.sites] == ["CHC", "AKL", "SYD"]
    assert [p.peer for p in plan.node("chc").backbone] == ["akl"]
    assert plan.node("syd").backbone == ()
    assert plan.ports == (7001, 7002, 7003)


def test_a_site_with_two_transits_routes_out_through_either() -> None:
    """A default route through each transit, the first preferred: when its link goes
    down (and the kernel deletes the route with it) replies leave by the other."""
    world = parse_world(dump_yaml(generate(5, routers=20, sites=4, clients=6)))
    chc = make_plan(world).node("chc")
    first, second = (p.peer_address for p in chc.bgp_ports)
    assert chc.default_routes() == [
        ["default", "via", first],
        ["default", "via", second, "metric", "10"],
    ]


def test_each_client_network_is_originated_by_its_own_router(lab3) -> None:  # type: ignore[no-untyped-def]
    plan = make_plan(lab3)
    clients = {
        str(ipaddress.ip_interface(n.ports[0].address).network): n.ports[0].peer
        for n in plan.of_kind(NodeKind.CLIENT)
    }
    originated = {net: r.name for r in plan.of_kind(NodeKind.ROUTER) for net in r.networks}
    assert originated == clients  # every client's network, once, by the router it hangs off
    for r in plan.of_kind(NodeKind.ROUTER):
        connected = {str(ipaddress.ip_interface(p.address).network) for p in r.ports}
        assert set(r.networks) <= connected, r.name


@given(st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 4095)), min_size=2, max_size=20))
def test_router_ids_sort_like_the_model_tie_break(keys: list[tuple[int, int]]) -> None:
    ids = [int(ipaddress.IPv4Address(router_id(a, t))) for a, t in keys]
    for (a, t), i in zip(keys, ids, strict=True):
        for (b, u), j in zip(keys, ids, strict=True):
            assert ((a, t) < (b, u)) == (i < j)


def test_router_id_refuses_too_many_sites() -> None:
    with pytest.raises(ValueError, match="4096"):
        router_id(1, 4096)


def test_model_of_the_three_site_lab(lab3) -> None:  # type: ignore[no-untyped-def]
    model = lab_world(lab3)
    assert model.network.sites.code == ("CHC", "AKL", "SYD")
    assert sorted(model.internet.asn.tolist()) == [65001, 65002, 65003]
    assert client_names(lab3) == ["c1", "c2"]
    # customer routes first: each client's ISP has a site of its own
    assert predicted(lab3) == {"c1": "CHC", "c2": "AKL"}
    # without CHC, isp1 prefers its peer isp2 (AKL) to its provider isp3
    assert predicted(lab3, ("CHC",)) == {"c1": "AKL", "c2": "AKL"}
    assert predicted(lab3, ("AKL",)) == {"c1": "CHC", "c2": "CHC"}
    assert predicted(lab3, ("SYD",)) == {"c1": "CHC", "c2": "AKL"}
    assert predicted(lab3, ("CHC", "AKL")) == {"c1": "SYD", "c2": "SYD"}


@pytest.mark.parametrize("seed", range(5))
def test_generated_labs_are_valid_topologies(seed: int) -> None:
    routers = 10 + 2 * seed
    world = parse_world(dump_yaml(generate(seed, routers=routers, sites=4, clients=6)))
    kinds = [n.kind for n in world.lab.nodes]
    assert kinds.count(NodeKind.ROUTER) == routers
    assert kinds.count(NodeKind.SITE) == 4
    assert {str(n.speaker) for n in world.lab.nodes if n.kind is NodeKind.SITE} == {
        "frr",
        "bird",
        "gobgp",
        "exabgp",
    }
    plan = make_plan(world)
    assert len(set(plan.namespaces)) == len(plan.nodes)
    got = predicted(world)
    assert set(got) == set(client_names(world))
    assert any(v is not None for v in got.values())


@pytest.mark.parametrize("seed", range(4))
def test_generated_delays_price_the_routing_engines_paths(seed: int) -> None:
    """``generate(delays=True)``: every link takes the latency model's delay (an access
    link its access term); the twin's round trip for a client is the delays of the
    routing engine's path there and of the lab's static routes back, and names the site
    the routing engine predicts."""
    t = generate(seed, routers=12, sites=4, clients=20, operators=2, delays=True)
    model = LatencyModel()
    for link in t["lab"]["links"]:
        kinds = {t["lab"]["nodes"][e.split(":")[0]]["kind"] for e in link["endpoints"]}
        if "client" in kinds:
            assert link["delay_ms"] == model.access_ms / 2
        else:
            assert link["delay_ms"] >= 0
    world = parse_world(dump_yaml(t))
    plan = make_plan(world)
    cdn = tuple(t["operators"][0]["sites"])
    for withdrawn in (cdn, ()):
        want = rtt.predict(world, plan, withdrawn)
        assert {c: p.site for c, p in want.items()} == predicted(world, withdrawn)
        for c, p in want.items():
            assert p.there[0] == p.back[-1] == c
            assert p.there[-1] == p.back[0] == plan.site_node(str(p.site)).name
            hops = list(zip(p.there, p.there[1:], strict=False))
            hops += list(zip(p.back, p.back[1:], strict=False))
            delays = [
                next(x for x in plan.node(a).ports if x.peer == b).shape.delay_ms for a, b in hops
            ]
            assert p.rtt_ms == pytest.approx(sum(delays))
            assert p.crossings == len(hops)  # every link of a --delays lab is shaped
            assert p.rtt_ms >= model.access_ms  # the access link, there and back


def test_plurimog_script_divides_the_buckets() -> None:
    links = [nft.Backbone(0, "AKL", "eth2", "100.64.0.34"), nft.Backbone(1, "SYD", "eth3", "x")]
    text = nft.render(
        ["198.51.100.1"],
        ["eth1"],
        links,
        [nft.Share(7001, "AKL", 0.25), nft.Share(7001, "SYD", 0.1), nft.Share(7002, "AKL", 0)],
    )
    assert "th dport 7001" in text
    assert "0-2499 : 0x100, 2500-3499 : 0x101, 3500-9999 : 0x0" in text
    assert "th dport 7002" not in text  # a zero share forwards nothing
    assert 'iifname { "eth1" }' in text  # never what came over the backbone
    with pytest.raises(ValueError, match="add up"):
        nft.render(["a"], ["eth1"], links, [nft.Share(1, "AKL", 0.7), nft.Share(1, "SYD", 0.7)])
    with pytest.raises(ValueError, match="no backbone link to LAX"):
        nft.render(["a"], ["eth1"], links, [nft.Share(1, "LAX", 0.5)])
    cmds = nft.routing_commands(links)
    assert "rule add pref 100 fwmark 256 lookup 100" in cmds
    assert cmds[-1] == "rule del pref 0 lookup local"


def test_frr_configs_carry_the_policy(tmp_path: Path) -> None:
    nb = Neighbor("100.64.0.2", 64500, "100.64.0.1", "eth1")
    cfg = SpeakerConfig("r1", "ns", tmp_path, 65001, "10.0.16.0", (nb,))
    text = router_config(cfg, [RouterNeighbor(nb, "customer")])
    assert "bgp bestpath compare-routerid" in text
    assert "maximum-paths 1" in text
    assert "neighbor 100.64.0.2 route-map FROM-CUSTOMER in" in text
    assert "route-map TO-PEER permit 10\n match local-preference 300" in text
    assert "timers bgp 1 3" in text
    assert "neighbor 100.64.0.2 timers connect 1" in text
    site = site_config(cfg, {"198.51.100.0/24": Route("198.51.100.0/24", 2)})
    assert "network 198.51.100.0/24 route-map ORIGIN-P2" in site
    assert "set as-path prepend 65001 65001" in site
    assert "route-map NOTHING in" in site


def test_lab_up_needs_a_lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["lab", "up", "-t", str(DATA / "tiny.yaml"), "--dir", str(tmp_path / "l")])
    assert code == 2
    assert "tiny.yaml: lab: the topology has no lab" in capsys.readouterr().err
    assert not (tmp_path / "l").exists()


def test_lab_commands_need_a_running_lab(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["lab", "status", "--dir", str(tmp_path)])
    assert code == 3
    assert "no lab here" in capsys.readouterr().err


def test_lab_generate_writes_a_topology(tmp_path: Path) -> None:
    out = tmp_path / "g.yaml"
    assert main(["lab", "generate", "--seed", "7", "--routers", "15", "-o", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    assert sum(1 for n in data["lab"]["nodes"].values() if n["kind"] == "router") == 15
    world = load_world(out)
    assert len(make_plan(world).sites) == 4


def test_lab_names_cannot_prefix_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "a" would otherwise match every namespace of a lab named "a-b"
    code = main(
        ["lab", "up", "-t", str(DATA / "lab3.yaml"), "--name", "a-b", "--dir", str(tmp_path)]
    )
    assert code == 2
    assert "--name: a lab name is 1 to 8 lower-case letters or digits" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("cidr", "words"),
    [
        ("100.64.0.0/24", "overlaps 100.64.0.0/10, the lab's links"),
        ("203.0.113.0/25", "overlaps 203.0.113.0/24, the lab's test prefix"),
    ],
)
def test_prefixes_the_lab_uses_itself_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cidr: str, words: str
) -> None:
    topo = tmp_path / "lab.yaml"
    topo.write_text((DATA / "lab3.yaml").read_text().replace("198.51.100.0/24", cidr))
    code = main(["lab", "up", "-t", str(topo), "--dir", str(tmp_path / "d")])
    assert code == 2
    assert f"lab.yaml: lab: prefix {cidr} {words}" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_a_site_with_servers_plans_their_namespaces() -> None:
    world = load_world(DATA / "lab_edge.yaml")
    plan = make_plan(world, "x")
    chc = plan.site_node("CHC")
    assert chc.servers == 4
    assert chc.server_namespaces == tuple(f"ae-x-chc-s{i}" for i in range(4))
    assert set(chc.server_namespaces) <= set(plan.namespaces)  # lab down removes them
    assert plan.node("isp1").servers == 0
    # the topology keeps the field through the lab's copy of it
    again = parse_world(dump_yaml(world_to_dict(world, inline=True)), "copy")
    assert make_plan(again, "x").site_node("CHC").servers == 4


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("servers: 4}", "servers: 0}", "lab.nodes.chc.servers: Input should be greater than"),
        ("servers: 4}", "servers: 17}", "lab.nodes.chc.servers: Input should be less than"),
        ("asn: 65001}", "asn: 65001, servers: 2}", "lab.nodes.isp1.servers: only site nodes"),
        ("198.51.100.0/24", "192.0.2.0/25", "the servers' segment in a site"),
    ],
)
def test_bad_servers_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, words: str
) -> None:
    topo = tmp_path / "lab.yaml"
    topo.write_text((DATA / "lab_edge.yaml").read_text().replace(old, new))
    code = main(["lab", "up", "-t", str(topo), "--dir", str(tmp_path / "d")])
    assert code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


class _Summary:
    """A router whose ``summary()`` is given (the FRR driver's, in a running lab)."""

    def __init__(self, peers: dict[str, dict[str, object]]) -> None:
        self.peers = peers

    def summary(self) -> dict[str, dict[str, object]]:
        return self.peers


def test_settling_waits_for_sessions_that_have_only_just_come_up(lab3) -> None:  # type: ignore[no-untyped-def]
    """A session up for less than FRESH_MS has not sent its routes yet (FRR's coalesce
    time): the router is not settled, whatever its routes look like meanwhile."""
    from anyedge.lab.build import FRESH_MS, _unsettled

    plan = make_plan(lab3)
    node = plan.node("isp1")
    ports = node.bgp_ports
    up = {p.peer_address: {"state": "Established", "pfxRcd": 1, "peerUptimeMsec": 60_000}
          for p in ports}  # fmt: skip
    assert _unsettled(_Summary(up), node, {}, set()) == []  # type: ignore[arg-type]
    fresh = {**up, ports[0].peer_address: {**up[ports[0].peer_address], "peerUptimeMsec": 200}}
    why = _unsettled(_Summary(fresh), node, {}, set())  # type: ignore[arg-type]
    assert why == [(f"session isp1-{ports[0].peer} came up 200 ms ago", None)]
    ripe = {**up, ports[0].peer_address: {**up[ports[0].peer_address], "peerUptimeMsec": FRESH_MS}}
    assert _unsettled(_Summary(ripe), node, {}, set()) == []  # type: ignore[arg-type]
