"""The journal of the Traffic Manager's decisions and the controller that writes it:
round trips, atomicity, bad files, and a controller killed (SIGKILL) and started again
on its journal — in a real subprocess and in process with a fake clock.

The world of these tests is the reference network of ``test_control_core``: site 0 at
90 % (maximum 88 %), three receivers 100, 110 and 120 ms away.  Its served CPU time
follows the state last enforced, so moves bring site 0 down, about 98 ms/s a decision
(``max_move_share``), five decisions to get under its maximum.  Between 700 s and
1,000 s site 3's telemetry is stale (the plan only holds); at 1,500 s site 0's demand
halves and it takes its traffic back, a quarter of what it forwards each decision.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from anyedge.adapters import Controller, Journal, observation_digest
from anyedge.adapters import journal as journal_module
from anyedge.control.core import Action, Config, Observation, Plan, State
from anyedge.control.reasons import Names, Reason
from anyedge.errors import InputError
from test_control_core import reference_network

TESTS = Path(__file__).parent
NAMES = Names(
    ("A", "B", "C", "D"),
    ("free", "pro", "business", "enterprise"),
    ("A01", "A02", "B01"),
    ("192.0.2.0/24", "198.51.100.0/24"),
)
STEP = 100.0  # seconds between two steps of the controller
STALE = (700.0, 1_000.0)  # site 3's telemetry is 300 s old in [700, 1000)
DROP = 1_500.0  # site 0's demand halves from here on
END = 4_000.0  # the last step
# 5 with forwards (each with a hold: the cap), 1 when site 3 goes stale and 1 when that
# hold ends (not one per stale step), 4 with reverts
DECISIONS = 11
FORWARD_PHASE = [0.0, 100.0, 200.0, 300.0, 400.0]  # the times of the forwarding decisions


# ------------------------------------------------------------------ the fake world


def config() -> Config:
    _, cfg = reference_network()
    return replace(cfg, max_move_share=0.004)  # ~98 ms/s of the 24,400 per decision


def state_json(state: State) -> dict[str, Any]:
    return {
        "forward": state.shares().tolist(),
        "shift": state.shift.tolist(),
        "withdrawn": state.withdrawn.tolist(),
        "last_change": state.last_change.tolist(),
    }


def state_of(d: dict[str, Any]) -> State:
    last = np.array(d["last_change"], dtype=np.float64)
    return State(
        forward=np.array(d["forward"], dtype=np.float64),
        shift=np.array(d["shift"], dtype=np.float64),
        withdrawn=np.array(d["withdrawn"], dtype=np.bool_).reshape(-1, last.size),
        last_change=last,
    )


def same(a: State, b: State) -> bool:
    return all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
        for x, y in [
            (a.shares(), b.shares()),
            (a.shift, b.shift),
            (a.withdrawn, b.withdrawn),
            (a.last_change, b.last_change),
        ]
    )


class World:
    """The network: telemetry and actuator at once.  With a ``log`` every enforced state
    is appended to it, one JSON line in one write, and a new World starts from the last
    line: the network outlives its controller.  With ``die_at = k`` the process kills
    itself (SIGKILL) on the k-th enforcement, after the decision is journaled and before
    the network has it."""

    def __init__(self, log: Path | None = None, die_at: int = 0) -> None:
        obs, _ = reference_network()
        self.demand = obs.cpu
        self.capacity = obs.cpu.sum(axis=1) / obs.utilisation  # 20,000 3,000 3,000 10,000
        self.state = State.empty(4, 4)
        self.enforced: list[tuple[float, State, Plan]] = []
        self.log, self.die_at = log, die_at
        if log is not None and log.exists():
            lines = log.read_text(encoding="utf-8").splitlines()
            if lines:
                self.state = state_of(json.loads(lines[-1]))

    def observe(self, now: float) -> Observation:
        demand = self.demand.copy()
        if now >= DROP:
            demand[0] *= 0.5
        f = self.state.shares()
        cpu = demand * (1.0 - f.sum(axis=2)) + np.einsum("sp,spd->dp", demand, f)
        age = np.zeros(4)
        if STALE[0] <= now < STALE[1]:
            age[3] = 300.0
        return Observation(utilisation=cpu.sum(axis=1) / self.capacity, cpu=cpu, age=age)

    def enforce(self, state: State, plan: Plan, now: float) -> None:
        if len(self.enforced) + 1 == self.die_at:
            os.kill(os.getpid(), signal.SIGKILL)
            raise SystemExit("SIGKILL did not kill")  # pragma: no cover
        self.state = state
        self.enforced.append((now, state, plan))
        if self.log is not None:
            reason = plan.actions[0].reason.code if plan.actions else ""
            line = {"pid": os.getpid(), "now": now, "reason": reason, **state_json(state)}
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(line) + "\n").encode())
            finally:
                os.close(fd)


def run(journal: Path, world: World, end: float = END, pace: float = 0.0) -> None:
    """One controller process: resume from the journal, then a step every STEP s."""
    with Journal(journal, NAMES) as j:
        controller = Controller(world, world, config(), j)
        now = controller.last_time if controller.last_time is not None else 0.0
        while now <= end:
            controller.step(now)
            now += STEP
            time.sleep(pace)


def main(argv: list[str]) -> int:
    """The subprocess: ``JOURNAL LOG PACE DIE_AT``."""
    journal, log, pace, die_at = argv
    run(Path(journal), World(Path(log), int(die_at)), pace=float(pace))
    return 0


def uninterrupted(tmp_path: Path) -> Journal:
    """The journal of the same controller run from 0 to END without a crash."""
    path = tmp_path / "uninterrupted.db"
    run(path, World())
    return Journal(path, NAMES)


def forwarded(actions: list[tuple[int, Action]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Forward shares minus revert shares, per (site, plan, to)."""
    out = np.zeros((4, 4, 4))
    for _, a in actions:
        if a.kind == "forward":
            out[a.site, a.plan, a.to] += a.share
        elif a.kind == "revert":
            out[a.site, a.plan, a.to] -= a.share
    return out


