"""Origin fetches in the twin: cache misses, the path Argo chooses, Orpheus's reroutes.

A share of the requests each site serves misses its cache (per plan: the scenario's
``cache_miss``, :data:`DEFAULT_MISS` by default) and is fetched from the customer's
origin; a site's misses spread evenly over the world's origins.  For every (landing
site, origin) pair the candidates are, in this order:

* slot 0, **the backbone all the way**: to the origin's *home* site (the site with the
  fastest transit to it) and out there, as SR-TE carries a fetch across continents;
* slot 1, **the backbone, then transit**: to the best other egress site
  (:func:`anyedge.backbone.best_via` over the backbone as the events left it), when that
  is not the home site;
* both leave the egress over its fastest transit provider that is not losing packets,
  and neither exists when the landing site is the egress itself;
* slots 2.., **transit**: each of the landing site's transit providers (up to
  :data:`MAX_PROVIDERS`), a provider's round trip the world's transit round trip
  (:func:`anyedge.backbone.transit_rtt`) — the first provider's exactly, each other's
  times a bias of its own between 1 and 1 + :data:`PROVIDER_SPREAD` drawn from the
  scenario's seed.

Every *step* (the twin's sample interval, a minute by default):

1. **Events** set each candidate's true round trip and loss.  ``subsea_cut``: transit
   between two continents (``regions``) takes ``factor`` times as long and loses
   ``loss``; the backbone links it names are gone and the backbone reroutes.
   ``transit_congestion``: one provider (``asn``) at one ``site`` takes ``factor`` times
   as long and loses ``loss``.
2. **Argo** probes every candidate (a probe is lost with the path's loss; the round trip
   has lognormal noise, :data:`NOISE` per kind) and chooses by the rule of
   :class:`anyedge.backbone.Argo`, written over arrays: an exponentially weighted
   estimate, a switch only past the margin and after the hold, stale estimates ignored.
3. **Orpheus** — the real :class:`anyedge.backbone.Orpheus` — gets the outcomes of
   fetches over each path (landing site, candidate, origin) that is losing or down: one
   every ``window_s / (2 min_samples)`` (1 s) while it is up, a probe every
   :data:`PROBE_S` while it is down; every other path is healthy and needs no
   bookkeeping (the cost grows with the paths that lose packets, not with all paths).
   A pair uses Argo's choice while Orpheus holds it up, else its next candidate that is
   up by Argo's estimate.

Recorded per step and pair: the round trip of the path used, which candidate it is, the
share of fetches that failed, and the share that would have failed without Orpheus (on
Argo's choice regardless). None of it depends on the controller, so a :class:`Fetches`
is computed once per scenario and each run weighs it by its own misses per site and step
(:func:`tally`). Pairs named in ``watch`` also keep every candidate's probed round trip
per step (:meth:`Fetches.series`), the post's chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from ..backbone import Argo, Graph, Orpheus, best_via, transit_rtt
from ..model.network import SessionKind, Sessions
from ..model.summary import continent_of
from ..model.world import World
from .scenario import Event

FloatArray = npt.NDArray[np.float64]
DEFAULT_MISS = 0.10  # share of served requests that miss the cache, for every plan
MAX_PROVIDERS = 3  # transit candidates per landing site
BACKBONE_SLOTS = 2  # backbone candidates: all the way to the origin's site; then transit
PROVIDER_SPREAD = 0.06  # another provider's round trip: the first's times 1 to 1.06
NOISE = {"backbone": 0.01, "transit": 0.03}  # lognormal sigma of a probe's round trip
PROBE_S = 5.0  # Orpheus probes a down path this often
FETCH_KINDS = ("subsea_cut", "transit_congestion")
RTT_BIN_MS, RTT_MAX_MS = 0.5, 2000.0  # the round-trip histograms of tally()


@dataclass(frozen=True, eq=False)
class Fetches:
    """The origin-fetch dynamics of one scenario, step by step (see the module doc)."""

    step_s: float
    sites: int
    origins: int
    rtt_ms: npt.NDArray[np.float32]  # (steps, pairs) the path used; nan: no path
    used: npt.NDArray[np.int8]  # (steps, pairs) the candidate used; -1: none
    # failed shares, only where any: step -> (pairs, with Orpheus, without Orpheus)
    failures: dict[int, tuple[npt.NDArray[np.int64], FloatArray, FloatArray]]
    argo_switches: int
    orpheus_failovers: int
    watched: dict[tuple[int, int], npt.NDArray[np.float32]] = field(default_factory=dict)
    labels: tuple[str, ...] = ()  # the candidates' names, in slot order

    @property
    def backbone(self) -> npt.NDArray[np.bool_]:
        """(steps, pairs) whether the path used is one of the backbone's."""
        return np.asarray((self.used >= 0) & (self.used < BACKBONE_SLOTS))

    def pair(self, site: int, origin: int) -> int:
        return site * self.origins + origin

    def series(self, site: int, origin: int) -> npt.NDArray[np.float32]:
        """(steps, candidates) probed round trips of a watched pair (nan: lost or none)."""
        return self.watched[(site, origin)]


