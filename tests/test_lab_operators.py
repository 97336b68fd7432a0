"""Two operators on one prefix in the lab: CHC is anyedge's (AS64500), AKL and SYD a
CDN's (AS64400), each site's real speaker originating the prefix from its operator's ASN
(``tests/data/lab3-operators.yaml``).  The routing engine's catchments, the clients'
probes, the sites' DNS answers and a Verfploeter map from the anycast address agree; and
so do they on a generated Internet with two operators and 20 clients.  Round trips on a
lab with link delays: tests/test_lab_dns_rtt.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyedge.adapters import netns
from anyedge.adapters.bgp.base import Route
from anyedge.health import Settings
from anyedge.lab import dns as ldns
from anyedge.lab import healthd, verfploeter
from anyedge.lab.build import LabState, router_of, wait_converged
from anyedge.lab.compare import compare, current_routes, predicted
from anyedge.lab.generate import generate
from anyedge.lab.measure import Announcer
from anyedge.lab.plan import TEST_PREFIX
from anyedge.model.files.topology import dump_yaml
from anyedge.model.lab import Speaker
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
    """A random tiered Internet of 12 routers, four sites (two of each operator, one per
    kind of speaker) and 20 clients: model and lab agree on every client, as announced
    and with each site withdrawn, and the Verfploeter map is the catchment the clients
    measured.  Then DNS and its health checks at every site: the ExaBGP site's server
    dies, its agent withdraws through ExaBGP, and every client is answered by the site
    the model names."""
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
        knot = ldns.start(lab.plan, lab.directory)
        assert ldns.answering_sites(lab.plan) == baseline
        settings = healthd.CheckSettings(Settings(2, 3, 2.0), interval=0.2, timeout=0.2)
        healthd.start(lab.plan, lab.directory, settings)
        exa = next(n for n in lab.plan.sites if n.speaker is Speaker.EXABGP)
        netns.stop([knot[str(exa.site)]])
        end = time.monotonic() + 20
        while not any(not e["announce"] for e in healthd.events(lab.directory, exa)):
            assert time.monotonic() < end, healthd.events(lab.directory, exa)
            time.sleep(0.05)
        # the ExaBGP site's routers now hear one prefix from it (the test prefix), not two
        heard = {p.peer: {p.ip: 1} for p in exa.bgp_ports}
        wait_converged(lab.plan, lab.directory, timeout=30, quiet=1.0, expect=heard)
        routes = current_routes(lab.plan, LabState.load(lab.directory))
        assert routes[str(exa.site)] == [Route(TEST_PREFIX)]  # only the service prefix went
        want = predicted(lab.world, (), lab.plan.prefixes[0], routes)
        assert str(exa.site) not in want.values()
        assert ldns.answering_sites(lab.plan) == want