def test_the_uninterrupted_run(tmp_path: Path) -> None:
    with uninterrupted(tmp_path) as j:
        acts = j.actions()
        assert j.decisions() == DECISIONS
        kinds = [a.kind for _, a in acts]
        assert (kinds.count("forward"), kinds.count("hold"), kinds.count("revert")) == (6, 7, 5)
        times = [j.state(k)[0] for k in range(1, DECISIONS + 1)]
        assert times[:7] == [*FORWARD_PHASE, 700.0, 1_000.0]  # the stale hold: begun, ended
        assert [a.reason for s, a in acts if s == 7] == [Reason.of("hold_ended", seq=6)]
        assert times[7:] == [DROP + STEP * k for k in range(4)]
        latest = j.latest()
        assert latest is not None
        np.testing.assert_allclose(latest[2].shares(), forwarded(acts), rtol=0, atol=1e-12)
        # site 0 took everything back (a step of a quarter, but never less than the floor)
        assert latest[2].shares().sum() == 0.0


# ------------------------------------------------------------------ the journal


def a_state() -> State:
    forward = np.zeros((4, 4, 4))
    forward[0, 0, 1] = 0.2
    forward[0, 1, 2] = 1 / 3
    return State(
        forward=forward,
        shift=np.array([0.0, 0.25, 0.0]),
        withdrawn=np.array([[True, False, False, False], [False, False, False, False]]),
        last_change=np.array([-np.inf, 100.0, -np.inf, 250.5]),
    )


