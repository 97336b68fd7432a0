"""A tick's arithmetic that has no noise in it: steps 3-6 of :mod:`.engine` up to the
draws from the run's random generator.

Given the requests/s arriving at each site by plan (demand through the routing), the
controller's moves (its :class:`~anyedge.control.core.State`), the health of sections,
sites and servers, and the tick's length, :func:`steady` works out what each site
serves, forwards and fails, its utilisation, the noiseless part of its p95 latency, and
every per-tick increment of the run's metrics.  The engine adds only what the noise
changes (the p95's lognormal factor, the SLO breaches it decides, the telemetry's
jitter) and adds the increments up.

None of these inputs changes between most ticks: demand moves once a minute, the
routing and the controller's state when it acts, the health when an event starts or
ends.  So the engine keeps a :class:`Steady` until one of them changes (see
``_Run._tick``), and its arrays are read-only: several ticks' observations share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from ..control.core import State
from .servers import Servers

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def bins(idx: IntArray, weights: FloatArray, n: int) -> FloatArray:
    """Sums of ``weights`` (floats) by ``idx`` into ``n`` bins."""
    return cast(FloatArray, np.bincount(idx, weights=weights, minlength=n))


@dataclass(frozen=True)
class Fixed:
    """What the twin knows of its sites and sections that no tick changes."""

    S: int
    sec_site: IntArray  # section -> its site
    sec_cap0: FloatArray  # each section's capacity, all servers up (CPU ms/s)
    sec_share: FloatArray  # share of its site's load each section takes
    no_sections: BoolArray  # sites with no section: all their load fails
    base_ms: FloatArray  # p95 at no load
    scale_ms: FloatArray  # ... and how steeply it rises
    thresholds: FloatArray  # (S, 3): maximum, target, acceptable utilisation
    miss: FloatArray  # each plan's share of cache misses
    lat_ss: FloatArray  # (S, S) round trip between sites, ms
    failover: FloatArray  # (S, S) where a withdrawn site's users land


@dataclass(frozen=True)
class Steady:
    """One tick's noiseless outcome and metric increments (``*_inc`` already times the
    tick's length), the same for every tick with the same inputs."""

    rps_plan: FloatArray  # (S, P) requests/s arriving
    cpu_plan: FloatArray  # (S, P) CPU ms/s arriving
    served_plan: FloatArray  # (S, P) CPU ms/s served, after forwarding
    fs: IntArray  # forwarding (source, receiver) of each forwarded share
    fd: IntArray
    o_rps: FloatArray  # requests/s of each forwarded share
    flow_inc: FloatArray  # ... times the tick
    wd_rps: FloatArray  # requests/s per site that withdrawals send elsewhere
    wd_flow_inc: FloatArray | None  # (S, S) where they went, times the tick; None: none
    moved_any: bool  # anything forwarded or withdrawn
    u: FloatArray  # utilisation per site (inf: load and no capacity)
    u_seen: FloatArray  # ... as telemetry reports it (9 for inf), before the jitter
    curve_ms: FloatArray  # p95 before its noise
    live: BoolArray  # sites with load
    fail: FloatArray  # failed requests/s per site
    fail_inc: FloatArray
    load: FloatArray  # CPU ms/s per site
    out: FloatArray  # forwarded requests/s out of each site
    inn: FloatArray  # ... into each site
    fwd_ms: FloatArray  # mean extra round trip of a site's users for forwarding
    sec_load: FloatArray  # CPU ms/s sent to each section (its dead servers' share too)
    sec_served: FloatArray  # ... less the dead share
    sec_u: FloatArray  # each section's utilisation
    sec_cap: FloatArray  # each section's healthy capacity
    cap: FloatArray  # each site's healthy capacity
    miss_inc: FloatArray  # cache misses of the requests each site serves, times the tick
    requests_inc: float
    served_inc: float
    failed_inc: float
    unrouted_inc: float
    forwarded_inc: float
    moved_inc: float
    stranded_inc: float  # CPU-hours


