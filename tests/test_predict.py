"""The Traffic Predictor: known answers on a hand-built line of sites, then the default world.

The hand-built world is four sites on the equator, west to east: AAA (lon 0), BBB (4),
CCC (10, a multi-colo site of two sections) and DDD (18).  Each city has an access ISP
that peers with its own site; transit 2001 sells transit to AAA, BBB and CCC, transit
2002 to CCC and DDD, and the two transits peer.  Bravo has a second ISP (10005, a
pro-heavy plan mix) that buys only from 2002; Delta's ISP (10004) buys no transit at all.
So a failed site's users go, through their transit, to the nearest site that transit
still reaches (hot potato), and Delta's users have nowhere else to go.  Delta's second
ISP (10006) has no route at all, whatever fails.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from anyedge.errors import InputError
from anyedge.model import World
from anyedge.model.files import parse_world
from anyedge.model.geo import great_circle_km
from anyedge.model.network import SiteKind
from anyedge.predict import (
    Atlas,
    Outcome,
    Predictor,
    Scenario,
    atlas_scenarios,
    build_atlas,
    nearest_sites,
    run_local,
    run_serial,
)
from anyedge.routing import Announcement, Router

LINE = """
asn: 64500
plans:
  - {name: free, share: 0.5, cpu_ms_per_request: 1.0}
  - {name: pro, share: 0.5, cpu_ms_per_request: 2.0}
sites:
  - {code: AAA, city: Alpha, country: EC, lat: 0.0, lon: 0.0, transit: [2001], peers: [10001],
     thresholds: {maximum: 0.8, target: 0.7, acceptable: 0.6},
     sections: [{name: AAA01, servers: 1, cpu_per_server: AAA_CPU}]}
  - {code: BBB, city: Bravo, country: EC, lat: 0.0, lon: 4.0, transit: [2001],
     peers: [10002, 10005], sections: [{name: BBB01, servers: 1, cpu_per_server: 40000}]}
  - {code: CCC, city: Charlie, country: EC, lat: 0.0, lon: 10.0, kind: mcp,
     transit: [2001, 2002], peers: [10003],
     sections: [{name: CCC01, servers: 7, cpu_per_server: 5000},
                {name: CCC02, servers: 7, cpu_per_server: 5000}]}
  - {code: DDD, city: Delta, country: EC, lat: 0.0, lon: 18.0, transit: [2002], peers: [10004],
     sections: [{name: DDD01, servers: 1, cpu_per_server: 40000}]}
prefixes:
  - {cidr: 198.51.100.0/24, sites: all}
internet:
  relations: ["2001|2002|0", "2001|10001|-1", "2001|10002|-1", "2002|10005|-1",
              "2001|10003|-1"]
  ases:
    - {asn: 2001, kind: transit, metros: [1, 2, 3, 4]}
    - {asn: 2002, kind: transit, metros: [1, 2, 3, 4]}
    - {asn: 10004, kind: access}
    - {asn: 10006, kind: access}
  metros:
    - {id: 1, name: Alpha, country: EC, lat: 0.0, lon: 0.0, population: 1000}
    - {id: 2, name: Bravo, country: EC, lat: 0.0, lon: 4.0, population: 1000}
    - {id: 3, name: Charlie, country: EC, lat: 0.0, lon: 10.0, population: 1000}
    - {id: 4, name: Delta, country: EC, lat: 0.0, lon: 18.0, population: 1000}
  eyeballs:
    - {asn: 10001, metro: 1, rps: 10000}
    - {asn: 10002, metro: 2, rps: 20000}
    - {asn: 10005, metro: 2, rps: 5000, mix: [0.2, 0.8]}
    - {asn: 10003, metro: 3, rps: 30000}
    - {asn: 10004, metro: 4, rps: 8000}
    - {asn: 10006, metro: 4, rps: 1000}
