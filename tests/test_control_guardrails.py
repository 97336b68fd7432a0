"""Guardrails of the decision core, each from a case that once broke it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from anyedge.control.core import Config, Failover, Observation, State, apply, decide
from test_control_core import reference_network


def one_prefix_everywhere(cfg: Config, forward: bool = False) -> Config:
    return replace(
        cfg, can_forward=np.array([forward] * 4), announced=np.ones((1, 4), dtype=np.bool_)
    )


def test_no_withdrawal_where_the_atlas_knows_nothing() -> None:
    obs, cfg = reference_network()
    cfg = one_prefix_everywhere(cfg)
    share = np.zeros((4, 4))
    share[0, 3] = 1.0
    unknown = Failover(share=share, known=np.array([False, True, True, True]))
    plan = decide(obs, State.empty(4, 4, prefixes=1), cfg, 0.0, unknown)
    assert plan.of("withdraw") == []
    assert plan.actions[-1].reason.code == "no_atlas"


def test_no_withdrawal_that_strands_users() -> None:
    obs, cfg = reference_network()
    cfg = one_prefix_everywhere(cfg)
    share = np.zeros((4, 4))
    share[0, 3] = 0.9  # a tenth of A's users would find no site
    plan = decide(obs, State.empty(4, 4, prefixes=1), cfg, 0.0, Failover(share=share))
    assert plan.of("withdraw") == []
    assert plan.actions[-1].reason.code == "users_lost"


def test_two_sites_never_withdraw_a_prefix_to_nowhere() -> None:
    """A and B are both over the maximum and announce the only prefix with nobody else:
    one of them may withdraw it, never both."""
    obs, cfg = reference_network()
    util = np.array([0.95, 0.95, 0.2, 0.2])
    cap = np.array([20_000.0, 20_000, 100_000, 100_000])
    cpu = np.array([[19_000.0, 0, 0, 0], [19_000, 0, 0, 0], [20_000, 0, 0, 0], [20_000, 0, 0, 0]])
    obs = Observation(utilisation=util, cpu=cpu, age=np.zeros(4), capacity=cap)
    announced = np.array([[True, True, False, False]])
    cfg = replace(
        cfg,
        can_forward=np.zeros(4, dtype=np.bool_),
        announced=announced,
        acceptable=np.full(4, 0.9),
        target=np.full(4, 0.85),
        maximum=np.full(4, 0.9),
    )
    # the atlas may be out of date: it sends A's users to C and B's to D, both with room
    share = np.array([[0, 0, 1.0, 0], [0, 0, 0, 1.0], [0] * 4, [0] * 4])
    plan = decide(obs, State.empty(4, 4, prefixes=1), cfg, 0.0, Failover(share=share))
    assert len(plan.of("withdraw")) == 1
    assert plan.actions[-1].reason.code == "last_announcement"
    after = apply(State.empty(4, 4, prefixes=1), plan, 0.0)
    assert (announced & ~after.withdrawn).any()


def test_a_withdrawal_counts_against_the_cap() -> None:
    obs, cfg = reference_network()
    cfg = replace(
        one_prefix_everywhere(cfg), max_move_share=0.01, acceptable=np.array([0.5, 0.5, 0.5, 0.99])
    )
    share = np.zeros((4, 4))
    share[0, 3] = 1.0
    quiet_d = Observation(utilisation=np.array([0.9, 0.4, 0.4, 0.05]), cpu=obs.cpu, age=obs.age)
    plan = decide(quiet_d, State.empty(4, 4, prefixes=1), cfg, 0.0, Failover(share=share))
    assert plan.of("withdraw") == []
    assert plan.actions[-1].reason.code == "withdraw_over_cap"


def test_preemption_ends_in_the_withdrawal() -> None:
    """A cannot forward; D, where A's users would land, first makes room by forwarding
    its own traffic; the room is kept (no revert) and A withdraws when it is enough."""
    cap = np.array([10_000.0, 40_000, 40_000, 10_000])
    lat = np.array(
        [[0, 100, 110, 20], [100, 0, 50, 50], [110, 50, 0, 50], [20, 50, 50, 0]], dtype=float
    )
    cfg = Config(
        maximum=np.full(4, 0.9),
        target=np.full(4, 0.85),
        acceptable=np.full(4, 0.7),
        latency_ms=lat,
        can_forward=np.array([False, True, True, True]),
        announced=np.ones((2, 4), dtype=np.bool_),
        max_move_share=1.0,
    )
    share = np.zeros((4, 4))
    share[0, 3] = 1.0
    fo = Failover(share=share)
    demand = np.array([9_500.0, 8_000, 8_000, 6_000])
    state = State.empty(4, 4, prefixes=2)
    withdrawn_at = None
    for step in range(30):
        now = 100.0 * step
        own = demand.copy()
        own[0] *= 1 - state.withdrawn[:, 0].mean()  # half of A's users per prefix withdrawn
        own[3] += demand[0] * state.withdrawn[:, 0].mean()
        sent = own[:, None] * state.shares().sum(axis=1)  # plans collapsed: shares per site
        served = own - sent.sum(axis=1) + sent.sum(axis=0)
        cpu = np.zeros((4, 4))
        cpu[:, 0] = served
        obs = Observation(utilisation=served / cap, cpu=cpu, age=np.zeros(4), capacity=cap)
        plan = decide(obs, state, cfg, now, fo)
        kinds = {(a.kind, a.site) for a in plan.actions}
        assert not ({("revert", 3), ("forward", 3)} <= kinds), "D must not flap"
        state = apply(state, plan, now)
        if state.withdrawn[:, 0].any() and withdrawn_at is None:
            withdrawn_at = step
    assert withdrawn_at is not None


def test_withdrawn_prefix_comes_back_without_flapping() -> None:
    """A loses half its servers, withdraws its prefix, gets them back: it announces the
    prefix again once, when the traffic the prefix carried fits, and stays announced."""
    lat = np.array([[0, 10], [10, 0]], dtype=float)
    cfg = Config(
        maximum=np.full(2, 0.9),
        target=np.full(2, 0.85),
        acceptable=np.full(2, 0.7),
        latency_ms=lat,
        can_forward=np.zeros(2, dtype=np.bool_),
        announced=np.array([[True, True]]),
        max_move_share=1.0,
    )
    fo = Failover(share=np.array([[0, 1.0], [1.0, 0]]))
    state = State.empty(2, 1, prefixes=1)
    changes = []
    for step in range(40):
        now = 100.0 * step
        cap = np.array([10_000.0 if 5 <= step < 15 else 20_000.0, 100_000.0])
        a = 0.0 if state.withdrawn[0, 0] else 12_000.0
        served = np.array([a, 10_000.0 + 12_000.0 - a])
        obs = Observation(
            utilisation=served / cap, cpu=served[:, None], age=np.zeros(2), capacity=cap
        )
        plan = decide(obs, state, cfg, now, fo)
        changes += [(step, a.kind) for a in plan.actions if a.kind in ("withdraw", "announce")]
        state = apply(state, plan, now)
    assert [k for _, k in changes] == ["withdraw", "announce"]
    assert not state.withdrawn.any()


def test_an_idle_site_with_known_capacity_receives() -> None:
    obs, cfg = reference_network()
    util = np.array([0.90, 0.0, 0.0, 0.0])
    cpu = obs.cpu.copy()
    cpu[1:] = 0.0
    idle = Observation(
        utilisation=util, cpu=cpu, age=obs.age, capacity=np.array([20_000.0, 3_000, 3_000, 3_000])
    )
    fwd = decide(idle, State.empty(4, 4), cfg, 0.0).of("forward")
    assert sum(a.cpu for a in fwd) == pytest.approx(1_000)


def test_no_receiver_at_an_unknown_distance() -> None:
    obs, cfg = reference_network()
    lat = cfg.latency_ms.copy()
    lat[0, 2] = lat[2, 0] = np.inf
    fwd = decide(obs, State.empty(4, 4), replace(cfg, latency_ms=lat), 0.0).of("forward")
    assert fwd
    assert all(a.to != 2 for a in fwd)


def test_traffic_received_is_never_sent_on() -> None:
    """B receives A's free traffic; when B is then over its maximum it forwards only its
    own users' traffic, measured without what A sends it."""
    obs, cfg = reference_network()
    state = State.empty(4, 4)
    fwd = state.shares().copy()
    fwd[0, 0, 1] = 1.0  # all of A's free (500 ms/s) goes to B
    state = replace(state, forward=fwd)
    cpu = obs.cpu.copy()
    cpu[0, 0] = 0.0
    cpu[1, 0] = 1_200 + 500  # B serves its own 1,200 and A's 500
    hot_b = Observation(utilisation=np.array([0.85, 0.95, 0.4, 0.4]), cpu=cpu, age=obs.age)
    moved = sum(a.cpu for a in decide(hot_b, state, cfg, 0.0).of("forward") if a.site == 1)
    assert moved <= 1_200 + 1e-6


def test_the_observation_digest_is_the_same_in_another_process() -> None:
    code = (
        "import numpy as np\nfrom anyedge.control.core import Observation\n"
        "from anyedge.adapters.journal import observation_digest\n"
        "print(observation_digest(Observation(np.array([0.5]), np.ones((1, 2)), "
        "np.zeros(1))))\n"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1
