"""Servers inside the twin's sites: a section's load spread over its servers by the
balancer's bucket table, servers failing and drained through it.

On the tiny world (CHC: one section of 8 servers; AKL: 16; IAD: two sections of 40)
at Christchurch's evening, with CHC's demand ×8 (its servers near 70 %): 3 of CHC's
servers fail for 30 minutes and 4 of AKL's are drained.  The example of
docs/simulate.md, whose numbers are checked here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from anyedge.balance import Table
from anyedge.errors import InputError
from anyedge.model import World
from anyedge.model.files import parse_world
from anyedge.sim import Twin, parse_scenario
from anyedge.sim.servers import broken

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny.yaml"
EXAMPLE = ROOT / "docs" / "examples" / "servers-day.yaml"


@pytest.fixture(scope="module")
def tiny() -> World:
    return parse_world(TINY.read_text(), TINY)


@pytest.fixture(scope="module")
def runs(tiny: World) -> dict[str, object]:
    """The docs' example under each controller (no reference days: not needed here)."""
    twin = Twin(tiny, parse_scenario(EXAMPLE.read_text(), tiny, EXAMPLE))
    return {m: twin.run(m) for m in ("none", "withdraw", "manager")}


def changes(run: object) -> list[tuple[str, str, float, float, float]]:
    return [
        (c["what"], c["section"], c["moved"], c["broken"], c["broken_without_second_hop"])
        for c in run.servers["changes"]  # type: ignore[attr-defined]
    ]


def test_a_failure_breaks_its_servers_connections_a_drain_none() -> None:
    t = Table.build(np.full(8, 64000.0), buckets=4096)
    lost = np.zeros(8, dtype=np.bool_)
    both = np.array([1, 1, 0, 0, 0, 0, 0, 0])  # drained at once (one after the other,
    drained = t.change(state=both)  # some buckets would move twice: one deep only)
    moved, br, plain = broken(t, drained, lost)
    assert moved == pytest.approx(0.25, abs=2 / 4096)
    assert br == 0.0  # the drained servers stay their buckets' second hop
    assert plain == moved  # without it, every moved bucket's connections break
    lost[:2] = True  # failed: their connections are gone already, moving breaks no more
    removed = t.change(state=2 * both)
    assert broken(t, removed, lost)[1:] == (0.0, 0.0)
    back = removed.change(state=0 * both)  # they come back: buckets move to them
    moved, br, plain = broken(removed, back, np.zeros(8, dtype=np.bool_))
    assert moved == pytest.approx(0.25, abs=2 / 4096)
    assert br == 0.0
    assert plain == moved


def test_failure_and_drain_through_the_table(runs: dict[str, object]) -> None:
    # the failure breaks the 3 servers' share of CHC's connections under every
    # controller; only the Traffic Manager takes them out of the table, at its first
    # decision on telemetry that shows them (30 s old: at 11 minutes), and puts them
    # back when they recover, moving buckets without breaking a connection
    for mode in ("none", "withdraw"):
        assert changes(runs[mode]) == [
            ("fail", "CHC01", 0.0, 0.375, 0.375),
            ("drain", "AKL01", 0.25, 0.0, 0.25),
            ("recover", "CHC01", 0.0, 0.0, 0.0),
            ("undrain", "AKL01", 0.25, 0.0, 0.25),
        ]
    m = runs["manager"]
    assert changes(m) == [
        ("fail", "CHC01", 0.0, 0.375, 0.375),
        ("remove", "CHC01", 0.375, 0.0, 0.0),
        ("drain", "AKL01", 0.25, 0.0, 0.25),
        ("recover", "CHC01", 0.375, 0.0, 0.375),
        ("undrain", "AKL01", 0.25, 0.0, 0.25),
    ]
    times = [c["time_s"] for c in m.servers["changes"]]  # type: ignore[attr-defined]
    assert times[:2] == [600.0, 660.0]
    assert [c["capacity"] for c in m.servers["changes"]][:2] == [0.625, 0.625]  # type: ignore[attr-defined]