"""

DEFAULT_COST = 1.5  # ms per request with the default mix (0.5 x 1.0 + 0.5 x 2.0)
PRO_COST = 1.8  # 10005's mix: 0.2 x 1.0 + 0.8 x 2.0
BASE_CPU = {"AAA": 15000.0, "BBB": 20000 * 1.5 + 5000 * 1.8, "CCC": 45000.0, "DDD": 12000.0}
CAPACITY = {"AAA": 30000.0, "BBB": 40000.0, "CCC": 70000.0, "DDD": 40000.0}


def line_world(aaa_cpu: int = 30000) -> World:
    return parse_world(LINE.replace("AAA_CPU", str(aaa_cpu)))


@pytest.fixture(scope="module")
def line() -> World:
    return line_world()


@pytest.fixture(scope="module")
def lp(line: World) -> Predictor:
    return Predictor(line)


def fails(world: World, *codes: str) -> Scenario:
    rows = tuple(sorted(world.network.sites.index(c) for c in codes))
    return Scenario({1: "single", 2: "pair"}.get(len(rows), "region"), rows)


def by_code(world: World, d: dict[int, float]) -> dict[str, float]:
    return {world.network.sites.code[s]: v for s, v in d.items()}


def code_row(world: World, code: str) -> int:
    return world.network.sites.index(code)


# ------------------------------------------------------------- hand-built line of sites


def test_line_base_catchment_and_load(line: World, lp: Predictor) -> None:
    codes = line.network.sites.code
    e = line.internet.eyeballs
    asn = line.internet.asn[e.as_].tolist()
    assert asn == [10001, 10002, 10003, 10004, 10005, 10006]  # eyeball rows, by ASN
    assert [codes[s] for s in lp.base.eyeball_site[:5]] == ["AAA", "BBB", "CCC", "DDD", "BBB"]
    assert lp.base.eyeball_site[5] == -1
    assert lp.base.unreached_demand() == 1000.0
    assert by_code(line, dict(enumerate(lp.base_cpu.tolist()))) == pytest.approx(BASE_CPU)
    assert by_code(line, dict(enumerate(lp.capacity.tolist()))) == CAPACITY
    assert lp.maximum.tolist() == [0.8, 0.9, 0.9, 0.9]
    np.testing.assert_allclose(
        line.eyeball_cpu() / e.rps,
        [DEFAULT_COST, DEFAULT_COST, DEFAULT_COST, DEFAULT_COST, PRO_COST, DEFAULT_COST],
    )


@pytest.mark.parametrize(
    ("failed", "moved"),
    [
        # Alpha's ISP goes up to 2001, whose nearest remaining customer site is BBB
        (("AAA",), {"BBB": 10000.0}),
        # Bravo: 10002 via 2001 to AAA (4 degrees, not CCC at 6); 10005 via 2002 to CCC
        (("BBB",), {"AAA": 20000.0, "CCC": 5000.0}),
        (("CCC",), {"BBB": 30000.0}),
        (("AAA", "BBB"), {"CCC": 35000.0}),
        (("BBB", "CCC"), {"AAA": 50000.0, "DDD": 5000.0}),
        (("AAA", "CCC"), {"BBB": 40000.0}),
        # 2001 has no customer site left: its peer 2002 takes everyone to DDD
        (("AAA", "BBB", "CCC"), {"DDD": 65000.0}),
    ],
)
def test_line_failures_move_users_to_the_expected_sites(
    line: World, lp: Predictor, failed: tuple[str, ...], moved: dict[str, float]
) -> None:
    o = lp.outcome(fails(line, *failed))
    total = sum(moved.values())
    assert o.failed_rps == total
    assert by_code(line, o.moved_to) == moved
    assert by_code(line, o.shares()) == pytest.approx({s: r / total for s, r in moved.items()})
    assert o.unreached_rps == 0.0
    assert o.collateral_rps == 0.0
    assert o.capacity_delta == {}


def test_line_single_failure_shares_are_exact(line: World, lp: Predictor) -> None:
    o = lp.outcome(fails(line, "BBB"))
    assert by_code(line, o.shares()) == {"AAA": 0.8, "CCC": 0.2}


def test_line_failure_with_nowhere_else_to_go_is_unreached(line: World, lp: Predictor) -> None:
    o = lp.outcome(fails(line, "DDD"))
    assert o.failed_rps == 8000.0
    assert o.unreached_rps == 8000.0
    assert o.moved_to == {}
    assert o.shares() == {}
    assert by_code(line, o.cpu_delta) == {"DDD": -12000.0}
    # a pair with DDD: CCC's users move, DDD's are lost
    o = lp.outcome(fails(line, "CCC", "DDD"))
    assert o.failed_rps == 38000.0
    assert o.unreached_rps == 8000.0
    assert by_code(line, o.moved_to) == {"BBB": 30000.0}
    assert sum(o.shares().values()) + o.unreached_rps / o.failed_rps == 1.0
    assert by_code(line, o.cpu_delta) == {"BBB": 45000.0, "CCC": -45000.0, "DDD": -12000.0}


def test_line_receivers_cpu_is_before_plus_moved_rps_times_plan_cost(
    line: World, lp: Predictor
) -> None:
    sc = fails(line, "BBB")
    o = lp.outcome(sc)
    cpu, cap = lp.load_after(o)
    aaa, bbb, ccc = (code_row(line, c) for c in ("AAA", "BBB", "CCC"))
    assert cpu[aaa] == pytest.approx(BASE_CPU["AAA"] + 20000 * DEFAULT_COST)
    assert cpu[ccc] == pytest.approx(BASE_CPU["CCC"] + 5000 * PRO_COST)
    assert cpu[bbb] == 0.0
    np.testing.assert_array_equal(cap, lp.capacity)
    # the same from the eyeballs: each receiver gets the CPU of the eyeballs it now serves
    after = lp.catchment(sc).eyeball_site
    before = lp.base.eyeball_site
    e_cpu = line.eyeball_cpu()
    for s, rps in o.moved_to.items():
        mine = (before == bbb) & (after == s)
        assert float(line.internet.eyeballs.rps[mine].sum()) == rps
        assert cpu[s] == pytest.approx(lp.base_cpu[s] + e_cpu[mine].sum())
        assert o.cpu_delta[s] == pytest.approx(e_cpu[mine].sum())
    assert o.cpu_delta[bbb] == pytest.approx(-BASE_CPU["BBB"])


def test_line_overload_flagged_only_above_the_maximum_threshold(line: World, lp: Predictor) -> None:
    # BBB fails: AAA (30,000 ms/s, maximum 0.8: 24,000) goes from 15,000 to 45,000;
    # CCC (70,000, maximum 0.9: 63,000) from 45,000 to 54,000
    o = lp.outcome(fails(line, "BBB"))
    aaa = code_row(line, "AAA")
    excess, worst, over = lp.risk(o)
    assert over == [aaa]
    assert excess == pytest.approx(45000.0 - 24000.0)
    assert worst == pytest.approx(45000.0 / 30000.0)
    atlas = Atlas.build(lp, [o], k=2)
    rows = {r.site: r for r in atlas.scenarios[0].receivers}
    assert set(rows) == {"AAA", "CCC"}
    assert rows["AAA"].overloaded
    assert rows["AAA"].cpu_after == pytest.approx(45000.0)
    assert rows["AAA"].utilisation_after == pytest.approx(1.5)
    assert not rows["CCC"].overloaded
    assert rows["CCC"].cpu_after == pytest.approx(54000.0)
    assert rows["CCC"].utilisation_after == pytest.approx(54000.0 / 70000.0)
    assert atlas.scenarios[0].excess_cpu == pytest.approx(21000.0)
    assert atlas.data.riskiest == ["BBB"]


@pytest.mark.parametrize(
    ("aaa_cpu", "excess"),
    [
        (60000, 0.0),  # maximum 48,000 > 45,000
        (56250, 0.0),  # maximum exactly 45,000: at the threshold is not above it
        (50000, 5000.0),  # maximum 40,000
    ],
)
def test_line_overload_threshold_boundary(aaa_cpu: int, excess: float) -> None:
    w = line_world(aaa_cpu)
    p = Predictor(w)
    got, _, over = p.risk(p.outcome(fails(w, "BBB")))
    assert got == pytest.approx(excess)
    assert over == ([code_row(w, "AAA")] if excess else [])


def test_line_excess_counts_only_what_the_failure_adds() -> None:
    # AAA at 15,000 ms/s with 15,000 of capacity is 3,000 over its maximum (12,000)
    # before anything fails; BBB's 30,000 ms/s all land above it
    w = line_world(15000)
    p = Predictor(w)
    excess, worst, over = p.risk(p.outcome(fails(w, "BBB")))
    assert excess == pytest.approx(30000.0)
    assert worst == pytest.approx(3.0)
    assert over == [code_row(w, "AAA")]
    # a failure that sends AAA nothing does not count AAA's own overload; BBB (39,000
    # ms/s, maximum 36,000) is over already too, and gets CCC's 45,000 on top
    assert BASE_CPU["BBB"] - 0.9 * CAPACITY["BBB"] == pytest.approx(3000.0)
    excess, worst, over = p.risk(p.outcome(fails(w, "CCC")))
    assert over == [code_row(w, "BBB")]
    assert excess == pytest.approx(45000.0)
    assert worst == pytest.approx((39000.0 + 45000.0) / 40000.0)
    # nothing moves in the none scenario: no risk, however overloaded the sites are
    assert p.risk(p.outcome(Scenario("none"))) == (0.0, 0.0, [])


def test_line_section_failure_shrinks_the_site(line: World, lp: Predictor) -> None:
    sec = line.network.sections
    j = sec.name.index("CCC02")
    ccc = code_row(line, "CCC")
    sc = Scenario("section", (), j)
    assert sc.name(line) == "CCC02"
    assert lp.catchment(sc) is lp.base
    o = lp.outcome(sc)
    assert o.failed_rps == 0.0
    assert o.moved_to == {}
    assert o.unreached_rps == 0.0
    assert o.cpu_delta == {}
    assert o.capacity_delta == {ccc: float(sec.capacity[j])} == {ccc: 35000.0}
    cpu, cap = lp.load_after(o)
    np.testing.assert_array_equal(cpu, lp.base_cpu)
    assert cap[ccc] == 35000.0
    before = lp.utilisation(lp.base_cpu, lp.capacity)[ccc]
    after = lp.utilisation(cpu, cap)[ccc]
    assert before == pytest.approx(45000.0 / 70000.0)
    assert after == pytest.approx(45000.0 / 35000.0)
    # 45,000 ms/s on 35,000: 13,500 above the maximum (0.9 x 35,000 = 31,500)
    excess, worst, over = lp.risk(o)
    assert (excess, over) == (pytest.approx(13500.0), [ccc])
    assert worst == pytest.approx(after)
    (row,) = Atlas.build(lp, [o], k=2).scenarios
    assert (row.kind, row.section, row.failed, row.to) == ("section", "CCC02", [], [])
    (r,) = row.receivers
    assert (r.site, r.capacity_before, r.capacity, r.overloaded) == ("CCC", 70000.0, 35000.0, True)


def test_line_atlas_scenarios_and_nearest(line: World) -> None:
    assert nearest_sites(line, 3).tolist() == [[1, 2, 3], [0, 2, 3], [1, 3, 0], [2, 1, 0]]
    assert nearest_sites(line, 9).shape == (4, 3)
    assert nearest_sites(line, 0).shape == (4, 0)
    sec = line.network.sections.name
    got = atlas_scenarios(line, 2)
    assert got == [
        *(Scenario("single", (i,)) for i in range(4)),
        *(Scenario("pair", p) for p in [(0, 1), (0, 2), (1, 2), (2, 3), (1, 3)]),
        Scenario("region", (0, 1, 2)),
        Scenario("region", (1, 2, 3)),
        Scenario("section", (), sec.index("CCC01")),
        Scenario("section", (), sec.index("CCC02")),
    ]
    # with k = 1 every region is a pair already; with k = 0 only singles are left
    assert Counter(s.kind for s in atlas_scenarios(line, 1)) == {
        "single": 4,
        "pair": 3,
        "section": 2,
    }
    assert atlas_scenarios(line, 0, sections=False) == [Scenario("single", (i,)) for i in range(4)]


def test_line_atlas_ranks_the_riskiest(line: World, lp: Predictor) -> None:
    atlas = build_atlas(line, k=2, jobs=1, predictor=lp)
    excess = {sc.name: sc.excess_cpu for sc in atlas.scenarios}
    assert excess == pytest.approx(
        {
            "AAA": 15000.0,
            "BBB": 21000.0,
            "CCC": 45000.0,
            "DDD": 0.0,
            "AAA+BBB": 36000.0,
            "AAA+CCC": 60000.0,
            "BBB+CCC": 66000.0,
            "CCC+DDD": 45000.0,
            "BBB+DDD": 21000.0,
            "AAA+BBB+CCC": 75000.0,
            "BBB+CCC+DDD": 75000.0,
            "CCC01": 13500.0,
            "CCC02": 13500.0,
        }
    )
    # by excess, then worst utilisation (AAA at 3.3 beats DDD at 2.775), then name
    assert atlas.data.riskiest == [
        "BBB+CCC+DDD",
        "AAA+BBB+CCC",
        "BBB+CCC",
        "AAA+CCC",
        "CCC",
        "CCC+DDD",
        "AAA+BBB",
        "BBB",
        "BBB+DDD",
        "AAA",
        "CCC01",
        "CCC02",
    ]
    bbb = atlas.single("BBB")
    assert [(f.site, f.rps, f.share) for f in bbb.to] == [
        ("AAA", 20000.0, 0.8),
        ("CCC", 5000.0, 0.2),
    ]
    assert atlas.summary() == {
        "prefix": "198.51.100.0/24",
        "scenarios": 13,
        "by_kind": {"single": 4, "pair": 5, "region": 2, "section": 2},
        "overloading": 12,
        "riskiest": atlas.data.riskiest[:10],
    }


# ----------------------------------------------------------------- the default world


def expected_outcome(world: World, before: np.ndarray, after: np.ndarray, sc: Scenario) -> Outcome:
    """The outcome of ``sc`` recomputed from two site-per-eyeball arrays."""
    rps = world.internet.eyeballs.rps
    e_cpu = world.eyeball_cpu()
    failed = np.zeros(before.size, dtype=bool)
    for f in sc.failed:
        failed |= before == f
    moved: dict[int, float] = {}
    for i in np.flatnonzero(failed & (after >= 0)):
        moved[int(after[i])] = moved.get(int(after[i]), 0.0) + float(rps[i])
    delta: dict[int, float] = {}
    for i in np.flatnonzero(after != before):
        if before[i] >= 0:
            delta[int(before[i])] = delta.get(int(before[i]), 0.0) - float(e_cpu[i])
        if after[i] >= 0:
            delta[int(after[i])] = delta.get(int(after[i]), 0.0) + float(e_cpu[i])
    return Outcome(
        scenario=sc,
        failed_rps=float(rps[failed].sum()),
        moved_to=moved,
        unreached_rps=float(rps[failed & (after < 0)].sum()),
        collateral_rps=float(rps[(after != before) & ~failed].sum()),
        cpu_delta={s: d for s, d in delta.items() if abs(d) > 1e-9},
    )


@pytest.fixture(scope="module")
def dp(default_world: World) -> Predictor:
    return Predictor(default_world)


@pytest.fixture(scope="module")
def all_scenarios(default_world: World) -> list[Scenario]:
    return atlas_scenarios(default_world, 5)


@pytest.fixture(scope="module")
def sample(
    default_world: World, dp: Predictor, all_scenarios: list[Scenario]
) -> list[tuple[Scenario, Outcome]]:
    """Every 10th scenario of the atlas and the singles of CHC, AKL and LHR, with outcomes."""
    idx = default_world.network.sites.index
    picked = all_scenarios[::10] + [Scenario("single", (idx(c),)) for c in ("CHC", "AKL", "LHR")]
    picked = list(dict.fromkeys(picked))
    return list(zip(picked, run_serial(dp, picked), strict=True))


def test_sample_covers_every_kind(sample: list[tuple[Scenario, Outcome]]) -> None:
    assert {sc.kind for sc, _ in sample} == {"single", "pair", "region", "section"}
    assert len(sample) > 150


def test_default_shares_and_unreached_add_up(
    default_world: World, sample: list[tuple[Scenario, Outcome]]
) -> None:
    total = default_world.peak_demand_rps()
    checked = 0
    for sc, o in sample:
        assert o.scenario == sc
        if sc.kind == "section":
            continue
        assert 0 < o.failed_rps < total
        shares = o.shares()
        assert all(s > 0 for s in shares.values())
        assert sum(shares.values()) + o.unreached_rps / o.failed_rps == pytest.approx(1, abs=1e-9)
        assert sum(o.moved_to.values()) + o.unreached_rps == pytest.approx(o.failed_rps)
        checked += 1
    assert checked > 100


def test_default_failed_sites_receive_nothing(
    dp: Predictor, sample: list[tuple[Scenario, Outcome]]
) -> None:
    for sc, o in sample:
        failed = set(sc.failed)
        assert not failed & set(o.moved_to), sc
        assert all(o.cpu_delta[s] < 0 for s in failed if s in o.cpu_delta), sc
        cpu, _ = dp.load_after(o)
        assert np.all(np.abs(cpu[list(failed)]) < 1e-6), sc
        assert not failed & set(dp.risk(o)[2]), sc
        atlas = Atlas.build(dp, [o], k=5)
        names = {dp.world.network.sites.code[s] for s in failed}
        assert not names & {r.site for r in atlas.scenarios[0].receivers}, sc
        assert not names & {f.site for f in atlas.scenarios[0].to}, sc


def test_default_cpu_is_conserved(
    default_world: World, dp: Predictor, sample: list[tuple[Scenario, Outcome]]
) -> None:
    e_cpu = default_world.eyeball_cpu()
    for sc, o in sample:
        moved = sum(o.cpu_delta.values())
        if o.unreached_rps == 0:
            assert moved == pytest.approx(0.0, abs=1e-6 * e_cpu.sum()), sc
        else:
            lost = (dp.catchment(sc).eyeball_site < 0) & (dp.base.eyeball_site >= 0)
            assert moved == pytest.approx(-float(e_cpu[lost].sum())), sc
        # what the failed sites lose is their whole base load
        for s in sc.failed:
            assert o.cpu_delta.get(s, 0.0) == pytest.approx(-dp.base_cpu[s]), sc


def test_default_none_scenario_is_the_plain_catchment(default_world: World, dp: Predictor) -> None:
    sc = Scenario("none")
    assert sc.name(default_world) == "none"
    o = dp.outcome(sc)
    assert o == Outcome(sc, 0.0, {}, 0.0, 0.0, {}, {})
    assert o.shares() == {}
    assert dp.risk(o) == (0.0, 0.0, [])
    plain = Router(default_world).catchment(Announcement.of_prefix(default_world.network, 0))
    np.testing.assert_array_equal(dp.catchment(sc).eyeball_site, plain.eyeball_site)
    np.testing.assert_array_equal(
        dp.base_cpu,
        np.bincount(
            plain.eyeball_site,
            weights=default_world.eyeball_cpu(),
            minlength=len(default_world.network.sites),
        ),
    )


def test_default_outcomes_equal_a_fresh_catchment(
    default_world: World, dp: Predictor, sample: list[tuple[Scenario, Outcome]]
) -> None:
    router = Router(default_world)
    ann = Announcement.of_prefix(default_world.network, 0)
    before = router.catchment(ann).eyeball_site
    # a fresh propagation costs what the incremental one saves: every third of the
    # sample (single, pair and region scenarios all among them) and the named singles
    checked = [(sc, o) for sc, o in sample[:-3:3] + sample[-3:] if sc.kind != "section"]
    assert {sc.kind for sc, _ in checked} == {"single", "pair", "region"}
    for sc, o in checked:
        fresh = router.catchment(ann.withdraw(*sc.failed)).eyeball_site
        np.testing.assert_array_equal(dp.catchment(sc).eyeball_site, fresh, err_msg=str(sc))
        want = expected_outcome(default_world, before, fresh, sc)
        assert o.failed_rps == pytest.approx(want.failed_rps), sc
        assert o.moved_to == pytest.approx(want.moved_to), sc
        assert o.unreached_rps == pytest.approx(want.unreached_rps), sc
        assert o.collateral_rps == pytest.approx(want.collateral_rps), sc
        assert set(o.cpu_delta) == set(want.cpu_delta), sc
        assert o.cpu_delta == pytest.approx(want.cpu_delta), sc
        assert o.capacity_delta == {}


def test_default_christchurch_fails_over_to_auckland(default_world: World, dp: Predictor) -> None:
    codes = default_world.network.sites.code
    o = dp.outcome(Scenario("single", (codes.index("CHC"),)))
    assert o.failed_rps > 0
    shares = by_code(default_world, o.shares())
    top = max(shares, key=shares.__getitem__)
    assert top == "AKL"
    assert shares["AKL"] > 0.99


# ----------------------------------------------------------------------- scenarios


def test_atlas_scenarios_of_the_default_world(
    default_world: World, all_scenarios: list[Scenario]
) -> None:
    sites, sec = default_world.network.sites, default_world.network.sections
    n = len(sites)
    kinds = [s.kind for s in all_scenarios]
    # singles, then pairs, then regions, then sections
    assert kinds == sorted(kinds, key=["single", "pair", "region", "section"].index)
    by_kind: dict[str, list[Scenario]] = {}
    for s in all_scenarios:
        by_kind.setdefault(s.kind, []).append(s)
    assert by_kind["single"] == [Scenario("single", (i,)) for i in range(n)]
    assert n == 300
    near = nearest_sites(default_world, 5)
    pairs = [s.failed for s in by_kind["pair"]]
    assert all(len(p) == 2 and p[0] < p[1] for p in pairs)
    assert len(set(pairs)) == len(pairs)
    assert set(pairs) == {tuple(sorted((i, int(j)))) for i in range(n) for j in near[i]}
    regions = [s.failed for s in by_kind["region"]]
    assert all(len(r) == 6 and list(r) == sorted(r) for r in regions)
    assert len(set(regions)) == len(regions)
    assert set(regions) == {tuple(sorted({i, *near[i].tolist()})) for i in range(n)}
    singles = {s.failed for s in by_kind["single"]}
    assert not (set(pairs) | set(regions)) & singles
    assert all(s.section == -1 for s in all_scenarios if s.kind != "section")
    sections = [s.section for s in by_kind["section"]]
    assert all(s.failed == () for s in by_kind["section"])
    mcp = [j for j in range(len(sec)) if sites.kind[sec.site[j]] == SiteKind.MCP]
    assert sections == mcp
    assert len(sections) > 0
    assert len(all_scenarios) == n + len(set(pairs)) + len(set(regions)) + len(mcp)
    assert atlas_scenarios(default_world, 5, sections=False) == [
        s for s in all_scenarios if s.kind != "section"
    ]


def test_nearest_sites_are_the_nearest_others_sorted(default_world: World) -> None:
    s = default_world.network.sites
    near = nearest_sites(default_world, 5)
    assert near.shape == (len(s), 5)
    for i in range(0, len(s), 7):
        d = great_circle_km(s.lat[i], s.lon[i], s.lat, s.lon)
        row = near[i].tolist()
        assert i not in row
        assert len(set(row)) == 5
        assert np.all(np.diff(d[row]) >= -1e-9)
        others = np.delete(d, [i, *row])
        assert d[row].max() <= others.min() + 1e-6


# ------------------------------------------------------------------------ backends


@pytest.fixture(scope="module")
def small_atlas(small_world: World) -> Atlas:
    """The small world's atlas, built on two processes with a predictor given."""
    return build_atlas(small_world, jobs=2, predictor=Predictor(small_world))


