"""The routing engine under faults: links down and sites cut off.

A link down is a mask over the graph's edge arrays; the property here is that it gives
exactly what a graph built without that link gives — on random hierarchies (every route,
path included, against the reference engine's graphs) and on the default world (every
user's site and walked distance, in both tie-break modes).  A site whose sessions are
lost is cut off for every prefix: the same catchment as the site withdrawn.  Names that
do not fit the world are refused with every problem listed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyedge.model import World
from anyedge.model.network import Sessions
from anyedge.routing import (
    Announcement,
    FaultError,
    Faults,
    Mode,
    Router,
    propagate,
    resolve,
    update,
)
from test_routing_properties import HAND, SETTINGS, Case, cases, same_routes


def without_link(case: Case, k: int) -> tuple[Case, tuple[int, int]]:
    """``case`` without its k-th link (provider-customer links first, then peers)."""
    links = [*case.p2c, *case.p2p]
    gone = links[k % len(links)]
    p2c = tuple(p for p in case.p2c if p != gone)
    p2p = tuple(p for p in case.p2p if p != gone)
    return replace(case, p2c=p2c, p2p=p2p), gone


@settings(SETTINGS, max_examples=150)  # each example propagates once per origin too
@given(cases(), st.integers(0, 200))
def test_link_down_equals_a_graph_without_the_link(case: Case, k: int) -> None:
    if not case.p2c and not case.p2p:
        return
    cut, gone = without_link(case, k)
    g = case.graph()
    masked = g.masked(g.link_mask([gone]))
    same_routes(propagate(masked, case.seeds()), propagate(cut.graph(), case.seeds()))
    # and the incremental update runs on the masked graph as on the rebuilt one
    seeds = case.seeds()
    for origin in range(len(seeds)):
        after = update(masked, propagate(masked, seeds), seeds, seeds.without(origin))
        same_routes(after, propagate(cut.graph(), seeds.without(origin)))


def test_link_down_on_the_hand_example() -> None:
    """AS 7 reaches AS 8 over 7-3-6-8; with the 6-8 link down it is left with 7-3-1."""
    g = HAND.graph()
    state = propagate(g.masked(g.link_mask([(5, 7)])), HAND.seeds())
    assert int(state.origin[6]) == 0
    assert int(state.origin[5]) == 0  # AS 6 itself now goes up to AS 1


# ------------------------------------------------------------------- the default world


def rebuilt(world: World, faults: Faults) -> World:
    """``world`` rebuilt without the faulted links and sessions (the slow way)."""
    net, inet = world.network, world.internet
    ses = net.sessions
    up = faults.session_up(len(ses))
    sessions = Sessions(site=ses.site[up], asn=ses.asn[up], kind=ses.kind[up])
    gone = set(faults.links)

    def keep(pairs: np.ndarray) -> np.ndarray:
        rows = [p for p in pairs.tolist() if (min(p), max(p)) not in gone]
        return np.array(rows, dtype=np.int64).reshape(-1, 2)

    internet = replace(inet, p2c=keep(inet.p2c), p2p=keep(inet.p2p))
    return replace(world, network=replace(net, sessions=sessions), internet=internet)


FAULTS = (["10297-2015"], ["LHR-10172"], ["10297-2015", "LHR-10172"])


@pytest.mark.parametrize("mode", [Mode.METRO, Mode.AS])
@pytest.mark.parametrize("links", FAULTS)
def test_default_world_faults_equal_a_rebuilt_world(
    default_world: World, links: list[str], mode: Mode
) -> None:
    faults = resolve(default_world, links)
    base = Router(default_world, mode)
    got = base.with_faults(faults).catchment()
    want = Router(rebuilt(default_world, faults), mode).catchment()
    np.testing.assert_array_equal(got.state.key, want.state.key)
    np.testing.assert_array_equal(got.eyeball_site, want.eyeball_site)
    np.testing.assert_allclose(got.walk.km, want.walk.km, equal_nan=True)
    # the fault moved someone, and the router it came from is untouched
    assert np.any(got.eyeball_site != base.catchment().eyeball_site)
    assert not base.faults


def test_default_world_incremental_withdraw_under_a_fault(default_world: World) -> None:
    r = Router(default_world).with_faults(resolve(default_world, ["10297-2015"]))
    c = r.catchment()
    ber = default_world.network.sites.index("BER")
    inc = r.withdraw(c, ber)
    fresh = r.catchment(c.announcement.withdraw(ber))
    np.testing.assert_array_equal(inc.eyeball_site, fresh.eyeball_site)
    np.testing.assert_allclose(inc.walk.km, fresh.walk.km, equal_nan=True)


def test_a_site_cut_off_is_the_site_withdrawn(default_world: World) -> None:
    sites = default_world.network.sites
    chc = sites.index("CHC")
    router = Router(default_world)
    cut = router.with_faults(resolve(default_world, sites=["chc"])).catchment()
    gone = router.catchment(Announcement.everywhere(len(sites)).withdraw(chc))
    np.testing.assert_array_equal(cut.eyeball_site, gone.eyeball_site)
    assert not np.any(cut.eyeball_site == chc)
    assert cut.unreached_demand() == 0.0


def test_faults_by_name(default_world: World) -> None:
    f = resolve(default_world, ["AS10297-2015", "lhr-10172"], ["CHC"])
    assert f.to_dict(default_world) == {
        "links_down": ["10297-2015", "LHR-10172"],
        "sites_down": ["CHC"],
    }
    ses = default_world.network.sessions
    assert {(int(ses.site[s]), int(ses.asn[s])) for s in f.sessions} >= {
        (default_world.network.sites.index("LHR"), 10172)
    }
    assert len(f.links) == 1


def test_names_that_do_not_fit_are_all_named(default_world: World) -> None:
    with pytest.raises(FaultError) as e:
        resolve(
            default_world,
            ["10297-99999999", "CHC-AKL", "LHR-2020", "10297-10172", "foo", "1-2-3"],
            ["XXX"],
        )
    text = [m for _, m in e.value.problems]
    assert text == [
        "AS99999999 is not in the Internet (in '10297-99999999')",
        "'CHC-AKL' joins two sites: the backbone is not in BGP routing",
        "site LHR has no session with AS2020",
        "AS10297 and AS10172 are not linked",
        "expected A-B (AS numbers or site codes), got 'foo'",
        "expected A-B (AS numbers or site codes), got '1-2-3'",
        "unknown site 'XXX'",
    ]
    assert [o for o, _ in e.value.problems][-1] == "--site-down"


# --------------------------------------------------------------------- the docs' claims


def test_the_docs_fault_commands_run_and_say_what_they_claim(
    default_world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``anyedge catchment`` line with a fault in docs/routing.md runs, and the
    numbers the doc states are what the commands measure."""
    import json
    import re
    import shlex
    from pathlib import Path

    from anyedge.cli import catchment as cli_catchment
    from anyedge.cli.main import main

    monkeypatch.setattr(cli_catchment, "world_from", lambda _topology: default_world)
    doc = (Path(__file__).parent.parent / "docs" / "routing.md").read_text(encoding="utf-8")
    lines = [
        shlex.split(line.split("#")[0])
        for block in re.findall(r"```sh\n(.*?)```", doc, flags=re.S)
        for line in block.splitlines()
        if line.startswith("anyedge catchment") and "-down" in line and "--as-rel" not in line
    ]  # (the bare graph's line runs in test_readme_commands, which has the file)
    assert len(lines) >= 4
    moved: dict[str, dict[str, int]] = {}
    for argv in lines:
        args = [a for a in argv[1:] if a != "--json"] + ["--json"]
        assert main(args) == 0
        data = json.loads(capsys.readouterr().out)
        moved[" ".join(argv[1:])] = {r["site"]: round(r["change_rps"]) for r in data["change"]}
    first = moved["catchment --link-down 10297-2015"]
    assert first == {"WAW": -11831, "BER": 11831}
    last = moved["catchment --site-down CHC --link-down LHR-10172"]
    assert last == {"LHR": -202302, "BHX": 202302, "CHC": -30011, "AKL": 30011}
    for n in ("11,831", "30,011", "202,302"):
        assert n in doc
