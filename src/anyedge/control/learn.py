"""Learned maximum thresholds: the CPU utilisation at which a site's p95 latency meets the SLO.

The reference's Traffic Manager does not trust a fixed maximum threshold.  For each data
centre it takes the history of CPU utilisation against its service-level indicator, the
95th percentile of cfcheck latency, cleans the outliers, fits a quadratic curve (and, being
tested, a linear regression) and takes the utilisation where the fit meets the SLO of
20 ms as the maximum threshold.  :func:`learn_maximum` does that for one site, as a pure
function of two arrays (no I/O, no clock); :func:`read_history` reads the samples of many
sites from a CSV file.

The steps, and the choices made where the reference is silent:

1. **Invalid points** are dropped: non-finite values, utilisation outside ``[0, 1.5]``,
   latency of 0 ms or less.
2. **Outliers** are dropped by a local median/MAD filter.  The points are sorted by
   utilisation and cut into consecutive groups of about 25 (each group holds between 25
   and 49 points; fewer than 50 points make one group).  In each group a latency farther
   than ``3.5 × 1.4826 × MAD`` from the group's median is an outlier (the modified
   z-score rule of Iglewicz and Hoaglin), with a floor of 10 % of the median so that
   quantised latencies (MAD of 0) do not make every off-median sample an outlier.  Groups
   of equal count rather than equal width keep the median robust where samples are
   sparse (high utilisation), and a narrow group sees little of the curve's own slope.
   Both sides are filtered: a spike and a dropout are equally bad evidence.
3. **Too few points**: fewer than ``min_points`` left means the static threshold.
4. **Fits**, by least squares on the clean points: ``p95 = c + b·u + a·u²`` and
   ``p95 = q + m·u``; each with its R² (1 − residual/total sum of squares; 0 when the
   latency does not vary at all).  A quadratic needs three distinct utilisations and a
   line two; a fit that cannot be made has no coefficients and no R².
5. **Choice**: the quadratic if its R² ≥ ``min_r2``, it bends upwards (latency climbs
   faster as the CPU saturates, the shape the reference shows) and its R² adjusted for
   its extra parameter is at least the line's; else the line if its R² ≥ ``min_r2``;
   else the static threshold ("fit too poor").  Plain R² would always favour the
   quadratic (least squares on the same points), so the adjusted one decides whether the
   curvature is real.
6. **Crossing**: the smallest ``u`` in ``[0, 1.5]`` where the chosen fit rises through the
   SLO (it is below just before and above just after; a quadratic has at most one such
   point).  Without one, a fit that starts below the SLO never reaches it, and the answer
   is the upper bound; a fit that is already at or above the SLO at ``u = 0`` (above it
   everywhere, or only falling through it) gives the lower bound, the safe side.
7. **Bounds**: the crossing is clamped to ``bounds``, and the reason says so.

History file (CSV, UTF-8, header required)::

    time,site,utilisation,p95_ms
    2024-07-29T10:00:00Z,LIS,0.62,11.8
    2024-07-29T10:05:00Z,LIS,0.71,14.2

The columns ``site``, ``utilisation`` (a fraction: 0.62 is 62 %) and ``p95_ms`` may come
in any order; other columns (``time`` here) are ignored.  Site codes are upper-cased.  A
number may be ``nan`` (a missing sample, dropped when learning); anything else that is not
a number, an empty field, an empty site or a row with the wrong number of fields is an
error naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from numpy.polynomial import polynomial as P

from ..errors import InputError, Problem
from ..model.files.text import read_text
from .core import Config

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Method = Literal["quadratic", "linear", "static"]

U_MAX = 1.5  # utilisations outside [0, U_MAX] are invalid; crossings are searched there
OUTLIER_K = 3.5  # modified z-score beyond which a latency is an outlier
MAD_TO_SIGMA = 1.4826  # MAD × this estimates the standard deviation of normal noise
OUTLIER_FLOOR = 0.10  # ... but never closer to the median than this fraction of it
GROUP = 25  # points per outlier group, at least
HISTORY_COLUMNS = ("site", "utilisation", "p95_ms")
MAX_PROBLEMS = 100


@dataclass(frozen=True, slots=True)
class LearnedThreshold:
    """A site's learned maximum threshold, and how it was found.

    ``quadratic`` and ``linear`` are the fits' coefficients, lowest power first as in
    :mod:`numpy.polynomial` (``(c, b, a)`` for ``c + b·u + a·u²``, ``(q, m)`` for
    ``q + m·u``), or ``None`` when the fit was not made.  ``crossing`` is where the chosen
    fit rises through the SLO (``None`` for the static threshold or when it does not);
    ``clamped`` says ``value`` is a bound rather than that crossing.
    """

    value: float
    method: Method
    reason: str
    n_used: int
    n_dropped: int
    r2_quadratic: float | None
    r2_linear: float | None
    quadratic: tuple[float, ...] | None
    linear: tuple[float, ...] | None
    slo_ms: float
    crossing: float | None = None
    clamped: bool = False

    def coefficients(self, method: Method | None = None) -> tuple[float, ...] | None:
        """Coefficients of ``method``'s fit (default: the chosen one), if it was made."""
        m = self.method if method is None else method
        return self.quadratic if m == "quadratic" else self.linear if m == "linear" else None


