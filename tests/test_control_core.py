"""The Traffic Manager's decision core: the reference's worked examples, exactly, and the
rules that must hold on any network (hypothesis)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyedge.control.core import (
    Config,
    Failover,
    Observation,
    Plan,
    State,
    apply,
    decide,
)
from anyedge.control.split import assign, can_accept, take_from_plans, to_move

FREE, PRO, BUSINESS, ENTERPRISE = range(4)


# ------------------------------------------------------------ the reference, exactly


def test_how_much_to_move() -> None:
    # 90 % utilisation, target 85 %, 18,000 ms/s: target CPU 17,000, move 1,000
    assert to_move(18_000, 0.90, 0.85) == pytest.approx(1_000)
    assert to_move(18_000, 0.80, 0.85) == 0.0


def test_how_much_a_site_can_accept() -> None:
    # the same formula with acceptable for target: 40 % with 4,000 ms/s, acceptable 60 %
    assert can_accept(4_000, 0.40, 0.60) == pytest.approx(2_000)
    assert can_accept(4_000, 0.70, 0.60) == 0.0


def test_what_moves_plans_lowest_priority_first() -> None:
    taken = take_from_plans(1_000, [500, 400, 200, 1_000], [True, True, True, False])
    np.testing.assert_allclose(taken, [500, 400, 100, 0])
    shares = taken / np.array([500, 400, 200, 1_000])
    np.testing.assert_allclose(shares, [1.0, 1.0, 0.5, 0.0])  # free 100 %, pro 100 %, bus. 50 %


def test_where_it_goes_the_worked_example() -> None:
    taken = np.array([500.0, 400.0, 100.0, 0.0])
    split = assign(taken, receivers=[1, 2, 3], room=[300, 300, 1_000])  # B, C, D
    own = np.array([500.0, 400.0, 200.0, 1_000.0])
    share = split.cpu / own[:, None]
    # Business: 50 % → B; Pro: 50 % → B, 50 % → C; Free: 20 % → C, 80 % → D
    np.testing.assert_allclose(share[BUSINESS], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(share[PRO], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(share[FREE], [0.0, 0.2, 0.8])
    np.testing.assert_allclose(share[ENTERPRISE], [0.0, 0.0, 0.0])
    assert split.moved == pytest.approx(1_000)


def reference_network() -> tuple[Observation, Config]:
    """Site A at 90 % (free 500, pro 400, business 200, enterprise 16,900 = 18,000 ms/s,
    target 85 %); B, C, D at 100, 110 and 120 ms with room 300, 300 and 1,000."""
    cpu = np.array(
        [
            [500, 400, 200, 16_900],
            [1_200, 0, 0, 0],  # B: 1,200 at 40 % → 300 of room at acceptable 50 %
            [1_200, 0, 0, 0],  # C
            [4_000, 0, 0, 0],  # D: 4,000 at 40 % → 1,000
        ],
        dtype=float,
    )
    util = np.array([0.90, 0.40, 0.40, 0.40])
    lat = np.array(
        [[0, 100, 110, 120], [100, 0, 50, 50], [110, 50, 0, 50], [120, 50, 50, 0]], dtype=float
    )
    cfg = Config(
        maximum=np.full(4, 0.88),
        target=np.full(4, 0.85),
        acceptable=np.full(4, 0.50),
        latency_ms=lat,
        max_move_share=1.0,
    )
    return Observation(utilisation=util, cpu=cpu, age=np.zeros(4)), cfg


def test_decide_reproduces_the_worked_example() -> None:
    obs, cfg = reference_network()
    plan = decide(obs, State.empty(4, 4), cfg, now=0.0)
    got = {(a.plan, a.to): round(a.share, 9) for a in plan.of("forward")}
    assert got == {(BUSINESS, 1): 0.5, (PRO, 1): 0.5, (PRO, 2): 0.5, (FREE, 2): 0.2, (FREE, 3): 0.8}
    assert sum(a.cpu for a in plan.of("forward")) == pytest.approx(1_000)
    assert all(a.reason.code == "over_maximum" for a in plan.of("forward"))


def test_enterprise_moves_only_if_configured() -> None:
    obs, cfg = reference_network()
    obs = Observation(
        utilisation=obs.utilisation, cpu=obs.cpu * np.array([0, 0, 0, 1.0]), age=obs.age
    )
    cpu = obs.cpu.copy()
    cpu[1:, 0] = [1_200, 1_200, 4_000]
    obs = Observation(utilisation=obs.utilisation, cpu=cpu, age=obs.age)
    assert decide(obs, State.empty(4, 4), cfg, 0.0).of("forward") == []
    allowed = Config(**{**cfg.__dict__, "protected": ()})
    moved = decide(obs, State.empty(4, 4), allowed, 0.0).of("forward")
    assert {a.plan for a in moved} == {ENTERPRISE}


def test_fail_static_on_stale_telemetry() -> None:
    obs, cfg = reference_network()
    stale = Observation(utilisation=obs.utilisation, cpu=obs.cpu, age=np.full(4, 1e6))
    plan = decide(stale, State.empty(4, 4), cfg, 0.0)
    assert plan.empty
    assert plan.actions[0].reason.code == "no_fresh_telemetry"
    one = Observation(utilisation=obs.utilisation, cpu=obs.cpu, age=np.array([1e6, 0, 0, 0]))
    plan = decide(one, State.empty(4, 4), cfg, 0.0)
    assert plan.of("forward") == []
    assert any(a.kind == "hold" and a.site == 0 for a in plan.actions)


def test_reverts_come_before_accepting() -> None:
    obs, cfg = reference_network()
    s = apply(State.empty(4, 4), decide(obs, State.empty(4, 4), cfg, 0.0), now=0.0)
    # A has cooled down to 30 %; B is now overloaded: A takes its own traffic back and
    # does not accept B's, though it has room
    cpu = obs.cpu.copy()
    cpu[0] = [0, 0, 100, 5_000]
    util = np.array([0.30, 0.95, 0.40, 0.40])
    cool = Observation(utilisation=util, cpu=cpu, age=np.zeros(4))
    plan = decide(cool, s, cfg, now=1_000.0)
    back = plan.of("revert") + plan.of("handback")
    assert back
    assert all(a.site == 0 for a in back)
    assert all(a.to != 0 for a in plan.of("forward"))


def test_a_site_that_falls_idle_takes_back_everything_it_forwarded() -> None:
    obs, cfg = reference_network()
    s = apply(State.empty(4, 4), decide(obs, State.empty(4, 4), cfg, 0.0), now=0.0)
    assert s.shares()[0].sum() > 0
    # A's users stop sending anything (measured where requests enter): there is no
    # traffic to take back step by step, so every forwarded share goes back at once
    # (found in the lab, where load stops)
    cpu = obs.cpu.copy()
    cpu[0] = 0.0
    util = obs.utilisation.copy()
    util[0] = 0.0
    arriving = cpu.copy()
    idle = Observation(utilisation=util, cpu=cpu, age=np.zeros(4), arriving=arriving)
    plan = decide(idle, s, cfg, now=1_000.0)
    back = apply(s, plan, now=1_000.0)
    assert plan.of("revert")
    assert all(a.cpu == 0.0 for a in plan.of("revert"))
    assert back.shares()[0].sum() == 0.0


def test_min_interval_between_changes() -> None:
    obs, cfg = reference_network()
    s = apply(State.empty(4, 4), decide(obs, State.empty(4, 4), cfg, 0.0), now=0.0)
    again = decide(obs, s, cfg, now=10.0)
    assert again.of("forward") == []


def test_withdraw_only_where_receivers_can_take_it_and_never_the_last() -> None:
    obs, cfg = reference_network()
    two = np.array([[True, True, True, True], [True, False, False, False]])
    cfg = Config(
        **{**cfg.__dict__, "can_forward": np.array([False, True, True, True]), "announced": two}
    )
    state = State.empty(4, 4, prefixes=2)
    assert decide(obs, state, cfg, 0.0).of("withdraw") == []  # no failover known
    # half of A's traffic (one prefix of two) is 9,000 ms/s: D cannot take it
    crowd = Failover(share=np.array([[0, 0, 0, 1.0], [0] * 4, [0] * 4, [0] * 4]))
    plan = decide(obs, state, cfg, 0.0, crowd)
    assert plan.of("withdraw") == []
    assert plan.actions[-1].reason.code == "withdraw_risky"
    big = Config(**{**cfg.__dict__, "acceptable": np.array([0.5, 0.5, 0.5, 0.99])})
    quiet_d = Observation(utilisation=np.array([0.9, 0.4, 0.4, 0.2]), cpu=obs.cpu, age=obs.age)
    plan = decide(quiet_d, state, big, 0.0, crowd)
    (w,) = plan.of("withdraw")
    assert w.prefix == 0  # prefix 1 is announced only at A: never its last announcement


# ---------------------------------------------------------------- rules, on any network


@st.composite
def networks(draw: st.DrawFn) -> tuple[Observation, Config]:
    n = draw(st.integers(2, 8))
    util = np.array(draw(st.lists(st.floats(0.05, 1.3), min_size=n, max_size=n)))
    cpu = np.array(
        draw(
            st.lists(st.lists(st.floats(0, 5_000), min_size=4, max_size=4), min_size=n, max_size=n)
        )
    )
    cpu[:, 0] += 1.0
    pts = np.array(
        draw(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=n, max_size=n))
    )
    lat = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
    acc = draw(st.floats(0.3, 0.7))
    tgt = draw(st.floats(acc, 0.9))
    mx = draw(st.floats(tgt, 0.95))
    cfg = Config(
        maximum=np.full(n, mx),
        target=np.full(n, tgt),
        acceptable=np.full(n, acc),
        latency_ms=lat,
        max_move_share=draw(st.floats(0.01, 1.0)),
    )
    return Observation(utilisation=util, cpu=cpu, age=np.zeros(n)), cfg


@settings(max_examples=200, deadline=None)
@given(networks())
def test_rules_hold_on_any_network(net: tuple[Observation, Config]) -> None:
    obs, cfg = net
    plan = decide(obs, State.empty(obs.sites, 4), cfg, 0.0)
    fwd = plan.of("forward")
    total = obs.cpu.sum(axis=1)
    got = np.zeros(obs.sites)
    for a in fwd:
        got[a.to] += a.cpu
        assert a.plan != 3  # enterprise untouched unless configured
        assert obs.utilisation[a.site] > cfg.maximum[a.site]
        assert obs.utilisation[a.to] < cfg.acceptable[a.to]
        assert a.to != a.site
    # no receiver is pushed above its acceptable threshold
    after = np.where(obs.utilisation > 0, (total + got) / (total / obs.utilisation), 0.0)
    recv = got > 0
    assert np.all(after[recv] <= cfg.acceptable[recv] + 1e-9)
    # the cap on one decision
    assert sum(a.cpu for a in fwd) <= cfg.max_move_share * total.sum() + 1e-6
    # lower-priority plans give up everything before a higher one gives anything
    for s in {a.site for a in fwd}:
        moved = np.zeros(4)
        for a in fwd:
            if a.site == s:
                moved[a.plan] += a.cpu
        for p in range(1, 4):
            if moved[p] > 1e-9:
                assert moved[:p] == pytest.approx(obs.cpu[s, :p], abs=1e-6)
    # with nobody above the maximum, nothing moves
    if not np.any(obs.utilisation > cfg.maximum):
        assert fwd == []
    # one site over, enough room, budget and movable traffic: exactly the need moves
    over = np.flatnonzero(obs.utilisation > cfg.maximum)
    if over.size == 1:
        s = int(over[0])
        need = float(to_move(total[s], obs.utilisation[s], cfg.target[s]))
        room = can_accept(total, obs.utilisation, cfg.acceptable)
        room[s] = 0.0
        if need <= min(room.sum(), cfg.max_move_share * total.sum(), obs.cpu[s, :3].sum()):
            assert sum(a.cpu for a in fwd) == pytest.approx(need)


def test_preemption_makes_room_before_withdrawing() -> None:
    """A cannot forward; withdrawing its prefix would crowd D: D first forwards its own
    traffic to B and C, and only then may A withdraw."""
    obs, cfg = reference_network()
    announced = np.array([[True, True, True, True]])
    cfg = Config(
        **{
            **cfg.__dict__,
            "can_forward": np.array([False, True, True, True]),
            "announced": announced,
            "acceptable": np.array([0.5, 0.9, 0.9, 0.5]),
        }
    )
    crowd = Failover(share=np.array([[0, 0, 0, 1.0], [0] * 4, [0] * 4, [0] * 4]))
    plan = decide(obs, State.empty(4, 4, prefixes=1), cfg, 0.0, crowd)
    assert plan.of("withdraw") == []
    pre = plan.of("forward")
    assert pre
    assert all(a.site == 3 and a.to in (1, 2) for a in pre)
    assert all(a.reason.code == "make_room" for a in pre)


def test_duomog_shifts_within_a_site_and_back() -> None:
    """IAD02 is at 95 % while IAD as a whole is at 60 %: shift to its sister sections;
    once it has cooled, take the shift back."""
    cpu = np.array([[3_000.0, 1_000, 1_000, 1_000]])
    lat = np.zeros((1, 1))
    cfg = Config(
        maximum=np.array([0.9]),
        target=np.array([0.85]),
        acceptable=np.array([0.75]),
        latency_ms=lat,
    )
    obs = Observation(
        utilisation=np.array([0.60]),
        cpu=cpu,
        age=np.zeros(1),
        section_site=np.array([0, 0, 0]),
        section_utilisation=np.array([0.50, 0.95, 0.35]),
        section_cpu=np.array([2_000.0, 3_800, 1_400]),
    )
    plan = decide(obs, State.empty(1, 4, 3), cfg, 0.0)
    (shift,) = plan.of("shift")
    assert shift.section == 1
    assert shift.cpu == pytest.approx(3_800 - 3_800 * 0.85 / 0.95)
    assert plan.of("forward") == []
    state = apply(State.empty(1, 4, 3), plan, 0.0)
    assert state.shift[1] == pytest.approx(shift.cpu / 3_800)
    cool = Observation(
        utilisation=np.array([0.5]),
        cpu=cpu,
        age=np.zeros(1),
        section_site=obs.section_site,
        section_utilisation=np.array([0.5, 0.4, 0.5]),
        section_cpu=obs.section_cpu,
    )
    (back,) = decide(cool, state, cfg, 1_000.0).of("shift")
    assert back.share == pytest.approx(-min(state.shift[1], cfg.revert_step))


@settings(max_examples=150, deadline=None)
@given(networks(), st.data())
def test_forwarders_never_accept_and_stale_sites_do_nothing(
    net: tuple[Observation, Config], data: st.DataObject
) -> None:
    obs, cfg = net
    n = obs.sites
    forwarders = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    stale = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    state = State.empty(n, 4)
    fwd = state.shares().copy()
    for s in np.flatnonzero(forwarders):
        fwd[s, 0, (s + 1) % n] = 0.1
    state = State(fwd, state.shift, state.withdrawn, state.last_change)
    aged = Observation(utilisation=obs.utilisation, cpu=obs.cpu, age=np.where(stale, 1e6, 0.0))
    plan = decide(aged, state, cfg, now=1e9)
    for a in plan.actions:
        if a.kind in ("forward", "revert", "shift", "withdraw"):
            assert not stale[a.site], "a stale site acted"
        if a.kind == "forward":
            assert not forwarders[a.to], "a forwarding site accepted traffic"
            assert not stale[a.to], "traffic was sent to a stale site"
    if stale.all():
        assert plan.empty


def test_closed_loop_moves_then_reverts_without_oscillating() -> None:
    """A toy network: A's demand surges, then falls back.  The Traffic Manager forwards
    while A is over its maximum, never alternates forwarding and reverting at the same
    load, and has taken everything back once the surge is over."""
    cap = np.array([10_000.0, 20_000.0, 20_000.0])
    lat = np.array([[0, 10, 20], [10, 0, 10], [20, 10, 0]], dtype=float)
    cfg = Config(
        maximum=np.full(3, 0.9),
        target=np.full(3, 0.85),
        acceptable=np.full(3, 0.7),
        latency_ms=lat,
        max_move_share=1.0,
    )
    mix = np.array([0.4, 0.3, 0.2, 0.1])
    state = State.empty(3, 4)
    history: list[float] = []
    kinds: list[set[str]] = []
    for step in range(60):
        now = 100.0 * step
        demand = np.array([12_000.0 if 5 <= step < 25 else 6_000.0, 6_000.0, 6_000.0])
        arriving = demand[:, None] * mix[None, :]
        sent = arriving[:, :, None] * state.shares()  # (S, P, S)
        served = arriving - sent.sum(axis=2) + sent.sum(axis=0).T
        obs = Observation(utilisation=served.sum(axis=1) / cap, cpu=served, age=np.zeros(3))
        plan = decide(obs, state, cfg, now)
        kinds.append({a.kind for a in plan.actions if a.kind != "hold"})
        state = apply(state, plan, now)
        history.append(float(state.shares()[0].sum()))
        if 5 <= step < 25:
            assert "revert" not in kinds[-1]
        else:
            assert "forward" not in kinds[-1]
    assert max(history) > 0
    after = history[25:]
    assert all(b <= a + 1e-12 for a, b in pairwise(after))  # only down
    assert history[-1] == 0.0


def test_withdrawn_prefix_is_announced_again_when_there_is_room() -> None:
    obs, cfg = reference_network()
    two = np.array([[True, True, True, True], [True, True, False, False]])
    cfg = Config(**{**cfg.__dict__, "announced": two})
    state = State.empty(4, 4, prefixes=2)
    wd = state.withdrawn.copy()
    wd[0, 0] = True
    state = State(state.shares(), state.shift, wd, state.last_change)
    cap = np.array([20_000.0, 3_000, 3_000, 10_000])
    busy = Observation(
        utilisation=np.array([0.60, 0.4, 0.4, 0.4]),
        cpu=np.array([[12_000.0, 0, 0, 0], *obs.cpu[1:]]),
        age=np.zeros(4),
        capacity=cap,
    )
    # 12,000 on one live prefix: the withdrawn one would bring ~12,000 more, 120 %: wait
    assert decide(busy, state, cfg, 0.0).of("announce") == []
    calm = Observation(
        utilisation=np.array([0.15, 0.4, 0.4, 0.4]),
        cpu=np.array([[3_000.0, 0, 0, 0], *obs.cpu[1:]]),
        age=np.zeros(4),
        capacity=cap,
    )
    (a,) = decide(calm, state, cfg, 0.0).of("announce")
    assert (a.site, a.prefix) == (0, 0)
    assert not apply(state, Plan((a,)), 0.0).withdrawn[0, 0]
