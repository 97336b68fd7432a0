"""The decision core walks each site's short list of nearest neighbours
(:mod:`anyedge.control.neighbours`) instead of sorting its whole latency row: the lists
are the first entries of the row's stable sort, and decisions are the same action for
action, float for float, whichever list a walk goes through."""

from __future__ import annotations

import contextlib
import gc
from dataclasses import replace

import numpy as np
import pytest

from anyedge.control import core, neighbours
from anyedge.control.core import Config, Observation, Plan, State, apply, decide


def rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Latencies with many ties (whole milliseconds), some unknown (inf, NaN)."""
    lat = rng.integers(1, 40, (n, n)).astype(np.float64)
    lat[rng.random((n, n)) < 0.05] = np.inf
    lat[rng.random((n, n)) < 0.02] = np.nan
    return lat


def test_short_lists_are_the_head_of_the_stable_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(neighbours, "K", 5)
    lat = rows(np.random.default_rng(7), 60)
    for s in range(lat.shape[0]):
        short = neighbours.nearest(lat, s)
        full = np.argsort(lat[s], kind="stable")
        assert not short.whole
        assert len(short.ids) >= 5
        assert short.ids == full[: len(short.ids)].tolist()
        assert short.ms == lat[s, short.ids].tolist()
        assert neighbours.everyone(lat, s).tolist() == full.tolist()
        # the walk: the short list, then the rest of the whole order in chunks
        chunks = list(neighbours.walk(lat, s))
        assert len(chunks) > 1
        assert [r for ids, _ in chunks for r in ids] == full.tolist()
        walked = [m for _, ms in chunks for m in ms]
        np.testing.assert_array_equal(walked, lat[s, full])


def network(seed: int, n: int) -> tuple[Observation, State, Config]:
    rng = np.random.default_rng(seed)
    cap = rng.uniform(5_000, 50_000, n)
    u = rng.uniform(0.2, 0.7, n)
    hot = rng.choice(n, n // 5, replace=False)
    u[hot] = rng.uniform(0.92, 1.4, hot.size)
    cfg = Config(
        maximum=np.full(n, 0.9),
        target=np.full(n, 0.85),
        acceptable=np.full(n, 0.75),
        latency_ms=rows(rng, n),
        max_move_share=1.0,
    )
    cpu = (cap * u)[:, None] * rng.dirichlet(np.ones(4), n)
    obs = Observation(utilisation=u, cpu=cpu, age=np.zeros(n), capacity=cap)
    return obs, State.empty(n, 4), cfg


def plans(seed: int, n: int) -> list[Plan]:
    """Four decisions in a row, each carried out, on a fresh copy of the table."""
    obs, state, cfg = network(seed, n)
    out = []
    for k in range(4):
        now = 100.0 * k
        plan = decide(obs, state, cfg, now)
        out.append(plan)
        state = apply(state, plan, now)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_decisions_are_the_same_through_short_lists(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = plans(seed, 150)  # K = 32: short lists of about 32 nearest
    monkeypatch.setattr(neighbours, "K", 1)  # walks run off their short lists at once
    tiny = plans(seed, 150)
    monkeypatch.setattr(neighbours, "K", 10_000)  # no short lists: every row sorted
    full = plans(seed, 150)
    assert sum(len(p.of("forward")) for p in full) > 20
    for a, b, c in zip(whole, tiny, full, strict=True):
        assert a.actions == b.actions == c.actions


def test_a_decision_pauses_the_collector_and_leaves_it_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``decide`` runs with Python's cyclic garbage collector off (its collections grew
    with the sites) and leaves it on or off as it found it, also when it raises; the
    plans are the same as with the collector running through them."""
    seen: list[bool] = []
    real = neighbours.walk

    def walk(lat: np.ndarray, s: int):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        yield from real(lat, s)

    monkeypatch.setattr(core, "walk", walk)
    paused = plans(3, 150)
    assert seen
    assert not any(seen)
    assert gc.isenabled()
    monkeypatch.setattr(core, "_collector_paused", contextlib.nullcontext)
    assert plans(3, 150) == paused
    monkeypatch.undo()
    gc.disable()
    try:
        plans(3, 150)
        assert not gc.isenabled()
    finally:
        gc.enable()
    obs, state, cfg = network(3, 150)
    with pytest.raises(ValueError, match="prefixes"):  # a state that does not fit
        decide(obs, replace(state, withdrawn=np.zeros((2, 150), np.bool_)), cfg, 0.0)
    assert gc.isenabled()