def check_options(
    *,
    slo_ms: float = 20.0,
    bounds: tuple[float, float] = (0.50, 0.95),
    static: float = 0.90,
    min_points: int = 30,
    min_r2: float = 0.5,
) -> list[tuple[str, str]]:
    """What is wrong with these settings, as ``(parameter, message)`` pairs (empty: fine)."""
    bad: list[tuple[str, str]] = []
    if not (math.isfinite(slo_ms) and slo_ms > 0):
        bad.append(("slo_ms", f"must be a latency above 0 ms, got {slo_ms:g}"))
    lo, hi = bounds
    bounds_ok = math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi <= 1.0
    if not bounds_ok:
        bad.append(("bounds", f"need 0 <= lower <= upper <= 1, got {lo:g} and {hi:g}"))
    if not math.isfinite(static) or (bounds_ok and not lo <= static <= hi):
        bad.append(("static", f"must lie within the bounds {lo:g}..{hi:g}, got {static:g}"))
    if min_points < 3:
        bad.append(("min_points", f"must be at least 3, got {min_points}"))
    if not (0.0 <= min_r2 <= 1.0):
        bad.append(("min_r2", f"must be between 0 and 1, got {min_r2:g}"))
    return bad


def learn_maximum(
    utilisation: npt.ArrayLike,
    p95_ms: npt.ArrayLike,
    *,
    slo_ms: float = 20.0,
    bounds: tuple[float, float] = (0.50, 0.95),
    static: float = 0.90,
    min_points: int = 30,
    min_r2: float = 0.5,
) -> LearnedThreshold:
    """The maximum threshold of one site from its samples of utilisation and p95 latency.

    ``utilisation`` (fractions) and ``p95_ms`` are matching 1-D arrays.  See the module's
    documentation for the steps.  Raises ``ValueError`` for settings that make no sense
    (:func:`check_options`) or arrays of different shapes.
    """
    bad = check_options(
        slo_ms=slo_ms, bounds=bounds, static=static, min_points=min_points, min_r2=min_r2
    )
    if bad:
        raise ValueError("; ".join(f"{k}: {m}" for k, m in bad))
    u = np.asarray(utilisation, dtype=np.float64)
    y = np.asarray(p95_ms, dtype=np.float64)
    if u.ndim != 1 or u.shape != y.shape:
        raise ValueError(f"need two 1-D arrays of one length, got shapes {u.shape} and {y.shape}")
    lo, hi = bounds

    with np.errstate(invalid="ignore"):
        valid = np.isfinite(u) & np.isfinite(y) & (u >= 0.0) & (u <= U_MAX) & (y > 0.0)
    n_invalid = int(np.count_nonzero(~valid))
    u, y = u[valid], y[valid]
    keep = inliers(u, y)
    n_outliers = int(np.count_nonzero(~keep))
    u, y = u[keep], y[keep]
    n_used, n_dropped = len(u), n_invalid + n_outliers

    def fallback(
        why: str,
        quad: tuple[float, ...] | None = None,
        lin: tuple[float, ...] | None = None,
        r2q: float | None = None,
        r2l: float | None = None,
    ) -> LearnedThreshold:
        return LearnedThreshold(
            value=float(static),
            method="static",
            reason=f"{why}; static {static:.2f}",
            n_used=n_used,
            n_dropped=n_dropped,
            r2_quadratic=r2q,
            r2_linear=r2l,
            quadratic=quad,
            linear=lin,
            slo_ms=float(slo_ms),
        )

    if n_used < min_points:
        return fallback(
            f"too few points: {n_used} usable, {min_points} needed "
            f"({n_invalid} invalid, {n_outliers} outlier{'' if n_outliers == 1 else 's'})"
        )

    quad, lin = _fit(u, y, 2), _fit(u, y, 1)
    r2q = None if quad is None else _r2(u, y, quad)
    r2l = None if lin is None else _r2(u, y, lin)
    method: Method
    n = u.size
    adj_q = None if r2q is None or n <= 3 else 1 - (1 - r2q) * (n - 1) / (n - 3)
    adj_l = None if r2l is None or n <= 2 else 1 - (1 - r2l) * (n - 1) / (n - 2)
    quad_ok = (
        quad is not None
        and r2q is not None
        and r2q >= min_r2
        and quad[2] >= 0
        and (adj_l is None or adj_q is None or adj_q >= adj_l)
    )
    if quad_ok:
        assert quad is not None
        assert r2q is not None
        method, coef, r2, note = "quadratic", quad, r2q, ""
    elif lin is not None and r2l is not None and r2l >= min_r2:
        why_not = (
            "too few distinct utilisations for a quadratic"
            if quad is None
            else f"quadratic R² {r2q:.3f} below {min_r2:g}"
            if r2q is None or r2q < min_r2
            else "the quadratic bends downwards"
            if quad[2] < 0
            else "the curvature adds nothing (adjusted R²)"
        )
        method, coef, r2, note = "linear", lin, r2l, f"; {why_not}"
    elif lin is None:
        return fallback(
            f"fit too poor: utilisation never varies (all at {u[0]:.3f})", quad, lin, r2q, r2l
        )
    else:
        return fallback(
            f"fit too poor: R² {_fmt_r2(r2q)} quadratic, {_fmt_r2(r2l)} linear, below {min_r2:g}",
            quad,
            lin,
            r2q,
            r2l,
        )

    crossing = up_crossing(coef, slo_ms)
    said = f"{method} fit (R² {r2:.3f}{note})"
    if crossing is not None:
        value = min(max(crossing, lo), hi)
        reason = f"{said} meets the {slo_ms:g} ms SLO at utilisation {crossing:.3f}"
        if crossing < lo:
            reason += f"; raised to the lower bound {lo:.2f}"
        elif crossing > hi:
            reason += f"; lowered to the upper bound {hi:.2f}"
    elif float(P.polyval(0.0, coef)) < slo_ms:
        value = hi
        reason = (
            f"{said} stays below the {slo_ms:g} ms SLO up to utilisation {U_MAX:g}: "
            f"the upper bound {hi:.2f}"
        )
    else:
        value = lo
        where = "at every utilisation" if _minimum(coef) >= slo_ms else "at low utilisation"
        reason = f"{said} is above the {slo_ms:g} ms SLO {where}"
        if where != "at every utilisation":
            reason += " and never rises through it"
        reason += f": the lower bound {lo:.2f}"
    return LearnedThreshold(
        value=float(value),
        method=method,
        reason=reason,
        n_used=n_used,
        n_dropped=n_dropped,
        r2_quadratic=r2q,
        r2_linear=r2l,
        quadratic=quad,
        linear=lin,
        slo_ms=float(slo_ms),
        crossing=crossing,
        clamped=crossing is None or value != crossing,
    )