ACTIONS = (
    Action(
        "forward",
        0,
        Reason.of(
            "over_maximum",
            utilisation=0.9,
            maximum=0.88,
            need=1_000.0,
            target=0.85,
            receiver=1,
            latency_ms=100.0,
        ),
        plan=0,
        to=1,
        share=0.2,
        cpu=97.6,
    ),
    Action(
        "revert",
        0,
        Reason.of("revert", utilisation=0.4, acceptable=0.5, cpu=10.5, receiver=2),
        plan=1,
        to=2,
        share=1 / 3,
        cpu=10.5,
    ),
    Action(
        "shift",
        1,
        Reason.of("shift_out", utilisation=0.95, maximum=0.9, cpu=30.0, section=1),
        section=1,
        share=0.25,
        cpu=30.0,
    ),
    Action("withdraw", 0, Reason.of("withdraw", prefix=0, cpu=9_000.0), prefix=0, cpu=9_000.0),
    Action("hold", -1, Reason.of("no_fresh_telemetry")),
)


def test_journal_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    obs, _ = reference_network()
    digest = observation_digest(obs)
    state = a_state()
    with Journal(path, NAMES) as j:
        assert j.latest() is None
        assert j.decisions() == 0
        assert j.record(0.0, digest, Plan(ACTIONS[:2]), State.empty(4, 4, 3, 2)) == 1
        assert j.record(250.5, digest, Plan(ACTIONS[2:]), state) == 2
    with Journal(path, NAMES) as j:
        assert j.decisions() == 2
        latest = j.latest()
        assert latest is not None
        seq, t, got = latest
        assert (seq, t) == (2, 250.5)
        assert same(got, state)
        assert got.shares()[0, 1, 2] == 1 / 3
        t1, first = j.state(1)
        assert t1 == 0.0
        assert same(first, State.empty(4, 4, 3, 2))
        assert j.digest(2) == digest
        assert j.actions() == [
            (1, ACTIONS[0]),
            (1, ACTIONS[1]),
            (2, ACTIONS[2]),
            (2, ACTIONS[3]),
            (2, ACTIONS[4]),
        ]
        assert j.actions(since_seq=1) == [(2, a) for a in ACTIONS[2:]]
        assert j.actions(since_seq=2) == []
        with pytest.raises(KeyError):
            j.state(3)
        (sync,) = j._db.execute("PRAGMA synchronous").fetchone()
        assert sync == 2  # FULL
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        meta = dict(raw.execute("SELECT key, value FROM meta").fetchall())
        assert meta["format"] == "anyedge-journal"
        assert meta["schema_version"] == "3"
        assert json.loads(meta["names"]) == NAMES.as_dict()
        (summary,) = raw.execute("SELECT summary FROM decisions WHERE seq = 2").fetchone()
        assert json.loads(summary) == {
            "actions": {"shift": 1, "withdraw": 1, "hold": 1},
            "changed": True,
            "shape": {"sites": 4, "plans": 4, "sections": 3, "prefixes": 2},
            "forwarding": ["A"],
            "receiving": ["B", "C"],
            "shifted": ["A02"],
            "withdrawn": [["192.0.2.0/24", "A"]],
        }
        assert raw.execute("SELECT kind, to_site FROM actions WHERE seq = 1").fetchall() == [
            ("forward", "B"),
            ("revert", "C"),
        ]
    finally:
        raw.close()


def test_observation_digest() -> None:
    obs, _ = reference_network()
    assert observation_digest(obs) == observation_digest(replace(obs, cpu=obs.cpu.copy()))
    assert observation_digest(obs).startswith("sha256:")
    older = replace(obs, age=np.array([0.0, 0.0, 0.0, 1.0]))
    assert observation_digest(older) != observation_digest(obs)


def test_a_failed_record_leaves_no_partial_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j.db"
    plan = Plan(ACTIONS)
    seen: list[int] = []
    with Journal(path, NAMES) as j:
        assert j.record(0.0, "sha256:a", plan, a_state()) == 1

        def broken(plan: Plan, of_state: object) -> str:
            # inside the transaction: the actions of decision 2 are written already
            (n,) = j._db.execute("SELECT COUNT(*) FROM actions WHERE seq = 2").fetchone()
            seen.append(int(n))
            raise RuntimeError("the disk is on fire")

        monkeypatch.setattr(journal_module, "_summary", broken)
        with pytest.raises(RuntimeError, match="the disk is on fire"):
            j.record(100.0, "sha256:b", plan, a_state())
        monkeypatch.undo()
        assert seen == [5]
        assert j.decisions() == 1
        assert j.actions() == [(1, a) for a in ACTIONS]
    with Journal(path, NAMES) as j:  # nothing of decision 2 on disk either, and no gap after it
        assert j.decisions() == 1
        assert j.actions(since_seq=1) == []
        assert j.record(200.0, "sha256:c", plan, a_state()) == 2
        assert j.state(2)[0] == 200.0


