"""The digital twin: accounting that loses nothing, quiet days that stay quiet, the
same day twice, and the Traffic Manager doing better than both baselines."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from anyedge.cli.main import main
from anyedge.errors import InputError
from anyedge.model import World
from anyedge.model.files import parse_world
from anyedge.model.network import Sections
from anyedge.routing import Router
from anyedge.sim import Comparison, Twin, parse_scenario
from anyedge.sim.demand import PROFILE, diurnal
from anyedge.sim.result import ACTION_FIELDS, NETWORK_FIELDS
from conftest import DefaultDay
from test_docs import default_day_in_docs

TINY = Path(__file__).parent / "data" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny() -> World:
    return parse_world(TINY.read_text(), TINY)


def short(world: World, events: str = "[]", hours: float = 3) -> object:
    return parse_scenario(f"duration: {hours}h\ntick: 10s\nevents: {events}\n", world)


def test_the_day_curve_wraps_at_midnight() -> None:
    # -1e-17 % 24.0 is 24.0 in floating point: the hour just before midnight
    assert diurnal(np.array([-1e-17, 0.0, 24.0, 47.5])) == pytest.approx(
        [PROFILE[0], PROFILE[0], PROFILE[0], (PROFILE[23] + PROFILE[0]) / 2]
    )
    assert float(diurnal(21.0)) == 1.0


def test_every_request_is_served_or_failed(small_world: World) -> None:
    events = (
        "[{at: 30m, for: 1h, kind: servers_down, site: "
        f"{small_world.network.sites.code[0]}, fraction: 0.8}}]"
    )
    twin = Twin(small_world, short(small_world, events))  # type: ignore[arg-type]
    for mode in ("none", "manager"):
        t = twin.run(mode).totals
        assert t.requests > 0
        assert t.served + t.failed == pytest.approx(t.requests, rel=1e-9)
        assert t.failed >= t.unrouted >= 0


def test_a_quiet_day_with_room_has_no_failures_and_no_moves(tiny: World) -> None:
    twin = Twin(tiny, short(tiny))  # type: ignore[arg-type]
    for mode in ("none", "withdraw", "manager"):
        t = twin.run(mode).totals
        assert t.failed == 0.0
        assert t.moved == 0.0
        assert t.actions == 0
        assert t.routing_changes == 0
        assert t.slo_breach_total == 0.0


def test_a_dark_site_moves_its_users(tiny: World) -> None:
    twin = Twin(tiny, short(tiny, "[{at: 1h, for: 1h, kind: site_dark, site: CHC}]"))  # type: ignore[arg-type]
    t = twin.run("none").totals
    assert t.routing_changes == 2  # CHC's one prefix withdrawn at 1 h, announced at 2 h
    assert t.unrouted == 0.0  # AKL takes Christchurch's users
    assert t.failed == 0.0


def test_a_site_without_servers_fails_every_request_it_takes(tiny: World) -> None:
    text = TINY.read_text().replace("{name: CHC01, servers: 8,", "{name: CHC01, servers: 0,")
    world = parse_world(text, TINY)
    chc = world.network.sites.index("CHC")
    assert world.network.site_capacity()[chc] == 0.0
    # the first prefix is announced everywhere, the second not from CHC: half of the
    # users in CHC's catchment reach it, and every one of their requests fails there
    at_chc = Router(world).catchment().site_demand()[chc] / 2
    share = at_chc / float(world.internet.eyeballs.rps.sum())
    twin = Twin(world, short(world, hours=1))  # type: ignore[arg-type]
    none = twin.run("none")
    t = none.totals
    assert t.served + t.failed == pytest.approx(t.requests, rel=1e-9)
    assert t.failed == pytest.approx(share * t.requests, rel=0.01)
    assert np.all(none.series.failed_rps[:, chc] > 0)
    assert np.all(np.isinf(none.series.utilisation[:, chc]))
    assert t.slo_breach_minutes.get("CHC", 0.0) == pytest.approx(60.0)
    # a controller moves the traffic away, so fewer fail
    assert twin.run("manager").totals.failed < 0.5 * t.failed


def test_a_site_without_sections_fails_every_request_it_takes(tiny: World) -> None:
    net = tiny.network
    keep = np.asarray(net.sections.site) != net.sites.index("CHC")
    sections = Sections(
        name=tuple(n for n, k in zip(net.sections.name, keep, strict=True) if k),
        site=net.sections.site[keep],
        servers=net.sections.servers[keep],
        cpu_per_server=net.sections.cpu_per_server[keep],
    )
    world = replace(tiny, network=replace(net, sections=sections))
    t = Twin(world, short(world, hours=1)).run("none").totals  # type: ignore[arg-type]
    assert t.failed > 0.1 * t.requests
    assert t.served + t.failed == pytest.approx(t.requests, rel=1e-9)


def test_each_event_is_charged_what_it_cost_beyond_the_quiet_day(tiny: World) -> None:
    events = (
        "[{at: 20m, for: 20m, kind: servers_down, site: AKL, fraction: 1.0},"
        " {at: 80m, for: 20m, kind: site_dark, site: CHC}]"
    )
    c = Twin(tiny, short(tiny, events, hours=2)).compare()  # type: ignore[arg-type]
    assert [(e["sites"], e["receivers"]) for e in c.events] == [(["AKL"], []), (["CHC"], ["AKL"])]
    for m in ("none", "withdraw", "manager"):
        run, ref = c.runs[m], c.reference[m]
        assert ref.totals.failed == 0.0
        for r in (run, ref):  # the per-minute sums add up to the totals
            s = r.series
            assert s.failed_requests.sum() + s.unrouted_requests.sum() == pytest.approx(
                r.totals.failed
            )
            assert s.slo_minutes.sum() == pytest.approx(r.totals.slo_breach_total)
    a = c.attribution["none"]
    # AKL without servers fails its users until the event ends; CHC going dark costs
    # nothing (AKL, back by then, takes its users)
    assert a["excess_failed"] > 0
    first, second = a["events"]
    assert first["failed"] == pytest.approx(a["excess_failed"])
    assert first["failed_share"] == pytest.approx(1.0)
    assert (first["from_s"], first["to_s"]) == (1200.0, 2400.0 + 1800.0)
    assert second["failed"] == 0.0
    assert second["to_s"] == 7200.0  # the tail is cut at the end of the day
    assert a["elsewhere_failed"] == pytest.approx(0.0, abs=1.0)
    # the Traffic Manager moves AKL's users away: it costs less, and the sites that took
    # them count towards the event
    tm = c.attribution["manager"]["events"][0]
    assert tm["failed"] < 0.5 * first["failed"]
    assert c.runs["manager"].moved_to[0]
    assert set(c.runs["manager"].moved_to[0]) <= set(tm["sites"])
    summary = json.loads(json.dumps(c.summary()))
    assert set(summary["attribution"]) == {"none", "withdraw", "manager"}
    assert summary["reference"]["none"]["failed"] == 0.0


def test_a_day_without_events_runs_no_reference(tiny: World) -> None:
    c = Twin(tiny, short(tiny, hours=1)).compare()  # type: ignore[arg-type]
    assert c.reference == {}
    assert c.attribution == {}
    assert "attribution" not in c.summary()


def test_the_same_seed_gives_the_same_day(small_world: World) -> None:
    sc = short(small_world, hours=2)
    a = Twin(small_world, sc).run("manager")  # type: ignore[arg-type]
    b = Twin(small_world, sc).run("manager")  # type: ignore[arg-type]
    assert a.totals.as_dict() == b.totals.as_dict()
    np.testing.assert_array_equal(a.series.p95_ms, b.series.p95_ms)


def test_twins_on_one_world_compute_its_failover_shares_once(tiny: World) -> None:
    """The shares are a function of the world: a second twin on it (another scenario)
    takes the first one's, read-only; a world parsed again computes the same ones."""
    a = Twin(tiny, short(tiny, hours=1))  # type: ignore[arg-type]
    b = Twin(tiny, short(tiny, "[{at: 1h, for: 1h, kind: site_dark, site: CHC}]"))  # type: ignore[arg-type]
    assert b.failover is a.failover
    assert not a.failover.flags.writeable
    again = parse_world(TINY.read_text(), TINY)
    c = Twin(again, short(again, hours=1))  # type: ignore[arg-type]
    assert c.failover is not a.failover
    np.testing.assert_array_equal(c.failover, a.failover)
    chc, akl = tiny.network.sites.index("CHC"), tiny.network.sites.index("AKL")
    assert a.failover[chc, akl] > 0.5  # CHC's users go mostly to AKL