def learned_config(static: Config, maximum: npt.ArrayLike) -> Config:
    """``static`` with each site's maximum threshold set to ``maximum`` (the learned
    one where it is trusted, else the static one again), and its target and acceptable
    thresholds moved with it: below it by the same gaps as in ``static``, never above
    their static values (a higher maximum leaves them where they were)."""
    mx = np.asarray(maximum, dtype=np.float64)
    if mx.shape != static.maximum.shape:
        raise ValueError(f"need a maximum per site {static.maximum.shape}, got {mx.shape}")
    return replace(
        static,
        maximum=mx,
        target=np.minimum(static.target, mx - (static.maximum - static.target)),
        acceptable=np.minimum(static.acceptable, mx - (static.maximum - static.acceptable)),
    )


def fit_curve(
    result: LearnedThreshold, grid: npt.ArrayLike, method: Method | None = None
) -> FloatArray:
    """p95 latency of ``method``'s fit (default: the chosen one) at each utilisation.

    Raises ``ValueError`` when that fit was not made (a static threshold has no curve
    of its own; ask for ``"quadratic"`` or ``"linear"`` to see the fits it rejected).
    """
    coef = result.coefficients(method)
    if coef is None:
        m = result.method if method is None else method
        raise ValueError(f"no {m} fit to evaluate ({result.reason})")
    out: FloatArray = P.polyval(np.asarray(grid, dtype=np.float64), np.asarray(coef))
    return out