def test_run_local_equals_run_serial(dp: Predictor, sample: list[tuple[Scenario, Outcome]]) -> None:
    """Two processes give what one gave (the sample's outcomes, computed serially)."""
    scenarios = [sc for sc, _ in sample[:104]]
    serial = [o for _, o in sample[:104]]
    done: list[int] = []
    local = run_local(dp, scenarios, jobs=2, progress=done.append)
    assert local == serial
    assert [o.scenario for o in local] == scenarios
    assert sum(done) == len(scenarios)
    assert len(done) == -(-len(scenarios) // 16)  # one call per chunk
    # chunks that do not divide the scenarios evenly
    assert run_local(dp, scenarios[:45], jobs=2, chunk=7) == serial[:45]


def test_build_atlas_same_json_on_one_or_two_processes(
    small_world: World, small_atlas: Atlas
) -> None:
    # one process, its predictor built inside; two processes, a predictor given
    one = build_atlas(small_world, jobs=1)
    assert one.to_json() == small_atlas.to_json()
    assert len(one.scenarios) == len(atlas_scenarios(small_world, 5))
    assert len(one.scenarios) > 16  # so that two processes really were used


# --------------------------------------------------------------------------- atlas


def test_atlas_save_load_round_trip(small_atlas: Atlas, tmp_path: Path) -> None:
    f = tmp_path / "sub" / "atlas.json"
    f.parent.mkdir()
    small_atlas.save(f)
    back = Atlas.load(f)
    assert back.data == small_atlas.data
    assert back.to_json() == f.read_text(encoding="utf-8") == small_atlas.to_json()
    assert [p.name for p in f.parent.iterdir()] == ["atlas.json"]  # no temporary left


def test_atlas_riskiest_sorted_by_excess(small_atlas: Atlas) -> None:
    excess = {sc.name: sc.excess_cpu for sc in small_atlas.scenarios}
    risky = small_atlas.data.riskiest
    positive = [n for n, e in excess.items() if e > 0]
    assert positive  # the small world has scenarios that overload a site
    assert len(risky) == min(50, len(positive))
    assert len(set(risky)) == len(risky)
    assert all(excess[n] > 0 for n in risky)
    assert all(excess[a] >= excess[b] for a, b in itertools.pairwise(risky))
    rest = [excess[n] for n in excess if n not in risky]
    assert max(rest) <= excess[risky[-1]]
    assert small_atlas.summary()["overloading"] == len(positive)


def test_atlas_scenario_lookup(small_world: World, small_atlas: Atlas) -> None:
    code = small_world.network.sites.code[0]
    assert small_atlas.single(code).failed == [code]
    assert small_atlas.scenario(code).kind == "single"
    with pytest.raises(KeyError):
        small_atlas.scenario("NOPE")


def test_atlas_load_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "missing.json"
    with pytest.raises(InputError) as e:
        Atlas.load(f)
    assert e.value.file == f
    assert str(f) in e.value.render()
    assert "cannot read" in e.value.render()


def test_atlas_load_invalid_json(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text('{\n "anyedge_atlas": 1,\n oops\n}\n', encoding="utf-8")
    with pytest.raises(InputError) as e:
        Atlas.load(f)
    assert e.value.file == f
    msg = e.value.render()
    assert msg.startswith(f"{f}:3: ")
    assert "not valid JSON" in msg


@pytest.mark.parametrize(
    ("field", "value", "place"),
    [
        ("failed_rps", -1.0, "scenarios.0.failed_rps"),
        ("kind", "meteor", "scenarios.0.kind"),
        ("surprise", 1, "scenarios.0.surprise"),
    ],
)
def test_atlas_load_bad_field(
    line: World, lp: Predictor, tmp_path: Path, field: str, value: object, place: str
) -> None:
    data = json.loads(Atlas.build(lp, [lp.outcome(fails(line, "BBB"))], k=2).to_json())
    data["scenarios"][0][field] = value
    f = tmp_path / "atlas.json"
    f.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError) as e:
        Atlas.load(f)
    assert e.value.file == f
    assert [p.place for p in e.value.problems] == [place]
    assert e.value.render().startswith(f"{f}: {place}: ")


def test_atlas_load_wrong_version(tmp_path: Path) -> None:
    f = tmp_path / "atlas.json"
    f.write_text(json.dumps({"anyedge_atlas": 2}), encoding="utf-8")
    with pytest.raises(InputError) as e:
        Atlas.load(f)
    assert e.value.file == f
    places = {p.place for p in e.value.problems}
    assert {"anyedge_atlas", "prefix", "scenarios"} <= places


def test_local_workers_end_even_after_a_command_set_a_sigterm_handler() -> None:
    """Commands that shut down gracefully (``store serve``, ``transit serve``, ``control
    run``...) set a SIGTERM handler and may run in-process before ``build_atlas``.  Once
    a test run hung in the pool's end: a forked worker, blocked on the task queue, did
    not die of the pool's SIGTERM.  The pool now ends its workers by closing the queue
    (each exits on its own) and gives them the default handlers; this checks the atlas
    is built and the workers end with such a handler set, in a process of its own with a
    time limit, so that a hang fails the test instead of stopping the suite.  (The hang's
    exact interleaving did not come back here: this passed on the old code too.)"""
    code = (
        "import signal\n"
        "signal.signal(signal.SIGTERM, lambda *_: None)  # as a graceful command leaves it\n"
        "from anyedge.model.worldgen import WorldOptions, build_world\n"
        "from anyedge.predict import build_atlas\n"
        "w = build_world(WorldOptions(sites=40, mcp=5, min_city_population=500_000))\n"
        "atlas = build_atlas(w, jobs=2)\n"
        "print(len(atlas.scenarios))\n"
    )
    src = str(Path(__file__).resolve().parent.parent / "src")
    r = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) > 16  # more than one chunk: the workers were used
