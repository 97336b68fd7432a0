"""Origin fetches in the twin: cache misses, Argo's path choice, Orpheus, the cut events.

The post's shapes on the default world: from Johannesburg the backbone is up to about
22 % faster than transit to the origins; Amsterdam–Singapore stays flat on the backbone
through an AAE-1-like cut while the transit paths spike.  Argo's rule over arrays is
checked against :class:`anyedge.backbone.Argo` itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyedge.backbone import Argo
from anyedge.errors import InputError
from anyedge.model.world import World
from anyedge.sim import Twin, parse_scenario
from anyedge.sim.fetch import (
    BACKBONE_SLOTS,
    DEFAULT_MISS,
    _choose,
    _measure,
    providers,
    simulate,
    tally,
)

STEP = 60.0
CUT = """
events:
  - {at: 2h, for: 4h, kind: subsea_cut, regions: [EU, AS], factor: 1.5,
     links: [[MRS, SIN], [MRS, BOM]]}
  - {at: 3h, for: 1h, kind: transit_congestion, site: AMS, asn: %d, factor: 2.0}
"""


def slot_medians(series: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Each candidate's median probed round trip over steps lo..hi (nan: no probes)."""
    x = series[lo:hi]
    out = np.full(x.shape[1], np.nan)
    for k in range(x.shape[1]):
        col = x[:, k][np.isfinite(x[:, k])]
        if col.size:
            out[k] = np.median(col)
    return out


# ------------------------------------------------------------------- Argo over arrays


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.floats(20.0, 200.0)),
        min_size=1,
        max_size=40,
    )
)
def test_argo_over_arrays_chooses_as_argo_does(steps: list[tuple[int, int, float]]) -> None:
    """Each step: one candidate's sample (or none), seconds apart by the first number."""
    ref = Argo(candidates=[0, 1, 2, 3])
    est = np.full((1, 4), np.nan)
    at = np.full((1, 4), -np.inf)
    cur = np.full(1, -1, dtype=np.int64)
    since = np.full(1, -np.inf)
    now, switches = 0.0, 0
    for gap, k, rtt in steps:
        now += 5.0 * gap + 1.0
        got = np.zeros((1, 4), dtype=np.bool_)
        got[0, k] = True
        ref.measure(k, rtt, now)
        est, at = _measure(est, at, got, np.full((1, 4), rtt), now, ref)
        want = ref.choose(now)
        cur, since, n = _choose(est, at, cur, since, now, ref)
        switches += n
        assert int(cur[0]) == want
    assert switches == ref.switches


# --------------------------------------------------------------------------- scenarios


def test_scenario_errors_name_the_place(default_world: World) -> None:
    cases = {
        "{at: 1h, for: 1h, kind: subsea_cut, regions: [EU, XX]}": "events[0].regions",
        "{at: 1h, for: 1h, kind: subsea_cut, regions: [EU, AS], links: [[AMS, SYD]]}": (
            "AMS-SYD is not a backbone link"
        ),
        "{at: 1h, for: 1h, kind: transit_congestion, site: AMS, asn: 10358}": (
            "AS10358 is not a transit provider of AMS"
        ),
        "{at: 1h, for: 1h, kind: transit_congestion, site: AMS, asn: 2015, loss: 2}": "loss",
    }
    for event, words in cases.items():
        with pytest.raises(InputError) as err:
            parse_scenario(f"events:\n  - {event}\n", default_world, "s.yaml")
        assert words in str(err.value), str(err.value)
        assert "s.yaml:2" in str(err.value), str(err.value)
    with pytest.raises(InputError, match=r"s.yaml:1: cache_miss.gold: unknown plan"):
        parse_scenario("cache_miss: {gold: 0.2}\n", default_world, "s.yaml")


