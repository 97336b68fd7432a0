"""The model follows the lab under faults, on small generated Internets.

In each lab a transit link between two routers is taken down for real (``ip link set
down`` at both ends) — in one lab recorded in its state as ``{"kind": "link", ...}``,
in the other not, the fault then named to compare as ``--link-down`` names it — BGP
settles, and ``lab compare`` must agree with the routing model under the same fault,
client for client — with some client's site changed by it.  Then a site's sessions are
lost as well (its links to its routers down, recorded as a ``partition``): the model
cuts the site off, no client reaches it, and the model still agrees, with every other
site withdrawn in turn under both faults.

These are two of the five generated Internets on which the suite shows ``lab compare``
agreeing under faults; :mod:`test_lab_generated` breaks its three in other ways (a
transit's ``bgpd`` killed, a site partitioned by nftables, one session of a site lost)
and heals them.  A dead router's daemon on a hand-written lab, with its client cut off,
is :mod:`test_lab_chaos`'s (``kill isp1``, compared during the fault).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from anyedge.cli.main import main
from anyedge.lab import build
from anyedge.lab.build import locked, wait_converged
from anyedge.lab.compare import compare, extra_faults, faults_of, predicted
from anyedge.lab.fault_model import ModelFaults
from anyedge.lab.generate import generate
from anyedge.lab.plan import make_plan
from anyedge.model.files import load_world
from anyedge.model.files.topology import dump_yaml
from anyedge.model.lab import NodeKind
from lab_support import RunningLab, lab_directory, tear_down

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@contextmanager
def lab_of(topology: Path) -> Iterator[RunningLab]:
    name = "mf" + secrets.token_hex(3)  # namespaces ae-mfXXXXXX-*
    world = load_world(topology)
    plan = make_plan(world, name)
    d = lab_directory()
    try:
        build.up(world, plan, d)
        yield RunningLab(world, plan, d, topology)
    finally:
        tear_down(d, name)


def take_down(lab: RunningLab, a: str, b: str, record: dict[str, Any] | None) -> None:
    """Every link between nodes ``a`` and ``b`` down at both ends, and ``record`` (if
    any) kept in the lab's state."""
    for node, port, other, other_port in lab.plan.links():
        if {node.name, other.name} == {a, b}:
            for n, p in ((node, port), (other, other_port)):
                subprocess.run(
                    ["ip", "-n", n.namespace, "link", "set", p.ifname, "down"], check=True
                )
    if record is None:
        return
    with locked(lab.directory) as state:
        if record not in state.faults:
            state.faults.append(record)
        state.save(lab.directory)


def transit_link(lab: RunningLab, base: dict[str, str | None]) -> tuple[str, str, str]:
    """(router, router, model name) of a link between routers whose loss moves some
    client and leaves every client a route."""
    asn = {n.name: n.asn for n in lab.plan.nodes}
    for node, _p, other, _q in lab.plan.links():
        if node.kind is NodeKind.ROUTER and other.kind is NodeKind.ROUTER:
            link = f"{asn[node.name]}-{asn[other.name]}"
            want = predicted(lab.world, faults=ModelFaults(links=(link,)))
            if want != base and None not in want.values():
                return node.name, other.name, link
    raise AssertionError("no transit link in this lab moves a client")


@pytest.mark.parametrize(("seed", "routers", "record"), [(3, 8, True), (5, 10, False)])
def test_compare_agrees_under_a_transit_failure_and_a_site_cut_off(
    tmp_path: Path, seed: int, routers: int, record: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The recorded lab also withdraws in turn, under both faults, every other site
    whose withdrawal the model says moves a client (``--withdraw``: the others would
    move nobody); the other lab, whose faults are named, compares the baseline only (to
    keep the module short: withdrawing under faults is the first lab's)."""
    topology = tmp_path / "lab.yaml"
    topology.write_text(dump_yaml(generate(seed, routers=routers, sites=3, clients=5)))
    with lab_of(topology) as lab:
        base = predicted(lab.world)
        a, b, link = transit_link(lab, base)
        take_down(lab, a, b, {"kind": "link", "a": a, "b": b} if record else None)
        extra = [] if record else extra_faults(lab.world, lab.plan, [link])
        wait_converged(lab.plan, lab.directory, timeout=30, faults=extra)
        assert faults_of(lab.plan, lab.directory, extra).links == (link,)
        rows = compare(lab.world, lab.plan, lab.directory, 5, each_site=False, extra=extra)
        assert [r.to_dict() for r in rows if not r.agree] == []
        assert any(r.lab != base[r.client] for r in rows)  # the failure moved someone

        # a site that catches clients now loses its sessions too
        caught = {r.lab for r in rows}
        site = next(n for n in lab.plan.sites if n.site in caught)
        for p in site.bgp_ports:
            take_down(lab, site.name, p.peer, {"kind": "partition", "site": site.site})
        wait_converged(lab.plan, lab.directory, timeout=30, faults=extra)
        both = ModelFaults(links=(link,), sites=(str(site.site),))
        now = predicted(lab.world, faults=both)
        others = [
            str(n.site)
            for n in lab.plan.sites
            if record and n is not site and predicted(lab.world, (str(n.site),), faults=both) != now
        ]
        assert others or not record
        named = [f"--withdraw={c}" for c in others]
        named = named if record else ["--link-down", link, "--no-withdraw"]
        argv = ["lab", "compare", "--dir", str(lab.directory), "--flows", "5", "--json"]
        rc = main([*argv, *named])
        out = json.loads(capsys.readouterr().out)
        assert rc == 0, [r for r in out["rows"] if not r["agree"]]
        assert out["faults"]["sites_down"] == [site.site]
        assert link in out["faults"]["links_down"]
        assert {r["scenario"] for r in out["rows"]} == {
            "baseline",
            *(f"without {c}" for c in others),
        }
        assert all(r["lab"] != site.site for r in out["rows"])


def test_compare_refuses_faults_the_lab_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Names are checked before anything runs: no lab needed beyond its state."""
    topology = tmp_path / "lab.yaml"
    topology.write_text(dump_yaml(generate(2, routers=8, sites=3, clients=5)))
    world = load_world(topology)
    plan = make_plan(world, "mfx")
    d = tmp_path / "lab"
    build.LabState(name="mfx", topology=str(topology), ready=True).save(d)
    rc = main(["lab", "compare", "--dir", str(d), "--link-down", "1-2", "--site-down", "XXX"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--link-down: AS1 is not in the Internet" in err
    assert "--site-down: unknown site 'XXX'" in err
    assert main(["lab", "compare", "--dir", str(d), "--withdraw", "XYZ"]) == 2
    assert "no site 'XYZ' in the lab" in capsys.readouterr().err
    assert plan.sites
