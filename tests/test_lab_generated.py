"""The model meets reality on generated Internets of 10 to 20 routers, whole and broken.

For three random lab topologies of 10, 15 and 20 routers
(:func:`anyedge.lab.generate.generate`: a tier-1 clique, transit and access routers,
sites with mixed speakers, clients behind access routers), the routing engine's
catchments must agree with real BGP client for client: with every site announcing, and
with each site withdrawn in turn whose withdrawal the model says moves some client (8
of the 12; withdrawing one of the others costs two BGP settlings and shows little).

Then, in the same running lab, one fault made with ``anyedge lab fault`` — a different
kind in each lab, chosen with the model as the one of its kind that moves the most
clients to another site: a transit router's ``bgpd`` killed (``kill -9``), a site
partitioned (its BGP dropped by nftables, its sessions ended at their hold timer), a
site's session with one of its two transits lost (the link down) — BGP settles, and the
model under the recorded fault agrees with the lab client for client, some client
having moved to another site.  ``anyedge lab heal`` then brings the lab back: every
client is answered again on every flow by the site it had before the fault.  (With
:mod:`test_lab_model_faults`'s two, five generated Internets agree under faults.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from anyedge.cli.main import main
from anyedge.lab.build import LabState
from anyedge.lab.compare import Row, compare, predicted
from anyedge.lab.fault_model import model_faults
from anyedge.lab.generate import generate
from anyedge.model.files.topology import dump_yaml
from anyedge.model.lab import NodeKind
from lab_support import RunningLab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

FLOWS = 5
CLIENTS = 6


def catchment(rows: list[Row], scenario: str = "baseline") -> dict[str, str | None]:
    return {r.client: r.lab for r in rows if r.scenario == scenario}


def disagreements(rows: list[Row]) -> list[dict[str, object]]:
    return [r.to_dict() for r in rows if not r.agree]


def worst_fault(
    lab: RunningLab, kind: str, base: dict[str, str | None]
) -> tuple[list[str], dict[str, Any], dict[str, str | None]]:
    """The fault of ``kind`` that moves the most clients to another site in the model:
    its ``anyedge lab fault`` arguments, its record, and the catchments it gives."""
    plan = lab.plan
    if kind == "bgpd":  # a transit: a router no client hangs off
        routers = plan.of_kind(NodeKind.ROUTER)
        transits = [n for n in routers if all(p.relation != "none" for p in n.ports)]
        candidates = [(["kill", n.name], {"kind": "daemon", "node": n.name}) for n in transits]
    elif kind == "partition":
        candidates = [
            (["partition", str(s.site)], {"kind": "partition", "site": str(s.site)})
            for s in plan.sites
        ]
    else:  # one session of a site with two: the site stays up through the other
        candidates = [
            (["link-down", s.name, p.peer], {"kind": "link", "a": s.name, "b": p.peer})
            for s in plan.sites
            if len(s.bgp_ports) > 1
            for p in s.bgp_ports
        ]

    def moved(want: dict[str, str | None]) -> int:
        return sum(want[c] not in (None, base[c]) for c in want)

    scored = [
        (args, rec, predicted(lab.world, faults=model_faults(plan, [rec])))
        for args, rec in candidates
    ]
    args, rec, want = max(scored, key=lambda x: moved(x[2]))
    assert moved(want), f"no {kind} fault moves a client in this lab"
    return args, rec, want


def lab_cli(lab: RunningLab, *args: str) -> None:
    assert main(["lab", *args, "--dir", str(lab.directory)]) == 0


@pytest.mark.parametrize(
    ("seed", "routers", "fault"), [(1, 10, "bgpd"), (3, 15, "partition"), (5, 20, "session")]
)
def test_model_and_lab_agree_on_a_generated_internet_whole_and_broken(
    tmp_path: Path, seed: int, routers: int, fault: str
) -> None:
    topology = tmp_path / "lab.yaml"
    topology.write_text(dump_yaml(generate(seed, routers=routers, sites=4, clients=CLIENTS)))
    with running_lab(topology) as lab:
        base = predicted(lab.world)
        moving = [
            str(s.site) for s in lab.plan.sites if predicted(lab.world, (str(s.site),)) != base
        ]
        rows = compare(lab.world, lab.plan, lab.directory, flows=FLOWS, only=moving)
        assert len(rows) == CLIENTS * (1 + len(moving))
        assert disagreements(rows) == []
        assert catchment(rows) == base
        assert {r.scenario for r in rows} == {"baseline", *(f"without {s}" for s in moving)}

        # one fault, recorded as `lab fault` makes it
        args, record, want = worst_fault(lab, fault, base)
        lab_cli(lab, "fault", *args)
        assert LabState.load(lab.directory).faults == [record]
        # at once: compare lets BGP settle after the fault itself
        broken = compare(lab.world, lab.plan, lab.directory, flows=FLOWS, each_site=False)
        assert disagreements(broken) == []
        assert catchment(broken) == want
        assert any(s not in (None, base[c]) for c, s in catchment(broken).items())

        # and healed: every client back where it was, on every flow
        lab_cli(lab, "heal")
        assert LabState.load(lab.directory).faults == []
        healed = compare(lab.world, lab.plan, lab.directory, flows=FLOWS, each_site=False)
        assert disagreements(healed) == []
        assert catchment(healed) == base