def miss_shares(plans: Sequence[str], given: dict[str, float]) -> FloatArray:
    """Each plan's cache-miss share: the scenario's, else :data:`DEFAULT_MISS`."""
    return np.array([given.get(p, DEFAULT_MISS) for p in plans], dtype=np.float64)


def providers(sessions: Sessions, n_sites: int) -> npt.NDArray[np.int64]:
    """(sites, MAX_PROVIDERS) ASNs of each site's first transit providers (by ASN, as the
    sessions are sorted), 0 where none."""
    out = np.zeros((n_sites, MAX_PROVIDERS), dtype=np.int64)
    transit = sessions.kind == SessionKind.TRANSIT
    for s, asn in zip(sessions.site[transit].tolist(), sessions.asn[transit].tolist(), strict=True):
        row = out[s]
        free = np.flatnonzero(row == 0)
        if free.size:
            row[free[0]] = asn
    return out


class _Model:
    """The candidates' true round trips and losses for a set of active events."""

    def __init__(self, world: World, seed: int) -> None:
        self.world = world
        net = world.network
        self.S, self.O = len(net.sites), len(world.backbone.origins)
        self.asn = providers(net.sessions, self.S)
        rng = np.random.default_rng([seed, 17])
        bias = 1.0 + PROVIDER_SPREAD * rng.random((self.S, MAX_PROVIDERS))
        bias[:, 0] = 1.0  # a site's first provider is as good as the latency model
        base = transit_rtt(world)  # (S, O)
        self.transit0 = np.where(
            (self.asn > 0)[:, :, None], base[:, None, :] * bias[:, :, None], np.inf
        )  # (S, providers, O)
        self.graph = Graph.from_links(world.backbone.links, self.S)
        self.site_cont = np.array(continent_of(net.sites.country))
        self.origin_cont = np.array(continent_of(world.backbone.origins.country))
        codes = {c: i for i, c in enumerate(net.sites.code)}
        self.codes = codes
        # each origin's home site: the one with the fastest transit to it
        self.home = self.transit0.min(axis=1).argmin(axis=0)  # (O,)

    def state(self, active: Sequence[Event]) -> tuple[FloatArray, FloatArray]:
        """(pairs, 1 + providers) true round trips and losses under ``active``."""
        rtt = self.transit0.copy()
        loss = np.zeros_like(rtt)
        usable = np.ones(self.graph.src.size, dtype=np.bool_)
        for e in active:
            if e.kind == "subsea_cut":
                a, b = e.regions
                sa, sb = self.site_cont == a, self.site_cont == b
                oa, ob = self.origin_cont == a, self.origin_cont == b
                cross = (sa[:, None] & ob[None, :]) | (sb[:, None] & oa[None, :])  # (S, O)
                rtt[:, :, :] = np.where(cross[:, None, :], rtt * e.factor, rtt)
                loss = np.where(cross[:, None, :], 1 - (1 - loss) * (1 - e.loss), loss)
                for x, y in e.links:
                    usable &= ~(
                        ((self.graph.src == x) & (self.graph.dst == y))
                        | ((self.graph.src == y) & (self.graph.dst == x))
                    )
            elif e.kind == "transit_congestion":
                k = np.flatnonzero(self.asn[e.site] == e.asn)
                rtt[e.site, k] *= e.factor
                loss[e.site, k] = 1 - (1 - loss[e.site, k]) * (1 - e.loss)
        # the egress leaves by its fastest provider that is not losing (any, if all are)
        clean = np.where(loss > 0, np.inf, rtt)
        pick = np.where(np.isfinite(clean).any(axis=1), clean.argmin(axis=1), rtt.argmin(axis=1))
        out_rtt = np.take_along_axis(rtt, pick[:, None, :], axis=1)[:, 0, :]  # (S, O)
        out_loss = np.take_along_axis(loss, pick[:, None, :], axis=1)[:, 0, :]
        dist, _pred = self.graph.shortest(usable=usable)
        bb = 2.0 * np.asarray(dist)
        np.fill_diagonal(bb, np.inf)  # a backbone candidate leaves by another site
        cols = np.arange(self.O)
        home = bb[:, self.home] + out_rtt[self.home, cols][None, :]  # (S, O) all the way
        home_loss = np.broadcast_to(out_loss[self.home, cols][None, :], home.shape)
        via, egress = best_via(bb, np.where(np.isfinite(out_rtt), out_rtt, 1e12))
        via = np.where((via >= 1e12) | (egress == self.home[None, :]), np.inf, via)
        via_loss = out_loss[egress, cols[None, :]]
        R = np.concatenate([home[:, None, :], via[:, None, :], rtt], axis=1)  # (S, K, O)
        L = np.concatenate([home_loss[:, None, :], via_loss[:, None, :], loss], axis=1)
        K = R.shape[1]
        return (
            R.transpose(0, 2, 1).reshape(self.S * self.O, K),
            L.transpose(0, 2, 1).reshape(self.S * self.O, K),
        )