def steady(
    k: Fixed,
    arriving: tuple[FloatArray, FloatArray, float],
    total: float,
    st: State,
    sec_up: FloatArray,
    dark: BoolArray,
    srv: Servers,
    wd_rps: FloatArray,
    dt: float,
) -> Steady:
    """The tick's noiseless outcome: ``arriving`` is (requests/s, CPU ms/s) per site and
    plan and unrouted requests/s, ``total`` all requests/s, ``wd_rps`` the requests/s
    per site the controller's withdrawals send away."""
    rps_plan, cpu_plan, unrouted = arriving
    # Plurimog: shares of each plan forwarded to other sites
    f = st.forward
    fs, fp, fd = f.src, f.plan, f.dst
    share = f.share
    o_cpu, o_rps = cpu_plan[fs, fp] * share, rps_plan[fs, fp] * share
    out_cpu_s = bins(fs, o_cpu, k.S)
    in_cpu_s = bins(fd, o_cpu, k.S)
    out_rps_s = bins(fs, o_rps, k.S)
    in_rps_s = bins(fd, o_rps, k.S)
    served_cpu = cpu_plan.sum(1) - out_cpu_s + in_cpu_s
    served_rps = rps_plan.sum(1) - out_rps_s + in_rps_s
    served_plan = cpu_plan.copy()
    np.subtract.at(served_plan, (fs, fp), o_cpu)
    np.add.at(served_plan, (fd, fp), o_cpu)
    # Duomog and the servers of each section
    ss = k.sec_site
    cap = k.sec_cap0 * sec_up * ~dark[ss]
    load = served_cpu[ss] * k.sec_share
    # a controller without Duomog (withdrawal only) keeps no sections in its state
    shift = st.shift if st.shift.shape == ss.shape else 0.0
    shifted = load * shift
    pool = bins(ss, shifted, k.S)
    takers = np.where(shift <= 0, cap, 0.0)
    takers_site = bins(ss, takers, k.S)
    has = takers_site[ss] > 0
    load = (
        load
        - np.where(has, shifted, 0.0)
        + np.where(has, pool[ss] * takers / np.maximum(takers_site[ss], 1e-12), 0.0)
    )
    sec_load = load
    if srv.any_dead:  # what is hashed to failed servers' buckets fails
        dead = load * srv.dead
        load = load - dead
        sec_fail = np.maximum(load - cap, 0.0) + dead
    else:
        sec_fail = np.maximum(load - cap, 0.0)
    cap_s = bins(ss, cap, k.S)
    orphan = served_cpu * k.no_sections  # no section to serve it: all of it fails
    load_s = bins(ss, load, k.S) + orphan
    fail_cpu = bins(ss, sec_fail, k.S) + orphan
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(
            cap_s > 0, load_s / np.maximum(cap_s, 1e-12), np.where(load_s > 0, np.inf, 0.0)
        )
        fail_rps = np.where(served_cpu > 0, served_rps * fail_cpu / served_cpu, 0.0)
        sec_u = np.where(cap > 0, load / np.maximum(cap, 1e-12), np.where(load > 0, 9.0, 0))
    uu = np.minimum(np.where(np.isfinite(u), u, 9.0), 0.985)
    curve = k.base_ms + k.scale_ms * uu / (1 - uu)
    # metrics
    # cache misses of the requests each site serves (after forwarding, less failures)
    miss = rps_plan @ k.miss - bins(fs, o_rps * k.miss[fp], k.S) + bins(fd, o_rps * k.miss[fp], k.S)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok_share = np.where(served_rps > 0, 1 - fail_rps / served_rps, 0.0)
    fwd_rps = float(o_rps.sum())
    moved_wd = float(wd_rps.sum())
    mx = k.thresholds[:, 0]
    up = cap_s > 0
    spare = float(np.maximum(cap_s * mx - load_s, 0.0)[up].sum())
    failed_cpu = float(fail_cpu.sum())
    stranded = min(spare, failed_cpu)
    wd_sites = st.withdrawn.any(axis=0) & up
    stranded += float(np.maximum(cap_s * k.thresholds[:, 1] - load_s, 0.0)[wd_sites].sum())
    out = Steady(
        rps_plan=rps_plan,
        cpu_plan=cpu_plan,
        served_plan=served_plan,
        fs=fs,
        fd=fd,
        o_rps=o_rps,
        flow_inc=o_rps * dt,
        wd_rps=wd_rps,
        # where withdrawn users went, by the predictor's failover shares
        wd_flow_inc=wd_rps[:, None] * k.failover * dt if moved_wd > 0 else None,
        moved_any=fwd_rps > 0 or moved_wd > 0,
        u=u,
        u_seen=np.where(np.isfinite(u), u, 9.0),
        curve_ms=curve,
        live=load_s > 0,
        fail=fail_rps,
        fail_inc=fail_rps * dt,
        load=load_s,
        out=out_rps_s,
        inn=in_rps_s,
        fwd_ms=np.bincount(fs, weights=o_rps * k.lat_ss[fs, fd], minlength=k.S)
        / np.maximum(rps_plan.sum(1), 1e-12),
        sec_load=sec_load,
        sec_served=load,
        sec_u=sec_u,
        sec_cap=cap,
        cap=cap_s,
        miss_inc=np.maximum(miss, 0.0) * np.clip(ok_share, 0.0, 1.0) * dt,
        requests_inc=total * dt,
        served_inc=float(served_rps.sum() - fail_rps.sum()) * dt,
        failed_inc=(float(fail_rps.sum()) + unrouted) * dt,
        unrouted_inc=unrouted * dt,
        forwarded_inc=fwd_rps * dt,
        moved_inc=(fwd_rps + moved_wd) * dt,
        stranded_inc=stranded * dt / 1000.0 / 3600.0,
    )
    for name, v in vars(out).items():  # shared by the ticks that reuse it: nobody writes
        if isinstance(v, np.ndarray) and name not in ("fs", "fd"):  # (fs, fd: the state's)
            v.setflags(write=False)
    return out
