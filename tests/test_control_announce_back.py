"""A prefix withdrawn for overload comes back when its users would fit again.

The Traffic Manager withdraws a prefix when a site is over its maximum, and announces it
again once the site could take the prefix's users back below acceptable.  What those
users cost *now* cannot be seen at the site (they are elsewhere); the decision core
scales what they cost when they left by how the traffic of the sites they went to has
changed since.  Before, the estimate stayed at the overload that had made the site
withdraw, which is above acceptable by definition: a site with one prefix never came
back, however quiet the day became.  These tests drive the core over many consecutive
decisions on a small network whose demand rises and falls.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anyedge.control.core import Config, Failover, Observation, State, apply, decide

CAP = np.array([1_000.0, 4_000.0, 4_000.0])  # A, B, C: CPU ms/s at 100 %
OWN = np.array([950.0, 1_200.0, 1_000.0])  # each site's own users at the peak
LANDS = np.array([[0.0, 0.6, 0.4], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # atlas: s → r


def config(prefixes: np.ndarray) -> Config:
    lat = np.array([[0, 10, 20], [10, 0, 15], [20, 15, 0]], dtype=float)
    return Config(
        maximum=np.full(3, 0.90),
        target=np.full(3, 0.80),
        acceptable=np.full(3, 0.70),
        latency_ms=lat,
        plans=("free", "pro", "business", "enterprise"),
        protected=(),
        can_forward=np.zeros(3, dtype=bool),  # withdrawal is the only tool here
        announced=prefixes,
        max_move_share=1.0,  # one prefix is all of A's traffic
        min_interval=60.0,
    )


def observe(own: np.ndarray, state: State, prefixes: np.ndarray) -> Observation:
    """What the sites report: a site's share of its own users is the share of its
    prefixes still announced; the rest land where the atlas says."""
    live = (prefixes & ~state.withdrawn).sum(axis=0) / prefixes.sum(axis=0)
    stays = own * live
    arriving = stays + LANDS.T @ (own - stays)
    cpu = np.zeros((3, 4))
    cpu[:, 0] = arriving  # all of it on the free plan
    return Observation(
        utilisation=arriving / CAP,
        cpu=cpu,
        age=np.zeros(3),
        capacity=CAP,
        arriving=cpu.copy(),
    )


def run_day(levels: list[float], prefixes: np.ndarray, step: float = 60.0) -> list[str]:
    """One decision per level of demand (a fraction of the peak); the kinds of A's
    prefix changes in order."""
    cfg, fo = config(prefixes), Failover(share=LANDS)
    state = State.empty(3, 4, prefixes=prefixes.shape[0])
    changes: list[str] = []
    for i, level in enumerate(levels):
        now = i * step
        plan = decide(observe(OWN * level, state, prefixes), state, cfg, now, fo)
        changes += [a.kind for a in plan.actions if a.kind in ("withdraw", "announce")]
        state = apply(state, plan, now)
        u = observe(OWN * level, state, prefixes).utilisation
        # a site announced back is never pushed over its maximum by that
        if plan.of("announce"):
            assert u[0] <= cfg.maximum[0] + 1e-9
    return changes


ONE = np.array([[True, True, True]])  # one prefix, announced by all three sites


def test_a_single_prefix_site_comes_back_when_the_day_quietens() -> None:
    peak, night = [1.0] * 5, [0.5] * 5
    assert run_day(peak + night, ONE) == ["withdraw", "announce"]


def test_it_stays_withdrawn_while_its_users_would_still_overload_it() -> None:
    # 0.8 of the peak is 760 ms/s at A: 76 %, over acceptable less the margin (65 %)
    assert run_day([1.0] * 3 + [0.8] * 10, ONE) == ["withdraw"]


def test_two_prefixes_come_back_one_at_a_time() -> None:
    two = np.array([[True, True, True], [True, True, True]])
    # the peak withdraws one of the two (475 ms/s each), which leaves A at 47.5 %; the
    # other's users would make it 95 % again until the night
    assert run_day([1.0] * 3 + [0.8] * 4 + [0.2] * 6, two) == ["withdraw", "announce"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.1, 1.4), min_size=5, max_size=40))
def test_no_announcement_flaps_on_a_random_day(levels: list[float]) -> None:
    """On any day, A's prefix is announced back only when its users fit at that level,
    an announcement is never withdrawn again at the same or a lower level, and after a
    quiet hour the prefix is back."""
    changes: list[tuple[str, float]] = []
    cfg, fo = config(ONE), Failover(share=LANDS)
    state = State.empty(3, 4, prefixes=1)
    for i, level in enumerate([*levels, 0.3, 0.3, 0.3]):
        obs = observe(OWN * level, state, ONE)
        plan = decide(obs, state, cfg, i * 60.0, fo)
        for a in plan.actions:
            if a.kind == "announce":
                fits = OWN[0] * level / CAP[0]
                assert fits <= cfg.acceptable[0] - cfg.hysteresis + 1e-6
            if a.kind in ("withdraw", "announce"):
                changes.append((a.kind, level))
        state = apply(state, plan, i * 60.0)
    for (k1, l1), (k2, l2) in pairwise(changes):
        if k1 == "announce" and k2 == "withdraw":
            assert l2 > l1 * (cfg.maximum[0] / (cfg.acceptable[0] - cfg.hysteresis)) - 1e-9
    assert not state.withdrawn.any()


def test_the_estimate_survives_the_journal() -> None:
    from anyedge.adapters.journal import pack_state, unpack_state

    cfg, fo = config(ONE), Failover(share=LANDS)
    state = State.empty(3, 4, prefixes=1)
    plan = decide(observe(OWN, state, ONE), state, cfg, 0.0, fo)
    state = apply(state, plan, 0.0)
    assert state.withdrawn[0, 0]
    back = unpack_state(pack_state(state))
    np.testing.assert_array_equal(back.withdrawal_basis(), state.withdrawal_basis())
    assert back.withdrawal_basis()[0, 0] > 0


def test_the_estimate_survives_a_control_plan_state_file() -> None:
    """`anyedge control plan` writes the state as JSON and reads it back next time."""
    from anyedge.control.codec import StateIn, state_from, state_to
    from anyedge.control.reasons import Names

    names = Names(("A", "B", "C"), ("free", "pro", "business", "enterprise"), (), ("192.0.2.0/24",))
    cfg, fo = config(ONE), Failover(share=LANDS)
    state = State.empty(3, 4, prefixes=1)
    state = apply(state, decide(observe(OWN, state, ONE), state, cfg, 0.0, fo), 0.0)
    doc = state_to(state, names)
    assert doc["withdrawn"] == [
        {"site": "A", "prefix": "192.0.2.0/24", "cpu": 950.0, "basis": 1_614.0}
    ]
    back = state_from(StateIn.model_validate(doc), names)
    np.testing.assert_array_equal(back.moved_by_withdrawal(), state.moved_by_withdrawal())
    np.testing.assert_array_equal(back.withdrawal_basis(), state.withdrawal_basis())
    # and the night brings the prefix back from the file's state as from the live one
    night = observe(OWN * 0.5, back, ONE)
    assert [a.kind for a in decide(night, back, cfg, 600.0, fo).of("announce")] == ["announce"]
