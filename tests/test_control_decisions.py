"""The Traffic Manager over many consecutive decisions, on random networks whose load
changes between decisions.

A small true network stands behind the core: each site's own users send CPU time per
plan (``own``), which changes from one decision to the next; the moves in force decide
where it is served.  The core sees only what a site would report — CPU time served per
plan, utilisation, and (like the twin) its own users' traffic measured where it enters —
and after every decision the test checks, against the truth:

* no site sends on traffic it was sent: every forward is a share of the sender's own
  users' traffic, and no plan is forwarded more than whole;
* every revert is at most one revert step and says the CPU time it brings back;
* no site ends above its acceptable threshold because of a revert;
* the cap holds for the sum of all kinds of action;
* no forward is undone and redone (or redone and undone) within ``min_interval``;
* no site receives while above its maximum, and nothing is sent to a site above its
  acceptable threshold;
* the CPU time moved is the sum of the actions' CPU time.

The networks start with moves in force of every share, 1.0 included, and chains of
forwards (A→B→C→D).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyedge.control.core import Config, Observation, Plan, State, apply, decide, flows

P = 4
DECISIONS = 12


class Truth:
    """A network of ``n`` sites and what its users really send."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.rng, self.n = rng, n
        xy = rng.uniform(0, 100, (n, 2))
        self.lat = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
        self.cap = rng.uniform(5_000, 50_000, n)
        mix = rng.dirichlet(np.ones(P), n)
        self.own = self.cap[:, None] * rng.uniform(0.2, 1.1, n)[:, None] * mix
        acc = rng.uniform(0.5, 0.75, n)
        tgt = acc + rng.uniform(0.05, 0.15, n)
        self.cfg = Config(
            maximum=np.minimum(tgt + rng.uniform(0.02, 0.1, n), 0.99),
            target=tgt,
            acceptable=acc,
            latency_ms=self.lat,
            max_move_share=float(rng.choice([0.02, 0.1, 1.0])),
            min_interval=60.0,
        )

    def drift(self) -> None:
        self.own *= self.rng.lognormal(0.0, 0.15, self.own.shape)
        surge = self.rng.random(self.n) < 0.05
        self.own[surge] *= self.rng.uniform(1.5, 3.0)
        calm = self.rng.random(self.n) < 0.05
        self.own[calm] *= self.rng.uniform(0.1, 0.5)

    def carried(self, state: State) -> np.ndarray:
        """(S, P, S) true CPU ms/s each forward carries."""
        return np.asarray(self.own[:, :, None] * state.shares())

    def served(self, state: State) -> np.ndarray:
        c = self.carried(state)
        return np.asarray(self.own * (1 - state.shares().sum(axis=2)) + c.sum(axis=0).T)

    def observe(self, state: State, measured: bool) -> Observation:
        served = self.served(state)
        return Observation(
            utilisation=served.sum(axis=1) / self.cap,
            cpu=served,
            age=np.zeros(self.n),
            capacity=self.cap.copy(),
            arriving=self.own.copy() if measured else None,
        )

    def initial_state(self) -> State:
        """Moves in force of every share, 1.0 included, and a chain A→B→C→D."""
        n, rng = self.n, self.rng
        fwd = np.zeros((n, P, n))
        senders = rng.choice(n, size=max(2, n // 5), replace=False)
        for s in senders.tolist():
            p = int(rng.integers(0, P - 1))
            d = int(rng.integers(0, n - 1))
            d += d >= s
            fwd[s, p, d] = float(rng.choice([1.0, 0.5, rng.uniform(0.01, 1.0)]))
        a, b, c, d = rng.choice(n, size=4, replace=False).tolist()
        for src, dst in ((a, b), (b, c), (c, d)):
            fwd[src, 0, :] = 0.0
            fwd[src, 0, dst] = 0.5
        state = State.empty(n, P)
        return State(
            forward=fwd,
            shift=state.shift,
            withdrawn=state.withdrawn,
            last_change=state.last_change,
            forward_cpu=self.own[:, :, None] * fwd,
        )


def check(
    truth: Truth,
    before: State,
    after: State,
    obs: Observation,
    plan: Plan,
    now: float,
    moves: dict[tuple[int, int], list[tuple[float, str]]],
) -> None:
    cfg, own = truth.cfg, truth.own
    total = float(obs.cpu.sum())
    moving = [a for a in plan.actions if a.kind != "hold"]
    # the cap holds for every kind of action together
    assert sum(a.cpu for a in moving) <= cfg.max_move_share * total * (1 + 1e-9) + 1e-6
    # no plan forwarded more than whole; forwards are shares of the sender's own users
    assert np.all(after.shares().sum(axis=2) <= 1 + 1e-9)
    assert np.all(after.shares() >= 0)
    for a in plan.of("forward"):
        assert a.cpu == pytest.approx(a.share * own[a.site, a.plan], rel=1e-6, abs=1e-6)
        assert obs.utilisation[a.to] < cfg.acceptable[a.to], "sent to a site with no room"
        assert not before.shares()[a.to].any() or not after.shares()[a.to].any(), (
            "a site that forwards received"
        )
    # reverts: one step at most, their CPU said, never past acceptable
    fwd_before = truth.carried(before).sum(axis=(1, 2))
    for a in plan.of("revert"):
        true_cpu = own[a.site, a.plan] * a.share
        assert a.cpu == pytest.approx(true_cpu, rel=1e-6, abs=1e-6), "revert CPU misstated"
        step = max(cfg.revert_step * fwd_before[a.site], cfg.revert_floor * own[a.site].sum())
        assert a.cpu <= step * (1 + 1e-9) + 1e-6, "more than one revert step"
    served_after = truth.served(after).sum(axis=1)
    for s in {a.site for a in plan.of("revert")}:
        assert served_after[s] / truth.cap[s] <= cfg.acceptable[s] + 1e-9, (
            "a revert left the site above acceptable"
        )
    # the CPU moved is the sum of the actions' CPU
    change = truth.carried(after).sum() - truth.carried(before).sum()
    said = (
        sum(a.cpu for a in plan.of("forward"))
        - sum(a.cpu for a in plan.of("revert"))
        - sum(a.cpu for a in plan.of("handback"))
    )
    assert change == pytest.approx(said, rel=1e-6, abs=1e-6)
    # no site receives while above its maximum (unless the cap stopped the hand-back)
    hot = obs.utilisation > cfg.maximum
    capped = {a.site for a in plan.of("hold") if a.reason.code == "short_cap"}
    receives = after.shares().sum(axis=(0, 1)) > 1e-12
    for s in np.flatnonzero(hot & receives).tolist():
        assert s in capped, f"site {s} above its maximum still receives"
    # no flapping: a plan's forward is not undone and redone within min_interval
    for a in plan.of("forward") + plan.of("revert"):
        if a.reason.code == "replace":
            continue  # placing what a hot receiver handed back: not the site's own choice
        key = (a.site, a.plan)
        for t, kind in moves.get(key, []):
            if kind != a.kind and now - t < cfg.min_interval:
                raise AssertionError(f"{a.kind} of {key} {now - t:.0f} s after a {kind}")
        moves.setdefault(key, []).append((now, a.kind))
    # every shortfall says so
    for s in np.flatnonzero(hot & (obs.age <= cfg.stale_after)).tolist():
        if served_after[s] / truth.cap[s] > cfg.maximum[s] + 1e-6 and s not in {
            a.site for a in moving
        }:
            assert any(a.site == s for a in plan.of("hold")) or (
                now - before.last_change[s] < cfg.min_interval
            ), f"site {s} stays above its maximum with no word"


def play(truth: Truth, measured: bool, steps: list[float]) -> None:
    """``DECISIONS`` decisions, each checked; the load drifts between them when the
    decision times vary (``steps``), and stays put when they are all equal."""
    state = truth.initial_state()
    moves: dict[tuple[int, int], list[tuple[float, str]]] = {}
    now = 0.0
    for _ in range(DECISIONS):
        obs = truth.observe(state, measured=measured)
        plan = decide(obs, state, truth.cfg, now)
        after = apply(state, plan, now)
        check(truth, state, after, obs, plan, now, moves)
        state = after
        now += float(truth.rng.choice(steps))
        if len(steps) > 1:
            truth.drift()


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([20, 60, 300]))
def test_many_decisions_on_random_networks(seed: int, n: int) -> None:
    play(Truth(np.random.default_rng(seed), n), measured=True, steps=[30.0, 60.0, 120.0])


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_many_decisions_estimating_own_traffic(seed: int) -> None:
    """Without the measurement of own traffic: the core solves it from what sites serve
    and the CPU time the state recorded (steady load, so the truth is knowable)."""
    play(Truth(np.random.default_rng(seed), 40), measured=False, steps=[60.0])


def test_own_traffic_of_a_chain_of_forwards() -> None:
    """A→B→C→D, each forwarding half of its own free traffic to the next; every site's
    own users send 1,000 ms/s.  D serves its own 1,000 and half of C's."""
    n = 4
    fwd = np.zeros((n, 1, n))
    for s in range(3):
        fwd[s, 0, s + 1] = 0.5
    state = State.empty(n, 1)
    state = State(fwd, state.shift, state.withdrawn, state.last_change)
    served = np.array([[500.0], [1_000.0], [1_000.0], [1_500.0]])
    obs = Observation(utilisation=served[:, 0] / 10_000, cpu=served, age=np.zeros(n))
    fl = flows(obs, state)
    np.testing.assert_allclose(fl.arriving[:, 0], [1_000.0] * 4)
    np.testing.assert_allclose(fl.cpu, [500.0] * 3)


def test_a_whole_plan_forwarded_is_known_from_the_state() -> None:
    """A forwards all its free traffic to B: A cannot see it, the state says 500 ms/s."""
    fwd = np.zeros((2, 1, 2))
    fwd[0, 0, 1] = 1.0
    carried = 500.0 * (fwd > 0)
    e = State.empty(2, 1)
    state = State(fwd, e.shift, e.withdrawn, e.last_change, forward_cpu=carried)
    served = np.array([[0.0], [1_500.0]])
    obs = Observation(utilisation=served[:, 0] / 10_000, cpu=served, age=np.zeros(2))
    fl = flows(obs, state)
    np.testing.assert_allclose(fl.arriving[:, 0], [500.0, 1_000.0])
