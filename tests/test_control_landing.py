"""A site that withdraws reads only where its users land (:mod:`anyedge.control.landing`)
and the receivers' room is recomputed only where loads changed: the decisions are the
same, action for action and float for float, as when every receiver's room is
recomputed after each withdrawal (what the core did before)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from anyedge.control import core, landing
from anyedge.control.core import EPS, Config, Failover, Observation, Plan, State, apply, decide


def test_a_row_is_its_non_zero_entries_read_once() -> None:
    share = np.zeros((4, 4))
    share[1, [0, 3]] = [0.25, 0.75]
    share[2, 2] = np.nan
    row = landing.row(share, 1)
    assert row.ids.tolist() == [0, 3]
    assert row.share.tolist() == [0.25, 0.75]
    assert row.total == 1.0
    assert landing.row(share, 1) is row  # kept for as long as the array lives
    assert landing.row(share, 0).ids.size == 0
    assert landing.row(share, 0).total == 0.0
    assert landing.row(share, 2).ids.tolist() == [2]  # unknown is not zero
    single = np.float32(1) / np.float32(3)
    f32 = np.full((2, 2), single, dtype=np.float32)
    assert landing.row(f32, 0).share.dtype == np.float32  # the array's own arithmetic


def world(seed: int, n: int) -> tuple[Observation, State, Config, Failover]:
    """Half the sites cannot forward; the atlas sends a site's users to its 1-4 nearest
    (sometimes losing some of them, sometimes to a site of unknown latency); three or four
    prefixes, not all announced everywhere."""
    rng = np.random.default_rng(seed)
    lat = rng.integers(1, 60, (n, n)).astype(np.float64)
    lat[rng.random((n, n)) < 0.02] = np.inf
    cap = rng.uniform(5_000, 50_000, n)
    u = rng.uniform(0.1, 0.6, n)
    hot = rng.choice(n, n // 4, replace=False)
    u[hot] = rng.uniform(0.92, 1.2, hot.size)
    q = 3 + seed % 2
    announced = rng.random((q, n)) < 0.85
    share = np.zeros((n, n), dtype=np.float32 if seed % 3 == 0 else np.float64)
    others = lat + np.diag(np.full(n, np.inf))
    for s in range(n):
        k = int(rng.integers(1, 5))
        to = np.argsort(others[s], kind="stable")[:k]
        w = rng.dirichlet(np.ones(k))
        if rng.random() < 0.05:
            w *= 0.9
        share[s, to] = w
    cfg = Config(
        maximum=np.full(n, 0.9),
        target=np.full(n, 0.85),
        acceptable=np.full(n, 0.75),
        latency_ms=lat,
        max_move_share=float(rng.choice([1.0, 0.1])),
        can_forward=rng.random(n) < 0.5,
        announced=announced,
    )
    cpu = (cap * u)[:, None] * rng.dirichlet(np.ones(4), n)
    obs = Observation(utilisation=u, cpu=cpu, age=np.zeros(n), capacity=cap)
    state = replace(State.empty(n, 4), withdrawn=np.zeros((q, n), dtype=np.bool_))
    return obs, state, cfg, Failover(share, known=rng.random(n) > 0.05)


def plans(seed: int, n: int) -> list[Plan]:
    obs, state, cfg, fo = world(seed, n)
    out = []
    for k in range(4):
        now = 100.0 * k
        plan = decide(obs, state, cfg, now, fo)
        out.append(plan)
        state = apply(state, plan, now)
    return out


def _every_receiver(self: core._Decision) -> None:
    """The refresh as it was: every receiver's room from its load."""
    rec = np.asarray(self.room) > EPS
    self.room = np.where(rec, self.capacc - self.load, 0.0).tolist()


@pytest.mark.parametrize("seed", range(6))
def test_withdrawals_decide_the_same_as_with_every_receiver_recomputed(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = plans(seed, 160)
    monkeypatch.setattr(core._Decision, "refresh_room", _every_receiver)
    slow = plans(seed, 160)
    # several withdrawals in one decision, forwards around them: the room after a
    # withdrawal matters to what comes next
    assert max(sum(a.kind == "withdraw" for a in p.actions) for p in fast) >= 2
    assert sum(len(p.of("forward")) for p in fast) > 100
    assert [p.actions for p in fast] == [p.actions for p in slow]
