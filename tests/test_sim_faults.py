"""Faults in the twin's scenarios: a link down and a site's sessions lost, for a while.

On the hand-written tiny world (CHC and AKL both buy transit from AS2001, which prefers
CHC on the tie-break; AS10001 also peers with CHC): CHC losing its sessions sends all
its users to AKL while the event lasts and back after; CHC's transit session down moves
only AS10002's users (AS10001 keeps its peering).  Names that do not fit are refused
with the file, the line and the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anyedge.errors import InputError
from anyedge.model import World
from anyedge.model.files import parse_world
from anyedge.sim import Twin, parse_scenario

TINY = Path(__file__).parent / "data" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny() -> World:
    return parse_world(TINY.read_text(), TINY)


def twin(world: World, event: str) -> Twin:
    return Twin(world, parse_scenario(f"duration: 3h\ntick: 10s\nevents: [{event}]\n", world))


def load(run: object, world: World, code: str) -> np.ndarray:
    """Per sample, the site's utilisation."""
    u = run.series.utilisation  # type: ignore[attr-defined]
    return np.asarray(u[:, world.network.sites.index(code)])


def busy(run: object, world: World, code: str) -> np.ndarray:
    """Per sample, whether the site carried any load."""
    return load(run, world, code) > 0


def test_a_site_down_sends_its_users_elsewhere_while_it_lasts(tiny: World) -> None:
    t = twin(tiny, "{at: 1h, for: 1h, kind: site_down, site: chc}")
    (event,) = t.sc.events
    assert event.text == "chc loses its BGP sessions"
    run = t.run("none")
    assert run.totals.unrouted == 0.0  # AKL takes them all
    assert run.totals.failed == 0.0
    chc = busy(run, tiny, "CHC")
    n = chc.size
    assert chc[: n // 3 - 1].all()
    assert chc[-(n // 3) + 1 :].all()
    assert not chc[n // 3 + 1 : 2 * n // 3 - 1].any()  # during: cut off
    assert run.totals.routing_changes == 0  # nothing was withdrawn: the sessions went
    c = t.compare()
    assert [(e["sites"], e["receivers"]) for e in c.events] == [(["CHC"], ["AKL"])]


def test_a_link_down_moves_only_the_networks_behind_it(tiny: World) -> None:
    t = twin(tiny, "{at: 1h, for: 1h, kind: link_down, link: CHC-2001}")
    (event,) = t.sc.events
    assert event.faults.to_dict(tiny) == {"links_down": ["CHC-2001"], "sites_down": []}
    run = t.run("none")
    assert run.totals.failed == 0.0
    assert busy(run, tiny, "CHC").all()  # AS10001 still reaches CHC over its peering
    quiet = twin(tiny, "{at: 1h, for: 1h, kind: link_down, link: 1001-2001}").run("none")
    n = load(run, tiny, "AKL").size
    during = slice(n // 3 + 1, 2 * n // 3 - 1)
    # AS10002's users go to AKL during the event: AKL works harder than on the same day
    # with a link down that changes nothing for them, and CHC less
    assert (load(run, tiny, "AKL")[during] > load(quiet, tiny, "AKL")[during]).all()
    assert (load(run, tiny, "CHC")[during] < load(quiet, tiny, "CHC")[during]).all()
    assert load(run, tiny, "AKL")[: n // 3 - 1] == pytest.approx(
        load(quiet, tiny, "AKL")[: n // 3 - 1]
    )
    c = t.compare()
    assert [(e["sites"], e["receivers"]) for e in c.events] == [(["CHC"], ["AKL"])]


def test_faults_that_do_not_fit_name_the_place(tiny: World) -> None:
    text = (
        "duration: 2h\nevents:\n"
        "  - {at: 1h, for: 1h, kind: link_down, link: CHC-1001}\n"
        "  - {at: 1h, for: 1h, kind: link_down, link: CHC-AKL}\n"
        "  - {at: 1h, for: 1h, kind: link_down}\n"
        "  - {at: 1h, for: 1h, kind: site_down, site: SYD}\n"
    )
    with pytest.raises(InputError) as e:
        parse_scenario(text, tiny, "s.yaml")
    msg = str(e.value)
    assert "s.yaml:3: events[0].link: site CHC has no session with AS1001" in msg
    assert "s.yaml:4: events[1].link: 'CHC-AKL' joins two sites" in msg
    assert "events[2].link: expected A-B" in msg
    assert "s.yaml:6: events[3].site: unknown site 'SYD'" in msg


def test_the_docs_example_scenario_fits_the_default_world(default_world: World) -> None:
    path = Path(__file__).parent.parent / "docs" / "examples" / "faults-day.yaml"
    sc = parse_scenario(path.read_text(), default_world, path)
    assert [e.text for e in sc.events] == [
        "the link 10297-2015 goes down",
        "SYD loses its BGP sessions",
    ]
    assert sc.events[0].faults.links
    assert sc.events[1].faults.sites