def test_bad_scenarios_name_the_place(tiny: World) -> None:
    with pytest.raises(InputError) as e:
        parse_scenario(
            "duration: 1h\nevents:\n  - {at: 1h, for: 1h, kind: site_dark, site: XXX}\n",
            tiny,
            "s.yaml",
        )
    assert "s.yaml:3: events[0].site: unknown site 'XXX'" in str(e.value)
    with pytest.raises(InputError) as e:
        parse_scenario("duration: soon\n", tiny, "s.yaml")
    assert "s.yaml:1: duration" in str(e.value)
    with pytest.raises(InputError) as e:
        parse_scenario(
            "events:\n  - {at: 1h, for: 1h, kind: cable_cut, between: [1001, 10002]}\n",
            tiny,
            "s.yaml",
        )
    assert "are not linked" in str(e.value)


def test_cli_simulate_json_on_a_small_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sc = tmp_path / "s.yaml"
    sc.write_text(
        "duration: 1h\nevents:\n  - {at: 10m, for: 20m, kind: site_dark, site: CHC}\n",
        encoding="utf-8",
    )
    rc = main(["simulate", str(sc), "-t", str(TINY), "--no-report", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    data = json.loads(out)
    assert set(data["runs"]) == {"none", "withdraw", "manager"}
    assert data["duration_s"] == 3600.0
    assert data["events"][0]["sites"] == ["CHC"]
    assert data["events"][0]["receivers"] == ["AKL"]
    for m in ("none", "withdraw", "manager"):
        att = data["attribution"][m]
        assert len(att["events"]) == 1
        assert {"failed", "slo_minutes", "failed_share", "slo_share", "sites"} <= set(
            att["events"][0]
        )
        assert att["reference_failed"] == data["reference"][m]["failed"]
        # what the controller did and the network over the hour, not only totals
        assert list(data["series"][m]) == list(NETWORK_FIELDS)
        assert len(data["series"][m]["time_s"]) == 60
        assert all(set(a) == set(ACTION_FIELDS) for a in data["actions"][m])
    assert data["actions"]["none"] == []
    assert data["start_utc_hour"] == 0.0
    rc = main(["simulate", str(tmp_path / "missing.yaml"), "-t", str(TINY), "--no-report"])
    assert rc == 2


@pytest.mark.slow
def test_the_default_world_without_events_fails_almost_nothing(
    default_world: World, default_day: Comparison
) -> None:
    quiet = default_day.reference["none"]  # no management, no events
    t = quiet.totals
    assert t.requests > 0
    assert t.failed / t.requests < 1e-4
    assert t.slo_breach_total == 0.0
    maximum = default_world.network.sites.thresholds[:, 0]
    worst = np.array([quiet.health[code] for code in default_world.network.sites.code])
    assert np.all(worst <= maximum)  # sized for its own peak, no site goes over its maximum


@pytest.mark.slow
def test_default_day_manager_beats_both_baselines(default_day: Comparison) -> None:
    c = default_day
    none, wd, tm = (c.runs[m].totals for m in ("none", "withdraw", "manager"))
    assert tm.failed < wd.failed
    assert tm.failed < none.failed
    assert tm.slo_breach_total < wd.slo_breach_total
    assert tm.slo_breach_total < none.slo_breach_total
    for t in (none, wd, tm):
        assert t.served + t.failed == pytest.approx(t.requests, rel=1e-9)
    assert c.learned  # thresholds learned from the day's samples
    assert all(0.5 <= float(x["value"]) <= 0.95 for x in c.learned)


@pytest.mark.slow
def test_the_docs_state_the_default_day_as_measured(default_day: Comparison) -> None:
    for mode, (failed_pct, slo) in default_day_in_docs().items():
        t = default_day.runs[mode].totals
        digits = 2 if failed_pct >= 0.01 else 1  # 0.177 %, 0.0014 %: two or three figures
        said = f"{failed_pct:.{digits + 1}g}"
        assert f"{100 * t.failed / t.requests:.{digits + 1}g}" == said, mode
        assert abs(t.slo_breach_total - slo) <= 0.51, mode  # whole minutes in the docs


@pytest.mark.slow
def test_every_default_event_matters(default_world: World, default_day: Comparison) -> None:
    c = default_day
    kinds = [e["kind"] for e in c.events]
    for e in c.events:
        assert e["sites"], e["what"]
        if e["kind"] in ("session_down", "cable_cut", "site_dark", "maintenance"):
            assert e["receivers"], f"{e['what']}: BGP moves no one"
    # the surge is at Brazil's evening peak: 21:00 local, about 00:00 UTC, closes it
    surge = c.events[kinds.index("surge")]
    inet = default_world.internet
    br = np.array(inet.metros.country)[inet.eyeballs.metro] == "BR"
    lon = inet.metros.lon[inet.eyeballs.metro[br]]
    local = (surge["until_s"] / 3600 + np.average(lon, weights=inet.eyeballs.rps[br]) / 15) % 24
    assert 20.5 <= local <= 21.5
    # without management the events make the failures and SLO breaches, not the world;
    # every event that hits capacity costs something
    a = c.attribution["none"]
    assert a["reference_failed"] / a["excess_failed"] < 1e-3
    assert a["elsewhere_failed"] == pytest.approx(0.0, abs=1e-6 * a["excess_failed"])
    cost = {e["kind"]: r for e, r in zip(c.events, a["events"], strict=True)}
    for kind in ("section_down", "servers_down", "surge"):
        assert cost[kind]["failed"] > 0, kind
    assert cost["session_down"]["slo_minutes"] > 0


@pytest.mark.slow
def test_the_default_report_shows_each_events_share(
    default_day: Comparison, default_day_run: DefaultDay
) -> None:
    page = default_day_run.report.read_text(encoding="utf-8")  # as `anyedge simulate` wrote it
    table = re.search(r'<table id="attribution-table">.*?</table>', page, re.S)
    assert table is not None
    rows = re.findall(r'<tr data-event="\d+">(.*?)</tr>', table.group(0), re.S)
    assert len(rows) == len(default_day.events)
    shares = [re.findall(r"<td[^>]*>[^<]*\((\d+) %\)</td>", r) for r in rows]
    assert all(s for s in shares)  # every event, a share under every controller
    # the sites of the events are charted
    charted = re.findall(r'<article class="card site" data-site="(\w+)">', page)
    for e in default_day.events:
        assert set(e["sites"]) & set(charted), e["what"]


def stated_cost(cell: str) -> tuple[float, float | None, float]:
    """``183 M (4 %), 0`` or ``0, 40``: failed requests, their share (%) and SLO minutes."""
    m = re.fullmatch(r"(?:([\d,.]+) M \((\d+) %\)|0), ([\d,]+)", cell.strip())
    assert m is not None, cell
    failed = float(m.group(1).replace(",", "")) * 1e6 if m.group(1) else 0.0
    share = float(m.group(2)) if m.group(2) else None
    return failed, share, float(m.group(3).replace(",", ""))


@pytest.mark.slow
def test_the_docs_state_each_events_cost_as_measured(default_day: Comparison) -> None:
    """docs/simulate.md's table of what each event cost, and the README's share of
    Brazil's surge, against the session's one run of the default day."""
    doc = (Path(__file__).parent.parent / "docs" / "simulate.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d\d:\d\d [^|]+?) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", doc, re.M)
    assert len(rows) == len(default_day.events)
    for row, event in zip(rows, default_day.events, strict=True):
        for i, mode in enumerate(("none", "withdraw", "manager")):
            failed, share, slo = stated_cost(row[i + 1])
            got = default_day.attribution[mode]["events"][default_day.events.index(event)]
            where = f"{row[0]}, {mode}"
            if failed == 0.0:
                assert got["failed"] < 0.5e6, where
            else:
                said = row[i + 1].split(" M")[0].replace(",", "")
                digits = len(said.split(".")[1]) if "." in said else 0
                assert round(got["failed"] / 1e6, digits) == float(said), where
                assert share == round(100 * got["failed_share"]), where
            assert abs(got["slo_minutes"] - slo) <= 0.51, where
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    m = re.search(
        r"Brazil's evening surge makes (\d+) % of the failures without management", readme
    )
    assert m is not None
    surge = [e["kind"] for e in default_day.events].index("surge")
    assert int(m.group(1)) == round(
        100 * default_day.attribution["none"]["events"][surge]["failed_share"]
    )


@pytest.mark.slow
def test_backbone_doc_states_the_default_days_origin_fetches(default_day: Comparison) -> None:
    """docs/backbone.md's origin fetches of the default day, against the session's run:
    the share over the backbone and the round trips per path choice, under every
    controller (the paths are the same; only where the misses land differs)."""
    doc = " ".join(
        (Path(__file__).parent.parent / "docs" / "backbone.md").read_text(encoding="utf-8").split()
    )
    m = re.search(
        r"On the default day \(no backbone events\): ([\d.]+) % of the fetches go over the "
        r"backbone, median/p90 ([\d.]+)/([\d.]+) ms against ([\d.]+)/([\d.]+) ms over transit",
        doc,
    )
    assert m is not None, "docs/backbone.md states the default day's origin fetches"
    share, *said = (float(x) for x in m.groups())
    for mode, run in default_day.runs.items():
        f = run.totals.origin_fetch
        assert f["fetches"] > 0, mode
        assert abs(100 * f["backbone_share"] - share) <= 0.2, mode
        got = [f["rtt_ms"][p][q] for p in ("backbone", "transit") for q in ("median", "p90")]
        assert np.allclose(got, said, atol=1.0), (mode, got)  # two 0.5 ms bins
        assert f["failed"] == 0.0, mode  # no path loses packets on the default day
