"""Operator overrides as the core sees them (no I/O but one SQLite file): a pinned site
takes part in nothing new and the plan says so; a forbidden receiver receives nothing
new; a drained site forwards every plan that may move and receives nothing; what is in
force is the last word on each (kind, site), kept in the journal's file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anyedge.adapters.journal import Journal
from anyedge.adapters.overrides import InForce, Overrides, effective
from anyedge.control.core import Config, Observation, State, decide
from anyedge.control.reasons import Names
from anyedge.errors import InputError

SITES = ("A", "B", "C")
PLANS = ("free", "pro", "business", "enterprise")


def _obs(util: list[float]) -> Observation:
    cap = np.array([1_000.0, 1_000.0, 1_000.0])
    cpu = np.array(util)[:, None] * cap[:, None] * np.array([[0.4, 0.3, 0.2, 0.1]])
    return Observation(utilisation=np.array(util), cpu=cpu, age=np.zeros(3), capacity=cap)


def _config() -> Config:
    lat = np.array([[0.0, 10.0, 20.0], [10.0, 0.0, 30.0], [20.0, 30.0, 0.0]])
    return Config(
        maximum=np.full(3, 0.9), target=np.full(3, 0.8), acceptable=np.full(3, 0.6),
        latency_ms=lat, max_move_share=1.0, min_interval=0.0,
    )  # fmt: skip


def _decide(util: list[float], now: InForce) -> list[tuple[str, int, int]]:
    cfg = effective(_config(), SITES, now)
    plan = decide(_obs(util), State.empty(3, 4), cfg, 100.0)
    return [(a.kind if a.kind != "hold" else a.reason.code, a.site, a.to) for a in plan.actions]


def test_without_overrides_the_nearest_receiver_takes_it() -> None:
    acts = _decide([1.2, 0.3, 0.3], InForce())
    fw = [(s, t) for k, s, t in acts if k == "forward"]
    assert fw[0] == (0, 1)  # B, the nearest, first; C takes what B has no room for
    assert {t for _, t in fw} == {1, 2}


def test_a_pinned_site_takes_part_in_nothing_new() -> None:
    acts = _decide([1.2, 0.3, 0.3], InForce(pinned=frozenset({"A"})))
    assert ("pinned", 0, -1) in acts
    assert not [a for a in acts if a[0] == "forward"]
    # a pinned receiver receives nothing either
    acts = _decide([1.2, 0.3, 0.3], InForce(pinned=frozenset({"B"})))
    assert {t for k, _, t in acts if k == "forward"} == {2}


def test_a_forbidden_receiver_receives_nothing_new() -> None:
    acts = _decide([1.2, 0.3, 0.3], InForce(forbidden=frozenset({"B"})))
    assert {t for k, _, t in acts if k == "forward"} == {2}
    acts = _decide([1.2, 0.3, 0.3], InForce(forbidden=frozenset({"B", "C"})))
    assert not [a for a in acts if a[0] == "forward"]
    assert ("short_no_room", 0, -1) in acts


def test_a_drained_site_forwards_every_plan_that_may_move() -> None:
    cfg = effective(_config(), SITES, InForce(drained=frozenset({"B"})))
    plan = decide(_obs([0.3, 0.3, 0.3]), State.empty(3, 4), cfg, 100.0)
    fw = plan.of("forward")
    assert {a.site for a in fw} == {1}
    assert {a.plan for a in fw} == {0, 1, 2}  # enterprise is protected
    assert sum(a.cpu for a in fw) == pytest.approx(0.9 * 300.0)


def test_overrides_live_in_the_journal_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal(path, Names(SITES, PLANS)):
        pass
    ov = Overrides(path, SITES)
    ov.set("pin", "A", True, "alice", 1.0)
    ov.set("freeze", None, True, "bob", 2.0, "change window")
    ov.set("pin", "A", False, "alice", 3.0)
    ov.set("drain", "C", True, "carol", 4.0)
    assert ov.in_force() == InForce(frozen=True, drained=frozenset({"C"}))
    assert [o.who for o in ov.history()] == ["carol", "alice", "bob", "alice"]
    with pytest.raises(InputError, match="needs one of the sites"):
        ov.set("pin", "Z", True, "x", 5.0)
    with pytest.raises(InputError, match="is not one of"):
        ov.set("reboot", "A", True, "x", 5.0)
    with Journal(path, Names(SITES, PLANS)) as j:  # still a journal
        assert j.decisions() == 0