def _text(path: Path) -> None:
    path.write_text("site,utilisation\nAKL,0.5\n", encoding="utf-8")


def _other_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()


def _other_meta(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('format', 'someone-else')")
    db.close()


def _future_version(path: Path) -> None:
    Journal(path, NAMES).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()


def test_a_version_2_journal_is_read_and_goes_on_as_version_3(tmp_path: Path) -> None:
    """Version 2's states end at shift_cpu: they are read with no withdrawal basis, the
    journal is marked version 3, and its new rows carry the basis."""
    path = tmp_path / "journal.db"
    state = replace(
        State.empty(4, 4, 3, 2),
        withdrawn=np.array([[True, False, False, False], [False] * 4]),
        withdrawn_cpu=np.array([[900.0, 0, 0, 0], [0.0] * 4]),
        withdrawn_basis=np.array([[1_614.0, 0, 0, 0], [0.0] * 4]),
    )
    with Journal(path, NAMES) as j:
        j.record(0.0, "sha256:a", Plan(ACTIONS[:2]), state)
    v2 = journal_module.pack_state(state)  # strip the last array: a version 2 state
    raw = zlib.decompress(v2)
    buf = io.BytesIO(raw)
    for _ in range(9):
        np.load(buf)
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE decisions SET state = ? WHERE seq = 1",
            (zlib.compress(raw[: buf.tell()]),),
        )
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.close()
    with Journal(path, NAMES) as j:
        _, old = j.state(1)
        assert old.withdrawn[0, 0]
        assert old.moved_by_withdrawal()[0, 0] == 900.0
        assert not old.withdrawal_basis().any()  # unknown: the CPU time moved stands
        j.record(60.0, "sha256:b", Plan(ACTIONS[:2]), state)
        _, new = j.state(2)
        assert new.withdrawal_basis()[0, 0] == 1_614.0
    with sqlite3.connect(path) as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    db.close()
    assert meta["schema_version"] == "3"
    assert meta["state_format"].endswith("npy withdrawn_basis)")


def _directory(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_text, "not an anyedge journal: file is not a database"),
        (_other_database, "not an anyedge journal: it has no meta table"),
        (_other_meta, "meta.format: not an anyedge journal ('someone-else')"),
        (
            _future_version,
            "meta.schema_version: schema version 99 is not one this anyedge reads (2, 3)",
        ),
        (_directory, "cannot open the journal: unable to open database file"),
    ],
    ids=["text", "other-database", "other-meta", "future-version", "directory"],
)
def test_bad_files(tmp_path: Path, make: Any, message: str) -> None:
    path = tmp_path / "journal.db"
    make(path)
    before = path.read_bytes() if path.is_file() else b""
    with pytest.raises(InputError) as e:
        Journal(path, NAMES)
    assert str(e.value) == f"{path}: {message}"
    assert e.value.file == path
    if path.is_file() and make is not _future_version:
        assert path.read_bytes() == before  # someone else's file is left as it was