def simulate(
    world: World,
    events: Sequence[Event],
    seed: int,
    step_s: float,
    steps: int,
    watch: Sequence[tuple[int, int]] = (),
) -> Fetches:
    """The fetch dynamics of ``steps`` steps under ``events`` (see the module doc)."""
    model = _Model(world, seed)
    S, n_o = model.S, model.O
    P, K = S * n_o, BACKBONE_SLOTS + MAX_PROVIDERS
    rng = np.random.default_rng([seed, 4])
    ref = Argo(candidates=list(range(K)))  # its parameters, used over arrays here
    sigma = np.array([NOISE["backbone"]] * BACKBONE_SLOTS + [NOISE["transit"]] * MAX_PROVIDERS)
    est = np.full((P, K), np.nan)
    at = np.full((P, K), -np.inf)
    cur = np.full(P, -1, dtype=np.int64)
    since = np.full(P, -np.inf)
    switches = 0
    orpheus = Orpheus()
    rtt_out = np.full((steps, P), np.nan, dtype=np.float32)
    used_out = np.full((steps, P), -1, dtype=np.int8)
    failures: dict[int, tuple[npt.NDArray[np.int64], FloatArray, FloatArray]] = {}
    watched = {w: np.full((steps, K), np.nan, dtype=np.float32) for w in watch}
    key: tuple[Event, ...] | None = None
    R = L = np.zeros((P, K))
    rows = np.arange(P)
    for i in range(steps):
        now = i * step_s
        active = tuple(e for e in events if e.kind in FETCH_KINDS and e.start <= now < e.end)
        if active != key:
            R, L = model.state(active)
            key = active
        # Argo's probes: lost with the path's loss, noisy otherwise
        valid = np.isfinite(R)
        got = valid & (rng.random((P, K)) >= L)
        sample = R * np.exp(sigma * rng.standard_normal((P, K)))
        est, at = _measure(est, at, got, sample, now, ref)
        for (s, o), arr in watched.items():
            p = s * n_o + o
            arr[i] = np.where(got[p], sample[p], np.nan)
        cur, since, n = _choose(est, at, cur, since, now, ref)
        switches += n
        # Orpheus: the outcomes of fetches over every path that loses or is down
        up_frac = _orpheus(orpheus, L, cur, now, step_s, rng, n_o)
        cur_loss = np.where(cur >= 0, L[rows, np.maximum(cur, 0)], 1.0)
        fail_with = cur_loss.copy()  # without Orpheus: Argo's choice, whatever it loses
        used = cur.copy()
        for s, k, o in _down(orpheus):
            p = s * n_o + o
            if cur[p] != k:
                continue
            nxt = orpheus.route([(s, c, o) for c in _preference(est[p], at[p], now, ref.stale_s)])
            used[p] = -1 if nxt is None else nxt[1]  # type: ignore[index]
            nxt_loss = 1.0 if nxt is None else float(L[p, used[p]])
            up = up_frac.get(p, 0.0)  # went down in this step: up for this share of it
            fail_with[p] = up * cur_loss[p] + (1 - up) * nxt_loss
        lossy = (cur_loss > 0) | (fail_with > 0)
        ok = used >= 0
        rtt_out[i, ok] = R[rows[ok], used[ok]]
        used_out[i] = used
        if lossy.any():
            idx = np.flatnonzero(lossy)
            failures[i] = (idx, fail_with[idx], cur_loss[idx])
    labels = ("backbone to the origin's site", "backbone, then transit")
    return Fetches(
        step_s,
        S,
        n_o,
        rtt_out,
        used_out,
        failures,
        switches,
        orpheus.failovers,
        watched,
        labels + tuple(f"transit {k}" for k in range(1, MAX_PROVIDERS + 1)),
    )


