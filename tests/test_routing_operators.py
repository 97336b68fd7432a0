"""Two operators on one prefix: sites of another operator originate anyedge's prefix from
their own ASN, in the topology, the routing engine, the twin's world and the lab's plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from anyedge.errors import InputError
from anyedge.lab.plan import lab_world, make_plan
from anyedge.model.files import load_world, save_world
from anyedge.routing import Announcement, Mode, Router

DATA = Path(__file__).parent / "data"

# One ISP (AS65001) buys from nobody and sells transit to both sites: two routes of
# the same rank and length reach it, and the lower neighbour ASN wins (then the site).
TWO_SITES = """\
asn: 64500
sites:
  - {code: CHC, city: Christchurch, country: NZ, lat: -43.5, lon: 172.6,
     sections: [{name: CHC01, servers: 1, cpu_per_server: 100}], transit: [65001]}
  - {code: AKL, city: Auckland, country: NZ, lat: -36.8, lon: 174.7,
     sections: [{name: AKL01, servers: 1, cpu_per_server: 100}], transit: [65001, 65002]}
prefixes: [{cidr: 198.51.100.0/24}]
%s
internet:
  relations: ["65001|65002|0"]
  metros:
    - {id: 1, name: Wellington, country: NZ, lat: -41.3, lon: 174.8, population: 10}
  eyeballs: [{asn: 65001, metro: 1, rps: 10}, {asn: 65002, metro: 1, rps: 10}]
"""


def world_of(tmp_path: Path, operators: str = ""):  # type: ignore[no-untyped-def]
    p = tmp_path / "t.yaml"
    p.write_text(TWO_SITES % operators)
    return load_world(p)


def test_a_site_of_another_operator_originates_from_its_asn(tmp_path: Path) -> None:
    w = world_of(tmp_path, "operators: [{name: cdn, asn: 64400, sites: [AKL]}]")
    assert w.network.origin_asn().tolist() == [64500, 64400]
    assert w.network.operator_names() == ("", "cdn")
    c = Router(w, Mode.AS).catchment()
    # AS65001 hears CHC (from AS64500) and AKL (from AS64400): the lower neighbour ASN
    assert c.eyeball_site.tolist() == [1, 1]
    assert c.eyeball_origin_asn.tolist() == [64400, 64400]
    assert c.eyeball_path(0) == [65001, 64400]
    assert [r["origin_asn"] for r in c.eyeball_rows()] == [64400, 64400]


def test_one_operator_breaks_the_tie_by_site(tmp_path: Path) -> None:
    c = Router(world_of(tmp_path), Mode.AS).catchment()
    assert c.eyeball_site.tolist()[0] == 0  # the same ASN: the lower site row
    assert c.eyeball_path(0) == [65001, 64500]


def test_catchments_carry_several_origin_asns(tmp_path: Path) -> None:
    w = world_of(tmp_path, "operators: [{name: cdn, asn: 64600, sites: [AKL]}]")
    r = Router(w, Mode.AS)
    c = r.catchment()
    assert sorted(set(c.eyeball_origin_asn.tolist())) == [64500, 64600]
    gone = r.catchment(Announcement.everywhere(2).withdraw(0))
    assert set(gone.eyeball_origin_asn.tolist()) == {64600}


def test_operators_survive_a_round_trip_and_the_lab_plan(tmp_path: Path) -> None:
    w = load_world(DATA / "lab3-operators.yaml")
    save_world(w, tmp_path / "copy")
    again = load_world(tmp_path / "copy")
    assert again.network.operators == w.network.operators
    assert lab_world(w).network.origin_asn().tolist() == [64500, 64400, 64400]
    plan = make_plan(w, "t")
    assert {n.site: n.asn for n in plan.sites} == {"CHC": 64500, "AKL": 64400, "SYD": 64400}


@pytest.mark.parametrize(
    ("operators", "message"),
    [
        ("operators: [{name: cdn, asn: 64400, sites: [XXX]}]", "unknown site XXX"),
        ("operators: [{name: cdn, asn: 64500, sites: [AKL]}]", "anyedge's own ASN"),
        ("operators: [{name: cdn, asn: 65002, sites: [AKL]}]", "also an Internet AS"),
        (
            "operators: [{name: a, asn: 64400, sites: [AKL]}, {name: b, asn: 64401, sites: [AKL]}]",
            "already belongs to a",
        ),
    ],
)
def test_bad_operators_are_refused_with_their_place(
    tmp_path: Path, operators: str, message: str
) -> None:
    with pytest.raises(InputError) as e:
        world_of(tmp_path, operators)
    text = e.value.render()
    assert message in text
    assert "operators[" in text