def test_per_server_utilisation(runs: dict[str, object]) -> None:
    none, m = runs["none"].servers["sections"], runs["manager"].servers["sections"]  # type: ignore[attr-defined]
    chc, akl = np.array(none["CHC01"]["utilisation"]), np.array(none["AKL01"]["utilisation"])
    # before: even over the servers; failed: 0, and with no one to take them out of the
    # table the others keep their share (the dead share fails)
    assert np.ptp(chc[9]) < 1e-3
    assert 0.6 < chc[9, 0] < 0.75
    assert (chc[11, :3] == 0).all()
    assert chc[11, 3] == pytest.approx(chc[9, 3], rel=0.01)
    # drained: 0; the 12 others take their share, 16/12 of what they had
    assert (akl[25, :4] == 0).all()
    assert akl[25, 4] == pytest.approx(akl[15, 4] * 16 / 12, rel=0.02)
    # the Traffic Manager's Unimog spreads the failed share over the 5 left (8/5 of
    # their share): over 100 %, so Plurimog forwards a share of CHC's plans to AKL
    mc = np.array(m["CHC01"]["utilisation"])
    assert mc[11, 3] == pytest.approx(mc[9, 3] * 8 / 5, rel=0.02)
    assert mc[11, 3] > 1.0
    assert mc[15, 3] < 0.9
    forwards = [a for a in runs["manager"].actions if a["kind"] == "forward"]  # type: ignore[attr-defined]
    assert forwards[0]["site"] == "CHC"
    assert forwards[0]["to"] == "AKL"
    assert forwards[0]["time_s"] == 720.0  # the decision after Unimog's


def test_accounting_and_what_failed(runs: dict[str, object]) -> None:
    for r in runs.values():
        t = r.totals  # type: ignore[attr-defined]
        assert t.served + t.failed == pytest.approx(t.requests, rel=1e-9)
    none, wd, m = (runs[k].totals for k in ("none", "withdraw", "manager"))  # type: ignore[attr-defined]
    # without Unimog the failed servers' share of CHC fails for the whole 30 minutes
    assert none.failed == wd.failed > 0
    assert m.failed < none.failed / 10


def test_the_docs_state_these_numbers(runs: dict[str, object]) -> None:
    doc = " ".join((ROOT / "docs" / "simulate.md").read_text(encoding="utf-8").split())
    sec = doc[doc.index("## Servers inside a site") :]
    share = {k: 100 * r.totals.failed / r.totals.requests for k, r in runs.items()}  # type: ignore[attr-defined]
    got = re.search(r"requests fail at ([\d.]+) % with no traffic management", sec)
    assert got
    assert float(got.group(1)) == pytest.approx(share["none"], abs=0.01)
    got = re.search(r"and ([\d.]+) % with the Traffic Manager", sec)
    assert got
    assert float(got.group(1)) == pytest.approx(share["manager"], abs=0.01)


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ("{at: 0s, for: 1m, kind: server_fail, section: XYZ01}", "unknown section 'XYZ01'"),
        ("{at: 0s, for: 1m, kind: server_fail, site: IAD}", "IAD has 2 sections (IAD01, IAD02)"),
        ("{at: 0s, for: 1m, kind: server_drain, site: CHC, count: 8}", "at most 7 may fail"),
        ("{at: 0s, for: 1m, kind: server_fail}", "names its section"),
    ],
)
def test_bad_server_events_are_refused(tiny: World, event: str, problem: str) -> None:
    with pytest.raises(InputError) as err:
        parse_scenario(f"duration: 1h\nevents:\n  - {event}\n", tiny, "s.yaml")
    assert problem in str(err.value)
    assert "s.yaml:3" in str(err.value)


def test_overlapping_server_events_on_a_section_are_refused(tiny: World) -> None:
    text = (
        "duration: 1h\nevents:\n"
        "  - {at: 0s, for: 10m, kind: server_fail, site: CHC}\n"
        "  - {at: 5m, for: 10m, kind: server_drain, section: CHC01}\n"
    )
    with pytest.raises(InputError) as err:
        parse_scenario(text, tiny, "s.yaml")
    assert "s.yaml:4" in str(err.value)
    assert "overlaps another server event on CHC01" in str(err.value)


def test_the_command_shows_and_prints_the_servers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from anyedge.cli.main import main

    args = ["simulate", str(EXAMPLE), "-t", str(TINY), "--no-report"]
    prom = tmp_path / "twin.prom"
    assert main([*args, "--metrics", str(prom)]) == 0
    metrics = prom.read_text()
    assert (
        'anyedge_twin_server_connections_broken{change="fail",mode="manager",section="CHC01"} 0.375'
        in metrics
    )
    assert 'anyedge_twin_server_utilisation{mode="none",section="AKL01",server="0"' in metrics
    text = capsys.readouterr().out
    assert "changes of the balancer's tables" in text
    assert re.search(r"Traffic Manager .* 00:11 .* CHC01 .* remove 3 .* 37\.5 % .* 0\.0 %", text)
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["servers"]) == {"none", "withdraw", "manager"}
    assert out["servers"]["manager"]["sections"]["CHC01"]["servers"] == 8