def _measure(
    est: FloatArray,
    at: FloatArray,
    got: npt.NDArray[np.bool_],
    sample: FloatArray,
    now: float,
    ref: Argo,
) -> tuple[FloatArray, FloatArray]:
    """:meth:`Argo.measure` for every (pair, candidate) with a sample (``got``) at once."""
    fresh = (now - at <= ref.stale_s) & ~np.isnan(est)
    est = np.where(got & fresh, est + ref.alpha * (sample - est), np.where(got, sample, est))
    return est, np.where(got, now, at)


def _choose(
    est: FloatArray,
    at: FloatArray,
    cur: npt.NDArray[np.int64],
    since: FloatArray,
    now: float,
    ref: Argo,
) -> tuple[npt.NDArray[np.int64], FloatArray, int]:
    """:meth:`Argo.choose` for every pair at once: the current path unless another's
    fresh estimate beats it by the margin and the hold has passed."""
    P = est.shape[0]
    live = (now - at <= ref.stale_s) & ~np.isnan(est)
    anyl = live.any(axis=1)
    masked = np.where(live, est, np.inf)
    best = masked.argmin(axis=1)  # ties: the first candidate, as Argo's index order
    rows = np.arange(P)
    c = np.maximum(cur, 0)
    cur_live = (cur >= 0) & live[rows, c]
    cur_est = np.where(cur_live, masked[rows, c], np.inf)
    margin = np.maximum(ref.min_gain_ms, ref.min_gain * np.where(cur_live, cur_est, 0.0))
    better = (best != cur) & (masked[rows, best] < cur_est - margin) & (now - since >= ref.hold_s)
    switch = anyl & (~cur_live | better)
    n = int((switch & (cur >= 0) & (best != cur)).sum())
    new_cur = np.where(switch, best, cur)
    new_since = np.where(switch, now, since)
    return new_cur, new_since, n


