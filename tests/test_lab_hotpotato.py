"""Hot potato for real: an AS with routers in three cities, OSPF and iBGP in FRR, and the
routing engine's metro mode predicting every client.

``tests/data/lab-hotpotato.yaml``: AS65010 has routers in Sydney, Los Angeles and
London (OSPF costs = km between them, iBGP full mesh with next-hop-self), SYD hangs off
the Sydney router and LHR off the London one, both one AS hop away; AS65020 in Los
Angeles buys transit from AS65010 there.  One route per AS (``Mode.AS``) would send all
four clients to one site; hot potato sends c1 (Sydney) to SYD and the others to LHR.
The lab's routers must decide so by IGP metric, and ``lab compare`` (metro mode) must
agree client for client, with each site withdrawn in turn.  The metro lab's topology
checks run without a lab.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from anyedge.adapters.bgp.base import Route
from anyedge.cli.main import main
from anyedge.errors import InputError
from anyedge.lab.build import LabError
from anyedge.lab.compare import predicted
from anyedge.lab.fault_model import ModelFaults, check_modelled
from anyedge.lab.plan import make_plan
from anyedge.model.files.topology import parse_world
from anyedge.routing import Mode
from lab_support import DATA, RunningLab, running_lab

PREFIX = "198.51.100.0/24"
TOPOLOGY = DATA / "lab-hotpotato.yaml"


@pytest.fixture(scope="module")
def lab() -> RunningLab:  # type: ignore[misc]
    with running_lab(TOPOLOGY, prefix="hp") as lab:
        yield lab


def best_path(lab: RunningLab, router: str) -> dict[str, Any]:
    """``router``'s best path to the anycast prefix (``show bgp … json``)."""
    argv = ["vtysh", "--vty_socket", str(lab.directory / "nodes" / router)]
    out = subprocess.run(
        [*argv, "-c", f"show bgp ipv4 unicast {PREFIX} json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    paths = json.loads(out)["paths"]
    return next(p for p in paths if p.get("bestpath", {}).get("overall"))


def test_hot_potato_decides_clients_differently_from_one_route_per_as() -> None:
    world = parse_world(TOPOLOGY.read_text(), TOPOLOGY)
    metro = predicted(world)
    assert metro == {"c1": "SYD", "c2": "LHR", "c3": "LHR", "c4": "LHR"}
    one_route = predicted(world, mode=Mode.AS)
    assert len(set(one_route.values())) == 1  # every client to AS65010's one choice
    assert {c for c in metro if metro[c] != one_route[c]}


def test_two_transits_meeting_in_two_metros_hand_over_where_nearest() -> None:
    path = DATA.parent.parent / "docs" / "examples" / "hotpotato-two-transits.yaml"
    world = parse_world(path.read_text(), path)
    assert predicted(world) == {
        **{"c1": "SYD", "c2": "LHR", "c3": "LHR", "c4": "NRT"},
        **{"c5": "JFK", "c6": "JFK", "c7": "JFK"},
    }
    assert set(predicted(world, mode=Mode.AS).values()) == {"SYD", "NRT"}
    routes = {"SYD": [], "LHR": [], "NRT": [Route(PREFIX)], "JFK": [Route(PREFIX)]}
    alone = predicted(world, routes=routes)  # AS65010 hands over in LA and London
    assert alone == {**dict.fromkeys(["c1", "c2", "c3", "c5", "c6", "c7"], "JFK"), "c4": "NRT"}


def test_faults_the_model_can_say_and_those_it_cannot() -> None:
    world = parse_world(TOPOLOGY.read_text(), TOPOLOGY)
    cut = predicted(world, faults=ModelFaults(links=("65010-65020",)))
    assert cut == {"c1": "SYD", "c2": "LHR", "c3": "LHR", "c4": None}
    assert set(predicted(world, faults=ModelFaults(sites=("SYD",))).values()) == {"LHR"}
    plan = make_plan(world, "hp")
    fine = [
        {"kind": "link", "a": "t-lax", "b": "a-lax"},  # AS65010 meets AS65020 once
        {"kind": "daemon", "node": "a-lax"},
        {"kind": "partition", "site": "SYD"},
        {"kind": "link", "a": "t-syd", "b": "syd"},
    ]
    check_modelled(plan, fine)
    with pytest.raises(LabError) as e:
        check_modelled(
            plan,
            [
                *fine,
                {"kind": "daemon", "node": "t-lax"},
                {"kind": "link", "a": "t-lax", "b": "t-lon"},
            ],
        )
    assert "t-lax's daemon (AS65010 has several routers)" in str(e.value)
    assert "link t-lax-t-lon (inside AS65010)" in str(e.value)
    assert "a-lax" not in str(e.value)


@pytest.mark.lab
@pytest.mark.slow
def test_routers_leave_by_the_nearest_exit_by_igp_metric(lab: RunningLab) -> None:
    loop = {n.name: n.loopback for n in lab.plan.nodes}
    lax = best_path(lab, "t-lax")  # London 8,755 km, Sydney 12,074 km
    assert lax["peer"]["peerId"] == loop["t-lon"]
    assert lax["bestpath"]["selectionReason"] == "IGP Metric"
    assert lax["nexthops"][0]["metric"] == 8755  # the OSPF cost of t-lax - t-lon
    assert best_path(lab, "t-syd")["peer"]["type"] == "external"  # its own site's route
    assert best_path(lab, "t-lon")["peer"]["type"] == "external"


@pytest.mark.lab
@pytest.mark.slow
def test_compare_in_metro_mode_agrees_client_for_client(
    lab: RunningLab, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["lab", "compare", "--dir", str(lab.directory), "--flows", "5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, [r for r in out["rows"] if not r["agree"]]
    got = {(r["scenario"], r["client"]): r["lab"] for r in out["rows"]}
    assert len(got) == 12  # 4 clients: baseline, without SYD, without LHR
    assert got[("baseline", "c1")] == "SYD"
    assert got[("baseline", "c2")] == "LHR"
    assert got[("baseline", "c4")] == "LHR"  # AS65020 hands over in Los Angeles
    assert got[("without LHR", "c3")] == "SYD"


def _bad(edit: str, old: str) -> str:
    text = TOPOLOGY.read_text()
    assert old in text
    with pytest.raises(InputError) as e:
        parse_world(text.replace(old, edit), "hp.yaml")
    return str(e.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "a-lax: {kind: router, asn: 65020, metro: los-angeles}",
            "a-lax: {kind: router, asn: 65020}",
            "lab.nodes.a-lax: in a lab whose routers stand in metros, every router needs a metro",
        ),
        (
            "metro: london}",
            "metro: paris}",
            "lab.nodes.t-lon.metro: unknown metro 'paris'",
        ),
        (
            "t-lon: {kind: router, asn: 65010, metro: london}",
            "t-lon: {kind: router, asn: 65010, metro: sydney}",
            "AS65010 already has t-syd in sydney: one router per AS and metro",
        ),
        (
            "    - {endpoints: [t-syd, t-lon]}\n",
            "",
            "the routers of AS65010 are joined pairwise by internal links (relation none): "
            "t-syd and t-lon are not",
        ),
        (
            "- {endpoints: [t-lax, t-lon]}",
            "- {endpoints: [t-lax, t-lon], relation: peer}",
            "t-lax and t-lon are routers of one AS: an internal link, relation none",
        ),
        (
            "- {endpoints: [t-lax, a-lax], relation: provider-customer}",
            "- {endpoints: [t-lon, a-lax], relation: provider-customer}",
            "t-lon (london) and a-lax (los-angeles) stand in different metros",
        ),
        (
            "a-lax: {kind: router, asn: 65020, metro: los-angeles}",
            "a-lax: {kind: router, asn: 65020, metro: los-angeles}\n"
            "    a-lon: {kind: router, asn: 65020, metro: london}",
            "AS65010 and AS65020 meet in los-angeles but not in london",
        ),
        (
            "  - {cidr: 198.51.100.0/24, sites: all}\n",
            "  - {cidr: 198.51.100.0/24, sites: all}\n  - {cidr: 2001:db8:100::/48, sites: all}\n",
            "lab.metros: sites LHR, SYD announce IPv6, and a lab whose routers stand in metros "
            "is IPv4 only",
        ),
    ],
)
def test_metro_lab_errors_name_their_place(old: str, new: str, message: str) -> None:
    err = _bad(new, old)
    assert message in err
    assert "hp.yaml" in err


def _raise(text: str) -> str:
    with pytest.raises(InputError) as e:
        parse_world(text, "hp.yaml")
    return str(e.value)


def test_one_router_per_as_without_metros() -> None:
    text = (DATA / "lab3.yaml").read_text()
    text = text.replace("isp3: {kind: router, asn: 65003}", "isp3: {kind: router, asn: 65001}")
    err = _raise(text)
    assert "lab.nodes.isp3.asn: AS65001 is already isp1" in err
    assert "give the routers a metro from lab.metros" in err