def test_cli_refuses_a_bad_cut_with_status_2(
    default_world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from anyedge.cli import simulate as cli_simulate
    from anyedge.cli.main import main

    monkeypatch.setattr(cli_simulate, "world_from", lambda _t: default_world)
    bad = tmp_path / "cut.yaml"
    bad.write_text("events:\n  - {at: 1h, for: 1h, kind: subsea_cut, regions: [EU]}\n")
    report = tmp_path / "r.html"
    assert main(["simulate", str(bad), "--report", str(report)]) == 2
    assert "cut.yaml:2: events[0].regions" in capsys.readouterr().err
    assert not report.exists()


# ------------------------------------------------------------------- the post's shapes


def test_johannesburg_backbone_up_to_about_22_percent_faster(default_world: World) -> None:
    w = default_world
    jnb = w.network.sites.index("JNB")
    origins = range(len(w.backbone.origins))
    f = simulate(w, (), 1, STEP, 60, watch=[(jnb, o) for o in origins])
    gain = {}
    for o in origins:
        med = slot_medians(f.series(jnb, o), 0, 60)
        backbone = np.fmin.reduce(med[:BACKBONE_SLOTS])  # nan: no backbone candidate
        transit = np.fmin.reduce(med[BACKBONE_SLOTS:])
        gain[w.backbone.origins.name[o]] = 1 - backbone / transit if backbone < transit else 0.0
    best = max(gain, key=lambda k: gain[k])
    assert 0.19 <= gain[best] <= 0.25, gain  # the post: up to 22 %
    assert gain["eu-lisbon"] > 0.15, gain
    # Sydney: direct transit about as good as the backbone (1.2 % on the calibrated world,
    # whose sites and transit providers differ from the uncalibrated one's, where the
    # backbone was slower), inside Argo's margin: it keeps transit all along
    assert gain["ap-sydney"] < 0.05, gain
    syd = w.backbone.origins.index("ap-sydney")
    assert not f.backbone[5:, f.pair(jnb, syd)].any()
    # Argo takes the backbone where it is faster: every step for the best origin
    assert f.backbone[5:, f.pair(jnb, w.backbone.origins.index(best))].all()


def test_amsterdam_singapore_flat_on_the_backbone_through_the_cut(default_world: World) -> None:
    w = default_world
    ams, o = w.network.sites.index("AMS"), w.backbone.origins.index("ap-singapore")
    asn = int(providers(w.network.sessions, len(w.network.sites))[ams, 0])
    sc = parse_scenario(CUT % asn, w)
    f = simulate(w, sc.events, 1, STEP, 8 * 60, watch=[(ams, o)])
    x = f.series(ams, o)
    before, cut, congested = (
        slot_medians(x, 30, 120),
        slot_medians(x, 130, 180),
        slot_medians(x, 190, 240),
    )
    after = slot_medians(x, 370, 480)
    home = 0  # the backbone all the way to Singapore
    assert 140 <= before[home] <= 220
    assert 140 <= cut[home] <= 220
    assert cut[home] / before[home] < 1.15  # flat: rerouted around the cut, under 15 %
    transit = slice(BACKBONE_SLOTS, None)
    assert (cut[transit] / before[transit] >= 1.4).all()  # every transit path spikes
    assert congested[BACKBONE_SLOTS] / before[BACKBONE_SLOTS] >= 2.5  # the congested one more
    p = f.pair(ams, o)
    assert not f.backbone[30:120, p].all()  # before the cut, transit is as good
    assert f.backbone[125:360, p].all()  # through the cut Argo keeps to the backbone
    assert (
        after[transit] / before[transit] < 1.1
    ).all()  # healed    assert (f.rtt_ms[125:360, p] < 0.9 * np.nanmin(cut[transit])).all()
    # the cut is between Europe and Asia: Amsterdam's fetches from London do not change
    ldn = f.pair(ams, w.backbone.origins.index("eu-london"))
    assert np.median(f.rtt_ms[130:180, ldn]) == pytest.approx(np.median(f.rtt_ms[30:120, ldn]))


def test_orpheus_moves_fetches_off_a_failing_provider(default_world: World) -> None:
    """All of a provider's packets lost at AMS for half an hour: Orpheus moves every
    origin's fetches off it within seconds; Argo alone only once its estimate is stale."""
    w = default_world
    ams = w.network.sites.index("AMS")
    o = w.backbone.origins.index("eu-london")
    quiet = simulate(w, (), 1, STEP, 10)
    p = quiet.pair(ams, o)
    k = int(quiet.used[9, p])  # London from Amsterdam: direct transit, this provider
    assert k >= BACKBONE_SLOTS
    asn = int(providers(w.network.sessions, len(w.network.sites))[ams, k - BACKBONE_SLOTS])
    sc = parse_scenario(
        f"events:\n  - {{at: 10m, for: 30m, kind: transit_congestion, site: AMS, asn: {asn},"
        " factor: 1, loss: 1}\n",
        w,
    )
    f = simulate(w, sc.events, 1, STEP, 60)
    misses = np.zeros((60, f.sites))
    misses[:, ams] = 1000.0
    t = tally(f, misses)
    assert t["orpheus_failovers"] >= 1
    assert t["failed_without_orpheus"] > 0
    assert t["failed"] < 0.15 * t["failed_without_orpheus"], t
    assert t["failures_avoided"] == pytest.approx(t["failed_without_orpheus"] - t["failed"])
    assert (f.used[:10, p] == k).all()
    assert (f.used[11:40, p] != k).all()  # fetched over another path meanwhile
    assert (f.used[11:40, p] >= 0).all()
    late = [share.sum() for i, (_idx, share, _no) in f.failures.items() if i > 10]
    assert sum(late) == 0  # with Orpheus, nothing fails after the first minute


# ------------------------------------------------------------------- in the twin's day


@pytest.fixture(scope="module")
def day(default_world: World) -> dict[str, dict[str, object]]:
    sc = parse_scenario(
        "duration: 2h\ntick: 60s\ncache_miss: {enterprise: 0.3}\nevents:\n"
        "  - {at: 30m, for: 1h, kind: subsea_cut, regions: [EU, AS], factor: 1.5}\n",
        default_world,
    )
    twin = Twin(default_world, sc)
    run = twin.run("none")
    return {"totals": run.totals.as_dict(), "twin": {"twin": twin}}


def test_the_day_reports_origin_fetches_per_path_choice(
    day: dict[str, dict[str, object]], default_world: World
) -> None:
    totals = day["totals"]
    f = totals["origin_fetch"]
    assert isinstance(f, dict)
    plans = default_world.network.plans
    miss = np.array([0.3 if n == "enterprise" else DEFAULT_MISS for n in plans.names])
    # a share of what the sites served, by plan: between the lowest and highest share
    served = float(totals["requests"]) - float(totals["failed"])  # type: ignore[arg-type]
    assert miss.min() * served < f["fetches"] < miss.max() * served
    assert f["fetches"] == pytest.approx(served * float(plans.share @ miss), rel=0.05)
    assert 0.2 < f["backbone_share"] < 0.9
    for path in ("backbone", "transit"):
        q = f["rtt_ms"][path]
        assert 0 < q["median"] <= q["p90"] < 1000
    json.dumps(totals)  # plain data, as --json prints it


def test_too_many_fetch_cells_are_skipped_with_the_reason(
    day: dict[str, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from anyedge.sim import engine

    monkeypatch.setattr(engine, "MAX_FETCH_CELLS", 1000)
    twin = day["twin"]["twin"]
    assert isinstance(twin, Twin)
    quiet = twin.without_events()  # its paths are not computed yet
    totals = quiet.run("none").totals.as_dict()
    assert totals["origin_fetch"] == {
        "skipped": "300 sites × 12 origins × 120 steps is 432,000 (site, origin, step) "
        "cells, more than 1,000"
    }