def _down(orpheus: Orpheus) -> list[tuple[int, int, int]]:
    """The paths Orpheus holds down, as (landing site, candidate, origin)."""
    return [cast(tuple[int, int, int], path) for path in orpheus.down()]


def _preference(est: FloatArray, at: FloatArray, now: float, stale_s: float) -> list[int]:
    """A pair's candidates by fresh estimate, fastest first (ties by slot)."""
    live = [k for k in range(est.size) if now - at[k] <= stale_s and not np.isnan(est[k])]
    return sorted(live, key=lambda k: (float(est[k]), k))


def _orpheus(
    orpheus: Orpheus,
    L: FloatArray,
    cur: npt.NDArray[np.int64],
    now: float,
    step_s: float,
    rng: np.random.Generator,
    n_o: int,
) -> dict[int, float]:
    """Feed Orpheus the step's fetches over every losing or down path; return, for each
    pair whose Argo choice went down in this step, the share of the step it was up."""
    lossy = {(int(p), int(k)) for p, k in np.argwhere(L > 0).tolist()}
    paths = lossy | {(s * n_o + o, k) for s, k, o in _down(orpheus)}
    went: dict[int, float] = {}
    dt = orpheus.window_s / (2 * orpheus.min_samples)  # fetches: twice enough per window
    for p, k in sorted(paths):
        s, o = divmod(p, n_o)
        key = (s, k, o)
        loss = float(L[p, k])
        t = 0.0
        while t < step_s:
            up = orpheus.is_up(key)
            orpheus.record(key, bool(rng.random() >= loss), now + t, probe=not up)
            if up and not orpheus.is_up(key) and cur[p] == k:
                went[p] = (t + dt) / step_s
            t += dt if orpheus.is_up(key) else PROBE_S
    return went


def tally(f: Fetches, misses: FloatArray) -> dict[str, Any]:
    """One run's origin-fetch metrics: ``misses`` are its (steps, sites) fetches per step."""
    steps = min(misses.shape[0], f.rtt_ms.shape[0])
    backbone = f.backbone[:steps]
    w = (np.repeat(misses[:steps], f.origins, axis=1) / max(f.origins, 1)).astype(np.float64)
    rtt = f.rtt_ms[:steps]
    ok = np.isfinite(rtt)
    total = float(w.sum())
    failed = failed_without = 0.0
    for i, (idx, with_, without) in f.failures.items():
        if i < steps:
            failed += float((w[i, idx] * with_).sum())
            failed_without += float((w[i, idx] * without).sum())
    out: dict[str, Any] = {
        "fetches": total,
        "failed": failed,
        "failed_without_orpheus": failed_without,
        "failures_avoided": failed_without - failed,
        "backbone_share": float(w[backbone & ok].sum() / total) if total else 0.0,
        "argo_switches": f.argo_switches,
        "orpheus_failovers": f.orpheus_failovers,
        "rtt_ms": {},
    }
    bins = np.minimum(
        (np.where(ok, rtt, 0) / RTT_BIN_MS).astype(np.int64), int(RTT_MAX_MS / RTT_BIN_MS)
    )
    n = int(RTT_MAX_MS / RTT_BIN_MS) + 1
    for name, mask in (
        ("backbone", backbone & ok),
        ("transit", ~backbone & ok),
    ):
        hist = np.bincount(bins[mask], weights=w[mask], minlength=n).astype(np.float64)
        out["rtt_ms"][name] = _quantiles(hist)
    return out


def _quantiles(hist: FloatArray) -> dict[str, float | None]:
    total = float(hist.sum())
    if total <= 0:
        return {"median": None, "p90": None, "fetches": 0.0}
    cdf = np.cumsum(hist) / total
    centre = (np.arange(hist.size) + 0.5) * RTT_BIN_MS
    return {
        "median": float(centre[np.searchsorted(cdf, 0.5)]),
        "p90": float(centre[np.searchsorted(cdf, 0.9)]),
        "fetches": total,
    }
