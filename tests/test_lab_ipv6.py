"""A dual-stack lab: IPv6 anycast beside IPv4, over real BGP, against the model.

``tests/data/lab6.yaml`` is the three-site lab (CHC on FRR, AKL on BIRD, SYD on GoBGP)
with 198.51.100.0/24 announced by all three sites and 2001:db8:100::/48 by CHC and SYD
only, so the two
families' catchments differ: c2 lands in AKL over IPv4, and in CHC over IPv6 (its
ISP isp2 hears CHC from its peer isp1, SYD from its provider isp3).  The lab's sessions
carry IPv6 unicast beside IPv4, its links and clients have IPv6 addresses, and the
clients' IPv6 networks are announced in BGP by their ISPs (the return paths); c1's
access link has the IPv6 addresses the topology gives it, the others generated ones.

Checked: the IPv6 routes in a router's ``bgpd``; ``lab probe -6``; ``lab compare``
agreeing with the model for both prefixes at baseline and with each site withdrawn in
turn; one site's IPv6 prefix withdrawn alone (``withdraw --prefix``), IPv4 unmoved; and
under a transit link down (``lab fault link-down isp1 isp2``), where c2's IPv6 answers
come from SYD, the model with the same fault agreeing; after ``lab heal``, c2 is back
on CHC.  A site that cannot announce IPv6 in the lab (one with servers) is refused at
validation, naming it.  How each speaker's configuration carries IPv6 (BIRD's and
ExaBGP's too) is checked without a lab.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anyedge.cli.main import main
from anyedge.lab import build
from anyedge.lab.plan import make_plan
from anyedge.model.files import load_world
from lab_support import DATA, RunningLab, bgp_paths, lab_directory, tear_down

pytestmark = [pytest.mark.lab, pytest.mark.slow]

TOPOLOGY = DATA / "lab6.yaml"
V4, V6 = "198.51.100.0/24", "2001:db8:100::/48"


@pytest.fixture(scope="module")
def lab6() -> Iterator[RunningLab]:
    name = "v6" + secrets.token_hex(3)  # namespaces ae-v6XXXXXX-*
    world = load_world(TOPOLOGY)
    plan = make_plan(world, name)
    d = lab_directory()
    try:
        build.up(world, plan, d)
        yield RunningLab(world, plan, d, TOPOLOGY)
    finally:
        tear_down(d, name)


def cli(lab: RunningLab, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    """``anyedge lab ARGS --dir D --json``: its JSON output (the status must be 0)."""
    capsys.readouterr()
    rc = main(["lab", *args, "--dir", str(lab.directory), "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def run(lab: RunningLab, *args: str) -> int:
    return main(["lab", *args, "--dir", str(lab.directory)])


def sites(lab: RunningLab, capsys: pytest.CaptureFixture[str], ipv6: bool) -> dict[str, Any]:
    """client -> the sites that answered its probes (every flow answered)."""
    got = cli(lab, capsys, "probe", "--flows", "10", *(["-6"] if ipv6 else []))
    for client, r in got.items():
        assert r["lost"] == 0, (client, r)
    return {c: sorted(r["answers"]) for c, r in got.items()}


def compare(
    lab: RunningLab, capsys: pytest.CaptureFixture[str], *extra: str
) -> list[dict[str, Any]]:
    out = cli(lab, capsys, "compare", "--flows", "5", *extra)
    rows: list[dict[str, Any]] = out["rows"]
    assert [r for r in rows if not r["agree"]] == []
    assert {r["prefix"] for r in rows} == {V4, V6}
    return rows


def catchment(rows: list[dict[str, Any]], scenario: str, prefix: str) -> dict[str, str]:
    return {
        r["client"]: r["lab"] for r in rows if (r["scenario"], r["prefix"]) == (scenario, prefix)
    }


def test_ipv6_routes_probes_and_compare(
    lab6: RunningLab, capsys: pytest.CaptureFixture[str]
) -> None:
    held = bgp_paths(lab6, "isp2", V6)
    assert {n: p["aspath"]["string"] for n, p in held.items()} == {
        "isp1": "65001 64500",
        "isp3": "65003 64500",
    }
    assert [n for n, p in held.items() if p.get("bestpath")] == ["isp1"]  # CHC, over the peer
    # c1's network (its link's addresses given in the topology) is in BGP: the way back
    isp3 = lab6.plan.node("isp3").namespace
    route = subprocess.run(
        ["ip", "-n", isp3, "-6", "route", "show", "2001:db8:c1::/64"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "proto bgp" in route
    assert sites(lab6, capsys, ipv6=True) == {"c1": ["CHC"], "c2": ["CHC"]}

    rows = compare(lab6, capsys)  # the baseline, then each site withdrawn in turn
    assert len(rows) == 2 * 2 * 4  # two prefixes, two clients, four scenarios
    assert catchment(rows, "baseline", V4) == {"c1": "CHC", "c2": "AKL"}
    assert catchment(rows, "baseline", V6) == {"c1": "CHC", "c2": "CHC"}
    assert catchment(rows, "without CHC", V6) == {"c1": "SYD", "c2": "SYD"}
    assert catchment(rows, "without CHC", V4) == {"c1": "AKL", "c2": "AKL"}
    assert catchment(rows, "without AKL", V6) == {"c1": "CHC", "c2": "CHC"}


def test_ipv6_prefix_withdrawn_alone(lab6: RunningLab, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(lab6, "withdraw", "CHC", "--prefix", V6) == 0
    try:
        assert sites(lab6, capsys, ipv6=True) == {"c1": ["SYD"], "c2": ["SYD"]}
        assert sites(lab6, capsys, ipv6=False) == {"c1": ["CHC"], "c2": ["AKL"]}
        rows = compare(lab6, capsys, "--no-withdraw")
        assert catchment(rows, "baseline", V6) == {"c1": "SYD", "c2": "SYD"}
    finally:
        assert run(lab6, "announce", "CHC", "--prefix", V6) == 0
    assert run(lab6, "withdraw", "AKL", "--prefix", V6) == 2  # AKL has no IPv6 prefix


def test_compare_under_a_transit_fault(
    lab6: RunningLab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(lab6, "fault", "link-down", "isp1", "isp2") == 0
    try:
        out = cli(lab6, capsys, "compare", "--flows", "5", "--no-withdraw")
        assert out["faults"]["links_down"] == ["65001-65002"]
        assert [r for r in out["rows"] if not r["agree"]] == []
        # c2 loses the peering: SYD over its provider for IPv6, AKL still for IPv4
        assert catchment(out["rows"], "baseline", V6) == {"c1": "CHC", "c2": "SYD"}
        assert catchment(out["rows"], "baseline", V4) == {"c1": "CHC", "c2": "AKL"}
    finally:
        assert run(lab6, "heal") == 0
    assert sites(lab6, capsys, ipv6=True) == {"c1": ["CHC"], "c2": ["CHC"]}


def test_a_site_that_cannot_announce_ipv6_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = TOPOLOGY.read_text().replace(
        "syd: {kind: site, site: SYD, speaker: gobgp}",
        "syd: {kind: site, site: SYD, speaker: gobgp, servers: 2}",
    )
    bad = tmp_path / "servers6.yaml"
    bad.write_text(text)
    capsys.readouterr()
    rc = main(["lab", "up", "-t", str(bad), "--name", "v6bad", "--dir", str(tmp_path / "lab")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{bad}:" in err
    assert "lab.nodes.syd.servers: site SYD announces 2001:db8:100::/48" in err
    assert not (tmp_path / "lab" / "state.json").exists()


def test_each_speaker_sends_ipv6_with_its_address_on_the_link(tmp_path: Path) -> None:
    """The sessions carry IPv6 unicast, and IPv6 routes leave with the site's IPv6
    address on the link as their next hop (the sessions run over IPv4)."""
    from anyedge.adapters.bgp.base import Route
    from anyedge.adapters.bgp.bird import render_bird_conf
    from anyedge.adapters.bgp.exabgp import announce_lines, render_exabgp_conf
    from anyedge.adapters.bgp.frr import site_config
    from anyedge.adapters.bgp.gobgp import render_gobgp_toml, rib_add_args

    plan = make_plan(load_world(TOPOLOGY), "v6cfg")
    cfg = build.speaker_config(plan, plan.node("syd"), tmp_path)
    assert cfg.ipv6
    (n,) = cfg.neighbors
    assert (n.address, n.local_address6) == ("100.64.0.21", "2001:db8:ffff::16")
    routes = {p: Route(p) for p in (V4, V6)}
    frr = site_config(cfg, routes)
    assert f"address-family ipv6 unicast\n  network {V6} route-map ORIGIN-P0" in frr
    assert f"  neighbor {n.address} activate" in frr
    bird = render_bird_conf(cfg, routes)
    assert f"route {V6} blackhole;" in bird
    assert f"next hop address {n.local_address6};" in bird
    exa = render_exabgp_conf(cfg, tmp_path / "fifo", tmp_path / "state")
    assert "ipv6 unicast;" in exa
    assert announce_lines(cfg, Route(V6)) == [
        f"neighbor {n.address} announce route {V6} next-hop {n.local_address6} origin igp "
        "as-path [ 64500 ]"
    ]
    assert 'afi-safi-name = "ipv6-unicast"' in render_gobgp_toml(cfg)
    assert f'set-next-hop = "{n.local_address6}"' in render_gobgp_toml(cfg)
    assert rib_add_args(64500, Route(V6))[:6] == ["global", "rib", "add", "-a", "ipv6", V6]


C1_LINK = '{endpoints: ["isp1:eth4", "c1:eth1"], ipv6: ["2001:db8:c1::1/64", "2001:db8:c1::2/64"]}'


@pytest.mark.parametrize(
    ("given", "error"),
    [
        (
            '["2001:db8:c1::1/64", "2001:db8:c2::2/64"]',
            "2001:db8:c1::1/64 and 2001:db8:c2::2/64 are not two addresses of one network",
        ),
        ('["2001:db8:100::1/64", "2001:db8:100::2/64"]', "overlaps the prefix 2001:db8:100::/48"),
        (
            '["2001:db8:ffff:1::1/64", "2001:db8:ffff:1::2/64"]',
            "overlaps 2001:db8:ffff::/48, where the lab generates",
        ),
        ('["2001:db8:c1::/64", "2001:db8:c1::2/64"]', "ipv6[0]: 2001:db8:c1::/64 is its network's"),
        ('["2001:db8:c1::1"]', "two addresses with their prefix length, one per endpoint"),
    ],
)
def test_a_link_s_ipv6_addresses_are_checked(given: str, error: str) -> None:
    from anyedge.errors import InputError
    from anyedge.model.files import parse_world

    text = TOPOLOGY.read_text()
    assert C1_LINK in text
    bad = text.replace(C1_LINK, C1_LINK.replace(C1_LINK[C1_LINK.index("[", 20) : -1], given))
    with pytest.raises(InputError) as e:
        parse_world(bad, "lab6.yaml")
    assert "lab.links[6].ipv6" in e.value.render()
    assert error in e.value.render()


def test_generated_labs_can_be_dual_stack() -> None:
    from anyedge.lab.generate import PREFIX6, generate
    from anyedge.model.files import parse_world
    from anyedge.model.files.topology import dump_yaml

    plain = generate(3, routers=8, sites=3, clients=5)
    dual = generate(3, routers=8, sites=3, clients=5, ipv6=True)
    assert dual["lab"] == plain["lab"]  # the same Internet, only the prefix added
    plan = make_plan(parse_world(dump_yaml(dual), "generated"), "g")
    assert plan.prefixes6 == (PREFIX6,)
    assert [PREFIX6 in n.prefixes for n in plan.sites] == [True, True, False]
    assert all(p.address6 for n in plan.nodes for p in n.ports)