def test_a_damaged_state_names_the_decision(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal(path, NAMES) as j:
        j.record(0.0, "sha256:a", Plan(()), a_state())
    with sqlite3.connect(path) as db:
        db.execute("UPDATE decisions SET state = ? WHERE seq = 1", (b"not zlib",))
    db.close()
    with Journal(path, NAMES) as j, pytest.raises(InputError) as e:
        j.latest()
    assert str(e.value).startswith(f"{path}: decisions[seq=1].state: not a packed state: ")


# ------------------------------------------------------------------ the controller


class Recorded:
    """Telemetry as a real system keeps it: what was measured at a time stays what was
    measured at that time, so a step re-run after a crash sees the same numbers."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.seen: dict[float, Observation] = {}

    def observe(self, now: float) -> Observation:
        if now not in self.seen:
            self.seen[now] = self.world.observe(now)
        return self.seen[now]


class Crash(Exception):
    """The process dies here (in process: the exception ends the controller)."""


class Crashing:
    """An actuator in front of the world that fails on its ``at``-th call."""

    def __init__(self, world: World, at: int, error: Exception) -> None:
        self.world, self.at, self.error, self.calls = world, at, error, 0

    def enforce(self, state: State, plan: Plan, now: float) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        self.world.enforce(state, plan, now)


class Clock:
    """The fake clock: time advances only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_restart_in_process_with_a_fake_clock(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    world, clock = World(), Clock()
    telemetry = Recorded(world)
    with Journal(path, NAMES) as j:
        controller = Controller(telemetry, Crashing(world, 4, Crash()), config(), j)
        assert not controller.resumed

        def forever() -> None:
            while True:
                controller.step(clock.now)
                clock.advance(STEP)

        with pytest.raises(Crash):
            forever()
        # decision 4 (t = 300) is committed; the network never got it
        assert clock.now == 300.0
        assert j.decisions() == 4
        assert [now for now, _, _ in world.enforced] == [0.0, 100.0, 200.0]
        assert same(world.state, j.state(3)[1])
    with Journal(path, NAMES) as j:  # the process starts again
        latest = j.latest()
        assert latest is not None
        seq, t, state = latest
        assert (seq, t) == (4, 300.0)
        controller = Controller(telemetry, world, config(), j)
        assert controller.resumed
        assert (controller.seq, controller.last_time) == (4, 300.0)
        assert controller.state is not None
        assert same(controller.state, state)
        # the first thing it does: enforce the journal's last state
        now, enforced, plan = world.enforced[-1]
        assert len(world.enforced) == 4
        assert now == 300.0
        assert same(enforced, state)
        assert plan.actions[0].reason == Reason.of("resumed", seq=4)
        # the step that crashed, re-run on the same observation: already decided
        plan = controller.step(clock.now)
        assert plan.empty
        assert plan.actions[0].reason == Reason.of("already_decided", seq=4)
        assert j.decisions() == 4
        assert len(world.enforced) == 4
        while clock.now < END:
            clock.advance(STEP)
            controller.step(clock.now)
        acts = j.actions()
        final = j.latest()
        assert final is not None
        assert final[0] == j.decisions() == DECISIONS  # no gap
    keys = [(s, a.kind, a.site, a.plan, a.to) for s, a in acts]
    assert len(keys) == len(set(keys))
    np.testing.assert_allclose(final[2].shares(), forwarded(acts), rtol=0, atol=1e-12)
    assert same(world.state, final[2])
    with uninterrupted(tmp_path) as ref:  # as if nothing had happened
        assert ref.actions() == acts
        ref_latest = ref.latest()
        assert ref_latest is not None
        assert same(ref_latest[2], final[2])


@pytest.mark.parametrize(("min_interval", "forwards"), [(60.0, 0), (0.0, 1)])
def test_rerun_after_the_network_moved(tmp_path: Path, min_interval: float, forwards: int) -> None:
    """A re-run that sees new numbers decides afresh; min_interval is what keeps the site
    that just moved from moving again (with 0, it would: the guarantee needs > 0)."""
    path = tmp_path / "j.db"
    world = World()
    cfg = replace(config(), min_interval=min_interval)
    with Journal(path, NAMES) as j:
        Controller(world, world, cfg, j).step(0.0)
    with Journal(path, NAMES) as j:
        controller = Controller(world, world, cfg, j)
        plan = controller.step(0.0)
        assert len(plan.of("forward")) == forwards
        assert j.decisions() == 1 + forwards


def test_a_plan_that_only_holds_is_journaled_and_changes_nothing(tmp_path: Path) -> None:
    world = World()
    with Journal(tmp_path / "j.db", NAMES) as j:
        controller = Controller(world, world, config(), j)
        for now in [*FORWARD_PHASE, 500.0, 600.0]:
            controller.step(now)
        assert j.decisions() == 5
        plan = controller.step(700.0)
        hold = Action("hold", 3, Reason.of("stale", age_s=300.0))
        assert plan.actions == (hold,)
        assert j.actions(since_seq=5) == [(6, hold)]
        assert same(j.state(6)[1], j.state(5)[1])
        assert len(world.enforced) == 5  # nothing enforced for it
        assert controller.seq == 6


def test_a_hold_is_journaled_when_it_begins_and_when_it_ends(tmp_path: Path) -> None:
    """Site 3 stale for three steps (an outage): one decision when the hold begins, none
    while it goes on, one when it is over; a controller restarted in the middle of the
    outage does not journal it again."""
    world = World()
    path = tmp_path / "j.db"
    stale = Action("hold", 3, Reason.of("stale", age_s=300.0))
    with Journal(path, NAMES) as j:
        controller = Controller(world, world, config(), j)
        for now in [*FORWARD_PHASE, 500.0, 600.0, 700.0, 800.0]:
            plan = controller.step(now)
        assert plan.actions == (stale,)  # each step still says so (logs, metrics)
        assert j.decisions() == 6
        assert j.actions(since_seq=5) == [(6, stale)]
    with Journal(path, NAMES) as j:  # restarted during the outage
        controller = Controller(world, world, config(), j)
        assert controller.step(900.0).actions == (stale,)
        assert j.decisions() == 6
        plan = controller.step(1_000.0)  # site 3 is fresh again
        ended = Action("hold", -1, Reason.of("hold_ended", seq=6))
        assert plan.actions == (ended,)
        assert j.actions(since_seq=6) == [(7, ended)]
        assert same(j.state(7)[1], j.state(6)[1])
        controller.step(1_100.0)
        assert j.decisions() == 7  # nothing new: nothing written


def test_a_failed_enforcement_is_retried(tmp_path: Path) -> None:
    world = World()
    with Journal(tmp_path / "j.db", NAMES) as j:
        controller = Controller(world, Crashing(world, 1, OSError("actuator down")), config(), j)
        with pytest.raises(OSError, match="actuator down"):
            controller.step(0.0)
        assert j.decisions() == 1
        assert world.enforced == []
        plan = controller.step(10.0)  # within min_interval: nothing new to decide
        assert [a.reason.code for a in plan.actions] == ["waiting"]
        latest = j.latest()
        assert latest is not None
        assert [now for now, _, _ in world.enforced] == [10.0]
        assert same(world.enforced[0][1], latest[2])
        controller.step(20.0)
        assert len(world.enforced) == 1  # enforced once, not at every step


def test_the_network_must_match_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    world = World()
    with Journal(path, NAMES) as j:
        Controller(world, world, config(), j).step(0.0)

    class Smaller:
        def observe(self, now: float) -> Observation:
            obs, _ = reference_network()
            return Observation(obs.utilisation[:3], obs.cpu[:3], obs.age[:3])

    with Journal(path, NAMES) as j:
        controller = Controller(Smaller(), world, config(), j)
        with pytest.raises(InputError) as e:
            controller.step(100.0)
    assert str(e.value) == (
        f"{path}: the moves in force are for 4 sites, 4 plans, 0 sections and 0 prefixes; "
        "the network has 3, 4, 0 and 0: start a new journal"
    )


# ------------------------------------------------------------------ a real SIGKILL

SCRIPT = """\
import sys
sys.path.insert(0, {tests!r})
from test_control_journal import main
sys.exit(main(sys.argv[1:]))
"""


def start(tmp_path: Path, name: str, *args: object) -> subprocess.Popen[bytes]:
    script = tmp_path / "controller.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)), encoding="utf-8")
    with (tmp_path / f"{name}.out").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(script), *map(str, args)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def output(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.out").read_text(encoding="utf-8", errors="replace")


def decisions(path: Path) -> int:
    with Journal(path, NAMES) as j:
        return j.decisions()


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize(
    "die_at", [0, 3], ids=["killed-from-outside", "killed-between-commit-and-enforce"]
)
def test_restart_after_sigkill(tmp_path: Path, die_at: int) -> None:
    db, log = tmp_path / "journal.db", tmp_path / "network.jsonl"
    Journal(db, NAMES).close()  # made before the controller starts, so that it can be polled
    # paced at 0.2 s a step, the first run would take 8 s: it is killed long before
    first = start(tmp_path, "first", db, log, 0.0 if die_at else 0.2, die_at)
    try:
        if die_at:
            first.wait(timeout=20)
        else:
            deadline = time.monotonic() + 20
            while decisions(db) < 2:
                assert first.poll() is None, output(tmp_path, "first")
                assert time.monotonic() < deadline, "fewer than 2 decisions after 20 s"
                time.sleep(0.02)
            first.kill()
            first.wait(timeout=10)
    finally:
        stop(first)
    assert first.returncode == -signal.SIGKILL, output(tmp_path, "first")

    with Journal(db, NAMES) as j:
        latest = j.latest()
        assert latest is not None
        seq1, t1, s1 = latest
        assert seq1 == j.decisions() >= 2
        before = j.actions()
        journaled = dict(j.state(k) for k in range(1, seq1 + 1))
    lines = read_log(log)
    assert {line["pid"] for line in lines} <= {first.pid}
    # the network never ran a state that was not journaled first
    for line in lines:
        assert same(state_of(line), journaled[line["now"]])
    if die_at:  # decision 3 committed, then the process died before the network had it
        assert (seq1, t1) == (3, 200.0)
        assert [line["now"] for line in lines] == [0.0, 100.0]

    second = start(tmp_path, "second", db, log, 0.0, 0)
    try:
        second.wait(timeout=60)
    finally:
        stop(second)
    assert second.returncode == 0, output(tmp_path, "second")

    mine = [line for line in read_log(log) if line["pid"] == second.pid]
    # the first thing the restarted controller does: enforce the journal's last state
    assert mine[0]["now"] == t1
    assert mine[0]["reason"] == "resumed"
    assert same(state_of(mine[0]), s1)
    with Journal(db, NAMES) as j:
        final = j.latest()
        assert final is not None
        assert final[0] == j.decisions() == DECISIONS  # sequence numbers without a gap
        acts = j.actions()
        times = [j.state(k)[0] for k in range(1, DECISIONS + 1)]
    assert times == sorted(set(times))  # no step was decided twice
    assert acts[: len(before)] == before  # the history is untouched
    assert len(acts) > len(before)
    assert all(s > seq1 for s, _ in acts[len(before) :])
    keys = [(s, a.kind, a.site, a.plan, a.to) for s, a in acts]
    assert len(keys) == len(set(keys))
    np.testing.assert_allclose(final[2].shares(), forwarded(acts), rtol=0, atol=1e-12)
    assert same(state_of(mine[-1]), final[2])  # the network is in the journal's last state
    with uninterrupted(tmp_path) as ref:  # and where it would be had nothing happened
        assert ref.actions() == acts
        ref_latest = ref.latest()
        assert ref_latest is not None
        assert same(ref_latest[2], final[2])


def test_one_writer_per_journal(tmp_path: Path) -> None:
    """A second controller on a journal that one is writing is refused, naming the pid;
    once the first closes (or its process dies) the next may write."""
    path = tmp_path / "j.db"
    with Journal(path, NAMES) as first:
        first.claim()
        with Journal(path, NAMES) as second, pytest.raises(InputError) as err:
            second.claim()
        assert f"another controller (pid {os.getpid()}) is writing this journal" in str(err.value)
    with Journal(path, NAMES) as third:
        third.claim()  # the first let go when it closed