def inliers(utilisation: FloatArray, p95_ms: FloatArray) -> BoolArray:
    """Mask of the points that are not outliers (the module's step 2); arrays must be valid."""
    keep = np.ones(len(utilisation), dtype=np.bool_)
    if len(utilisation) == 0:
        return keep
    order = np.argsort(utilisation, kind="stable")
    n, k = len(order), max(1, len(order) // GROUP)
    size, big = divmod(n, k)  # as np.array_split: ``big`` groups of size + 1 first
    cut = big * (size + 1)
    for block, width in ((order[:cut], size + 1), (order[cut:], size)):
        if not block.size:
            continue
        idx = block.reshape(-1, width)  # one group a row: all groups of a size at once
        g = p95_ms[idx]
        med = np.median(g, axis=1, keepdims=True)
        mad = np.median(np.abs(g - med), axis=1, keepdims=True)
        tol = np.maximum(OUTLIER_K * MAD_TO_SIGMA * mad, OUTLIER_FLOOR * med)
        keep[idx] = np.abs(g - med) <= tol
    return keep


def up_crossing(coef: tuple[float, ...], slo_ms: float) -> float | None:
    """Smallest ``u`` in ``[0, 1.5]`` where ``c + b·u (+ a·u²)`` rises through ``slo_ms``."""
    c = coef[0] - slo_ms
    b = coef[1]
    a = coef[2] if len(coef) > 2 else 0.0
    roots: list[float] = []
    if a == 0.0:
        if b != 0.0:
            roots.append(-c / b)
    else:
        disc = b * b - 4.0 * a * c
        if disc >= 0.0:
            # the stable form: no cancellation when a is tiny or b dominates
            q = -0.5 * (b + math.copysign(math.sqrt(disc), b))
            roots.append(q / a)
            if q != 0.0:
                roots.append(c / q)
    ups: list[float] = []
    for r in roots:
        slope = b + 2.0 * a * r
        if not math.isfinite(r) or slope <= 0.0:
            continue
        r -= (c + b * r + a * r * r) / slope  # one Newton step polishes the last bits
        if 0.0 <= r <= U_MAX:
            ups.append(r)
    return min(ups) if ups else None


def read_history(path: str | Path) -> dict[str, tuple[FloatArray, FloatArray]]:
    """Samples per site from a history CSV: ``{site: (utilisation, p95_ms)}``.

    Sites come in the order they first appear.  Raises :class:`InputError` naming the
    file, the line and the column of every bad row (the first hundred).
    """
    text = read_text(path, encoding="utf-8-sig", newline="")  # csv handles line ends
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise InputError.one(path, "header", f"not CSV: {e}", reader.line_num) from None
    names = [h.strip() for h in header] if header is not None else []
    missing = [c for c in HISTORY_COLUMNS if c not in names]
    doubled = sorted({c for c in HISTORY_COLUMNS if names.count(c) > 1})
    if missing or doubled:
        what = (
            f"no column {', '.join(missing)}" if missing else f"column {', '.join(doubled)} twice"
        )
        raise InputError.one(
            path,
            "header",
            f"{what}: the first line must name the columns {','.join(HISTORY_COLUMNS)} "
            "(in any order; other columns are ignored)",
            1,
        )
    i_site, i_u, i_p = (names.index(c) for c in HISTORY_COLUMNS)
    samples: dict[str, tuple[list[float], list[float]]] = {}
    problems: list[Problem] = []
    while len(problems) <= MAX_PROBLEMS:
        try:
            raw = next(reader, None)
        except csv.Error as e:
            problems.append(Problem("", f"not CSV: {e}", reader.line_num))
            break
        if raw is None:
            break
        ln = reader.line_num
        if not raw or all(not f.strip() for f in raw):
            continue
        if len(raw) != len(names):
            problems.append(Problem("", f"expected {len(names)} fields, got {len(raw)}", ln))
            continue
        site = raw[i_site].strip().upper()
        if not site:
            problems.append(Problem("site", "empty: every row needs a site code", ln))
        u = _number(raw[i_u], "utilisation", ln, problems)
        p = _number(raw[i_p], "p95_ms", ln, problems)
        if site and u is not None and p is not None:
            us, ps = samples.setdefault(site, ([], []))
            us.append(u)
            ps.append(p)
    if problems:
        raise InputError(path, problems)
    if not samples:
        raise InputError.one(path, "", "no samples: the file has a header and no rows")
    return {
        s: (np.array(us, dtype=np.float64), np.array(ps, dtype=np.float64))
        for s, (us, ps) in samples.items()
    }


def _number(field: str, column: str, line: int, problems: list[Problem]) -> float | None:
    text = field.strip()
    if not text:
        problems.append(Problem(column, "empty: need a number (or nan for a missing sample)", line))
        return None
    try:
        return float(text)
    except ValueError:
        problems.append(Problem(column, f"not a number: {text!r}", line))
        return None


def _fit(u: FloatArray, y: FloatArray, degree: int) -> tuple[float, ...] | None:
    """Least-squares polynomial coefficients, lowest power first; None if underdetermined."""
    if np.unique(u).size <= degree:
        return None
    v = np.vander(u, degree + 1, increasing=True)
    coef, _, rank, _ = np.linalg.lstsq(v, y, rcond=None)
    if rank < degree + 1:
        return None
    return tuple(float(x) for x in coef)


def _r2(u: FloatArray, y: FloatArray, coef: tuple[float, ...]) -> float:
    if float(np.ptp(y)) == 0.0:
        return 0.0  # nothing to explain: a flat line says nothing about utilisation
    total = float(np.sum((y - y.mean()) ** 2))
    residual = float(np.sum((y - P.polyval(u, np.asarray(coef))) ** 2))
    return 1.0 - residual / total


def _minimum(coef: tuple[float, ...]) -> float:
    """Lowest value of the fit over ``[0, U_MAX]``."""
    at = [0.0, U_MAX]
    if len(coef) > 2 and coef[2] > 0.0:
        vertex = -coef[1] / (2.0 * coef[2])
        if 0.0 < vertex < U_MAX:
            at.append(vertex)
    return float(np.min(P.polyval(np.array(at), np.asarray(coef))))


def _fmt_r2(r2: float | None) -> str:
    return "-" if r2 is None else f"{r2:.3f}"


def relearn(
    static: Config,
    u: npt.ArrayLike,
    p95_ms: npt.ArrayLike,
    *,
    learn_from: float = 0.50,
    slo_ms: float = 20.0,
    min_points: int = 30,
) -> tuple[FloatArray, dict[int, LearnedThreshold]]:
    """Each site's maximum threshold from samples ``u`` and ``p95_ms`` (arrays of shape
    (samples, sites), NaN where a site had none), as the reference's Traffic Manager
    relearns on a schedule, with what can be trusted: a fit (not the static fallback)
    of a site whose samples reached ``learn_from`` (below, the knee is out of sight),
    and only where lower than the static maximum (above it the fit is the only
    evidence, beyond the data).  Returns the maxima and each learned site's result."""
    u_a, p_a = np.asarray(u, dtype=np.float64), np.asarray(p95_ms, dtype=np.float64)
    maximum = static.maximum.astype(np.float64)
    results: dict[int, LearnedThreshold] = {}
    if u_a.size == 0:
        return maximum, results
    busy = np.nan_to_num(u_a, nan=0.0).max(axis=0) >= learn_from
    for s in np.flatnonzero(busy).tolist():
        ok = np.isfinite(u_a[:, s]) & np.isfinite(p_a[:, s])
        r = learn_maximum(u_a[ok, s], p_a[ok, s], static=float(static.maximum[s]),
                          slo_ms=slo_ms, min_points=min_points)  # fmt: skip
        results[s] = r
        if r.method != "static":
            maximum[s] = min(r.value, float(static.maximum[s]))
    return maximum, results
