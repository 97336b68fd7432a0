"""Two operators on one prefix in the lab: CHC is anyedge's (AS64500), AKL and SYD a
CDN's (AS64400), each site's real speaker originating the prefix from its operator's ASN
(``tests/data/lab3-operators.yaml``).  The routing engine's catchments, the clients'
probes, the sites' DNS answers and a Verfploeter map from the anycast address agree; and
so do they on a generated Internet with two operators and 20 clients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyedge.lab import dns as ldns
from anyedge.lab import verfploeter
from anyedge.lab.build import router_of
from anyedge.lab.compare import compare, predicted
from anyedge.lab.generate import generate
from anyedge.lab.measure import Announcer
from anyedge.model.files.topology import dump_yaml
from lab_support import DATA, RunningLab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab() -> Iterator[RunningLab]:
    with running_lab(DATA / "lab3-operators.yaml") as lab:
        ldns.start(lab.plan, lab.directory)
        yield lab


def test_routers_hear_the_prefix_from_both_origin_asns(lab: RunningLab) -> None:
    prefix = lab.plan.prefixes[0]
    origins = set()
    for name in ("isp1", "isp2", "isp3"):
        r = router_of(lab.plan, lab.plan.node(name), lab.directory)
        routes = json.loads(r.vtysh(f"show bgp ipv4 unicast {prefix} json"))
        for path in routes["paths"]:
            origins.add(int(path["aspath"]["string"].split()[-1]))
    assert origins == {64500, 64400}


def test_model_lab_and_verfploeter_agree(lab: RunningLab) -> None:
    rows = compare(lab.world, lab.plan, lab.directory, flows=10)
    assert all(r.agree for r in rows), [r.to_dict() for r in rows if not r.agree]
    baseline = {r.client: r.lab for r in rows if r.scenario == "baseline"}
    assert baseline == predicted(lab.world) == {"c1": "CHC", "c2": "AKL"}
    assert verfploeter.catchment_map(lab.plan) == baseline
    assert verfploeter.catchment_map(lab.plan, sender="SYD") == baseline
    assert ldns.answering_sites(lab.plan) == baseline


def test_verfploeter_follows_a_withdrawal(lab: RunningLab) -> None:
    ann = Announcer(lab.plan, lab.directory)
    ann.withdraw("AKL")
    try:
        ann.settle()
        want = predicted(lab.world, ("AKL",))
        assert want["c2"] != "AKL"
        assert verfploeter.catchment_map(lab.plan, sender="SYD") == want
        assert ldns.answering_sites(lab.plan) == want
    finally:
        ann.announce("AKL")
        ann.settle()


def test_icmp_codec() -> None:
    req = verfploeter.echo_request(0x1234, 7)
    assert verfploeter.checksum(req) == 0
    reply = bytes([0x45]) + bytes(19) + bytes([0, 0]) + req[2:]
    assert verfploeter.parse_reply(reply) == (0x1234, 7)
    assert verfploeter.parse_reply(bytes([0x45]) + bytes(19) + req) is None


def test_a_generated_internet_with_two_operators_and_twenty_clients(tmp_path: Path) -> None:
    """A random tiered Internet of 12 routers, four sites (two of each operator) and 20
    clients: model and lab agree on every client, as announced and with each site
    withdrawn, and the Verfploeter map is the catchment the clients measured."""
    topo = tmp_path / "gen.yaml"
    topo.write_text(dump_yaml(generate(3, routers=12, sites=4, clients=20, operators=2)))
    with running_lab(topo) as lab:
        assert {n.asn for n in lab.plan.sites} == {64500, 64400}
        rows = compare(lab.world, lab.plan, lab.directory, flows=4)
        assert len(rows) == 20 * 5
        assert all(r.agree for r in rows), [r.to_dict() for r in rows if not r.agree]
        baseline = {r.client: r.lab for r in rows if r.scenario == "baseline"}
        net = lab.world.network
        origin = dict(zip(net.sites.code, net.origin_asn().tolist(), strict=True))
        assert {origin[s] for s in baseline.values() if s} == {64500, 64400}
        assert verfploeter.catchment_map(lab.plan) == baseline
