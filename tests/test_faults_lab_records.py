"""The lab's fault records read two ways, on the three-site lab (no lab needed).

isp3 (AS65003) is isp1's and isp2's provider and SYD's transit; isp1 and isp2 peer and
sell transit to CHC and AKL, and each has a client; CHC and AKL share a backbone link.
The records must become the model's faults (links between ASes, a site's sessions, a
site cut off, a client unreachable) and the routers' sessions that settling must not
wait for; names given as the model names them must find the lab's links.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from anyedge.lab.build import LabError
from anyedge.lab.compare import predicted
from anyedge.lab.fault_model import ModelFaults, model_faults, records_for
from anyedge.lab.faults import excused
from anyedge.lab.plan import LabPlan, make_plan
from anyedge.model.files import load_world
from anyedge.model.world import World

LAB3 = Path(__file__).parent / "data" / "lab3.yaml"


@pytest.fixture(scope="module")
def lab3() -> World:
    return load_world(LAB3)


@pytest.fixture(scope="module")
def plan(lab3: World) -> LabPlan:
    return make_plan(lab3, "x")


def ends(f: ModelFaults) -> set[frozenset[str]]:
    return {frozenset(link.split("-")) for link in f.links}


def test_a_link_between_routers(plan: LabPlan) -> None:
    rec = [{"kind": "link", "a": "isp1", "b": "isp3"}]
    f = model_faults(plan, rec)
    assert ends(f) == {frozenset({"65001", "65003"})}
    assert not f.sites
    assert not f.clients
    dead, down = excused(rec, plan)
    assert down == {frozenset({"isp1", "isp3"})}
    assert dead == set()


def test_a_dead_router_and_a_partition(plan: LabPlan) -> None:
    rec = [{"kind": "daemon", "node": "isp1"}, {"kind": "partition", "site": "syd"}]
    f = model_faults(plan, rec)
    assert ends(f) == {
        frozenset({"65001", "65003"}),
        frozenset({"65001", "65002"}),
        frozenset({"CHC", "65001"}),
    }
    assert f.sites == ("SYD",)
    assert f.clients == frozenset({"c1"})
    dead, down = excused(rec, plan)
    assert dead == {"isp1"}
    assert frozenset({"isp3", "syd"}) in down  # a record written by hand says syd
    assert frozenset({"isp2", "isp1"}) in down
    assert frozenset({"isp2", "akl"}) not in down
    # the model cuts c1 off and SYD off; c2 still reaches AKL
    assert predicted(load_world(LAB3), faults=f) == {"c1": None, "c2": "AKL"}


def test_the_backbone_is_not_routing(plan: LabPlan) -> None:
    assert not model_faults(plan, [{"kind": "link", "a": "chc", "b": "akl"}])


def test_records_for_model_names(plan: LabPlan) -> None:
    got = records_for(plan, ["AS65003-65001", "CHC-65001"], ["akl"])
    assert [r["kind"] for r in got] == ["link", "link", "partition"]
    assert {r["a"] for r in got[:1]} | {r["b"] for r in got[:1]} == {"isp1", "isp3"}
    assert {got[1]["a"], got[1]["b"]} == {"isp1", "chc"}
    assert got[2] == {"kind": "partition", "site": "AKL"}
    # read back, they are the faults named
    f = model_faults(plan, got)
    assert ends(f) == {frozenset({"65001", "65003"}), frozenset({"CHC", "65001"})}
    assert f.sites == ("AKL",)


def test_records_that_name_nothing_in_the_lab(plan: LabPlan) -> None:
    for bad in ({"kind": "link", "a": "isp1", "b": "nowhere"}, {"kind": "meteor"}):
        with pytest.raises(LabError, match="the lab's state records"):
            model_faults(plan, [bad])
