"""The calibrated world: last mile, people online by country, exchange points,
tromboning, and the calibration report against published figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anyedge.cli.main import main
from anyedge.model import ASKind, SessionKind, World
from anyedge.model.files import load_world, save_world
from anyedge.model.worldgen import WorldOptions, build_world
from anyedge.model.worldgen.countrydata import country_table, parse
from anyedge.model.worldgen.peering import IXP_CITIES, route_server_pairs
from anyedge.routing import Router
from anyedge.routing.reach import served_rtt
from anyedge.sim.calibration import calibrate


@pytest.fixture(scope="module")
def world(default_world: World) -> World:
    """The default world, which is the calibrated one."""
    assert WorldOptions().calibrated
    return default_world


def test_country_table_ships_with_its_source() -> None:
    table = country_table()
    assert {"IN", "TR"} <= table.thin  # the backbone post's two examples
    assert table.use["IN"] < table.use["CN"] < table.use["DE"]
    with pytest.raises(ValueError, match="row 2"):
        parse("country,internet_use,local_peering\nXX,0.5,dense\n")
    with pytest.raises(ValueError, match="dense or thin"):
        parse("country,internet_use,local_peering\nDE,0.9,sparse\n")


def test_route_servers_peer_every_two_members_but_customers() -> None:
    pairs = route_server_pairs({7: [3, 1, 2], 8: [2, 4]}, [(1, 2)])
    assert pairs == [(1, 3), (2, 3), (2, 4)]


def test_calibration_report_within_every_tolerance(world: World) -> None:
    figures = calibrate(world)
    names = {f.name for f in figures}
    assert "demand within 50 ms after routing" in names
    assert "F-root median after, Atlas-like probes" in names
    assert {"London-New York City round trip", "Sydney-Auckland round trip"} <= names
    bad = [f.to_dict() for f in figures if not f.ok]
    assert not bad


def test_uncalibrated_world_fails_the_calibration() -> None:
    """The uncalibrated world is too kind: that is what the report is for."""
    bad = {f.name for f in calibrate(build_world(WorldOptions(calibrated=False))) if not f.ok}
    assert {"demand within 50 ms after routing", "peer links among AS links"} <= bad


def test_peer_links_are_the_majority_made_at_exchanges(world: World) -> None:
    inet = world.internet
    assert len(inet.p2p) > len(inet.p2c)
    # the members of London's exchange all peer with each other (or buy from each other)
    m = inet.metros
    lon = [
        i for i, (n, c) in enumerate(zip(m.name, m.country, strict=True)) if (n, c) == IXP_CITIES[2]
    ]
    here = inet.presence[inet.presence[:, 1] == lon[0], 0]
    members = sorted(int(a) for a in here if inet.kind[a] != ASKind.TIER1)
    assert len(members) >= 5
    peers = {tuple(p) for p in inet.p2p.tolist()}
    related = {tuple(sorted(p)) for p in inet.p2c.tolist()}
    for i, a in enumerate(members):
        for b in members[i + 1 :]:
            assert (a, b) in peers or (a, b) in related
    # and the site in London peers with them over the route server
    s = world.network.sites.index("LHR")
    sess = world.network.sessions
    peer_asn = set(sess.asn[(sess.site == s) & (sess.kind == SessionKind.PEER)].tolist())
    assert {int(inet.asn[a]) for a in members} - peer_asn <= set(
        sess.asn[(sess.site == s) & (sess.kind == SessionKind.TRANSIT)].tolist()
    )


def test_last_mile_by_access_network_and_country(world: World) -> None:
    inet = world.internet
    e = inet.eyeballs
    acc = world.access_ms
    assert acc.shape == (len(e),)
    assert np.all(acc > 0)
    country = np.array(inet.metros.country)[e.metro]
    mobile = np.array(["-Mobile-" in inet.name[a] for a in e.as_.tolist()])
    for cc in ("US", "DE", "BR"):
        mine = country == cc
        fixed_ms = np.median(acc[mine & ~mobile])
        radio_ms = np.median(acc[mine & mobile])
        assert radio_ms > 2 * fixed_ms  # the radio costs more than the line
    # a country with few people online has slower access than a rich one
    assert np.median(acc[country == "ET"]) > np.median(acc[country == "DE"])
    # mobile carriers carry about the continent's mobile share of the demand
    de = country == "DE"
    assert e.rps[de & mobile].sum() / e.rps[de].sum() == pytest.approx(0.45, abs=0.01)


def test_demand_follows_people_online_by_country(world: World) -> None:
    inet = world.internet
    m, e = inet.metros, inet.eyeballs
    per_metro = np.bincount(e.metro, weights=e.rps, minlength=len(m))
    per_person = per_metro / m.population
    row = {n: i for i, n in enumerate(zip(m.name, m.country, strict=True))}
    mumbai, shanghai = row[("Mumbai", "IN")], row[("Shanghai", "CN")]
    table = country_table()
    ratio = per_person[mumbai] / per_person[shanghai]
    assert ratio == pytest.approx(table.use["IN"] / table.use["CN"], rel=1e-9)


def test_thin_peering_trombones_abroad(world: World) -> None:
    """Users in countries of thin local peering go a longer way than Germany's:
    carriers meet their networks abroad, and few of their ISPs peer with the sites at
    home, so some of them are served from abroad."""
    inet = world.internet
    kind, country = inet.kind, np.array(inet.metros.country)
    carriers = np.isin(inet.presence[:, 0], np.flatnonzero(kind != ASKind.ACCESS))
    assert not np.any(np.isin(country[inet.presence[carriers, 1]], ["IN", "TR"]))
    c = Router(world).catchment()
    e = inet.eyeballs
    path = c.eyeball_rtt_ms - world.access_ms  # the round trip beyond the last mile
    site_country = np.array(world.network.sites.country)[c.eyeball_site]
    mine = country[e.metro]

    def mean_path(cc: str) -> float:
        return float(np.average(path[mine == cc], weights=e.rps[mine == cc]))

    def abroad(cc: str) -> float:
        sel = mine == cc
        return float(e.rps[sel & (site_country != cc)].sum() / e.rps[sel].sum())

    assert mean_path("IN") > 3 * mean_path("DE")
    assert mean_path("TR") > 3 * mean_path("DE")
    assert abroad("PK") > 0.2  # Pakistan's networks meet their carriers abroad
    assert abroad("BD") > 0.2
    assert abroad("DE") == 0.0


def test_cli_calibration_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["world", "--calibration", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert all(f["ok"] for f in data["calibration"])
    assert data["served"]["median_ms"] > 10


def test_cli_calibration_out_of_tolerance_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    small = ["--sites", "40", "--mcp", "4", "--min-city-population", "500000"]
    assert main(["world", *small, "--calibration"]) == 1
    out = capsys.readouterr().out
    assert "calibration" in out
    assert "OUT" in out
    # the older world, on request: sparse peering, a flat last mile
    assert main(["world", *small, "--uncalibrated", "--calibration", "--json"]) == 1
    figures = {f["figure"]: f for f in json.loads(capsys.readouterr().out)["calibration"]}
    assert not figures["peer links among AS links"]["ok"]


def test_saved_calibrated_world_keeps_its_last_mile(tmp_path: Path) -> None:
    small = WorldOptions(sites=40, mcp=4, min_city_population=500_000)
    w = build_world(small)
    save_world(w, tmp_path)
    assert "access_ms" in (tmp_path / "eyeballs.csv").read_text().splitlines()[0]
    back = load_world(tmp_path)
    np.testing.assert_array_equal(back.access_ms, w.access_ms)
    assert served_rtt(back) == served_rtt(w)


def test_calibration_doc_states_the_default_worlds_reach(world: World) -> None:
    """docs/calibration.md's figures for the default (calibrated) world; the README's
    are checked in tests/test_docs.py."""
    root = Path(__file__).resolve().parent.parent
    s = served_rtt(world)
    median = f"{s['median_ms']:.1f}"
    doc = (root / "docs" / "calibration.md").read_text(encoding="utf-8")
    assert f"| demand within 50 ms after routing | {100 * s['demand_within_ms']['50']:.2f} %" in doc
    assert f"| median round trip after routing | {median} ms |" in doc
