"""The twin's comparison as one self-contained HTML page.

A :class:`~anyedge.sim.result.Comparison` holds the same scenario run under the three
controllers.  :func:`render` turns it into a page an operator can open anywhere, offline:
every style is inline CSS, every chart inline SVG, and the only script is plain
JavaScript that switches the map's run and hours, filters the timeline and saves the CSV
files.  The page fetches nothing (a Content-Security-Policy of ``default-src 'none'``
says so to the browser too).

What it shows, top to bottom (every time in UTC, from the scenario's start hour):

- the scenario and its events, with their times;
- Plurimog, Duomog, withdrawal and stranded capacity, a sentence each;
- the three runs side by side: failed requests, SLO-breach minutes, stranded CPU (the
  best value of these outcome rows marked), then what acting cost (added latency,
  traffic moved and forwarded, routing changes; never marked: doing nothing "wins");
- the map of moves, drawn the way the reference draws Traffic Manager's: a circle per
  site coloured by health (green, yellow, red by the worst utilisation of the run), sized
  by the requests moved from or to it, and lines from where requests arrived to where
  they were served, wider for more, for the run and the hours chosen (a small script
  redraws them and the table of the largest moves, with their distances);
- the whole network over the day: failed requests/s, sites forwarding, prefixes
  withdrawn, per run;
- what each event cost each controller beyond the same day without events (failed
  requests and SLO site-minutes, with each event's share), and how that is counted;
- the servers inside the sites that server events touch (failed or drained): per
  section, its servers failed, drained and taken out of the balancer's table over time,
  its most loaded server's utilisation per run, the connections broken by the failures
  and by the drains (with the second hop and without it) and every change of the
  table; a sentence says so when the scenario has no server events;
- what the controllers did: every action from their journals, with time, site, receiver
  and reason, filterable by run and site;
- for the sites of the events (the site each hits, then the site its users went to) and
  then the most eventful others, utilisation and p95 latency over time for the three
  runs, with the SLO, the event windows and a tick for each action at the site;
- the learned maximum thresholds and, where the fit's points came along, their curves
  (only over the utilisations sampled).

Each run has one colour everywhere, and none is green.  The network series, every action
and the comparison table ride along as CSV text that the script saves as a file on a
click.

The land on the map is a coarse outline drawn for this page (a few hundred vertices, not
third-party map data); the sites are the map.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from anyedge.model.files.atomic import write_all
from anyedge.report import servers as srv
from anyedge.sim.result import (
    ACTION_FIELDS,
    FLOW_BIN_S,
    MODE_TITLES,
    MODES,
    NETWORK_FIELDS,
    Comparison,
    RunResult,
    network_series,
)

Array = npt.NDArray[np.float64]

SLO_MS = 20.0  # the latency SLO drawn on the charts (ms, p95)
CHART_SITES = 12  # sites with time-series charts
SCATTER_SITES = 4  # sites with a learned-threshold curve
MAX_POINTS = 300  # per line of a time-series chart
MAX_SCATTER = 400  # points per learned-threshold scatter
MAX_FLOWS = 300  # lines per run on the map
MAX_LABELS = 25  # site codes written on the map
MAX_ACTIONS = 400  # rows per run in the action timeline (the CSV has them all)
MAX_MOVES = 8  # rows of the largest-moves table
MAX_MARKS = 200  # actions marked per run on a site's utilisation chart
GREEN_BELOW = 0.75  # worst utilisation below which a site is healthy
YELLOW_UP_TO = 0.9  # ... and up to which it is under load; above, overloaded

HEALTH_COLOURS = {"green": "#2ca02c", "yellow": "#f0c419", "red": "#d62728", "unknown": "#9aa0a6"}
# one colour per controller everywhere on the page; none of them green, so that no run
# looks healthy by its colour (green is for healthy sites on the map, nothing else)
MODE_COLOURS = {"none": "#b35806", "withdraw": "#8073ac", "manager": "#2166ac"}
OTHER_COLOURS = ("#e7298a", "#666666", "#a6761d", "#01665e")
BEST_COLOUR = "#e1e9f5"  # the background of the best value of an outcome row

MAP_W = 1000.0  # map width in SVG units: 360 degrees of longitude
SITE_R = 4.0  # radius of a site that moved nothing
SITE_R_GROWTH = 14.0  # added radius of the site that moved the most


def render(comparison: Comparison) -> str:
    """The whole page for ``comparison``, as one string."""
    c = comparison
    modes = _modes(c)
    title = f"anyedge twin — {c.scenario}"
    body = "\n".join(
        [
            _header(c),
            _glossary(),
            '<section class="overview">',
            _comparison_table(c, modes),
            _map_card(c, modes),
            "</section>",
            _network_card(c, modes),
            _attribution_card(c, modes),
            _servers_card(c, modes),
            _timeline_card(c, modes),
            _site_charts(c, modes),
            _learned_section(c, modes),
            _footer(c),
            _csv_blocks(c),
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n</main>\n<script>{_JS}</script>\n</body>\n</html>\n"
    )


def write(comparison: Comparison, path: Path | str) -> Path:
    """Write the page to ``path`` atomically (a reader never sees half of it)."""
    target = Path(path)
    write_all({target: render(comparison)})
    return target


# ---------------------------------------------------------------------------------------
# small helpers


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _float(value: object) -> float | None:
    """``value`` as a float, or ``None`` when it is missing or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if not math.isnan(out) else None


def _array(value: object) -> Array | None:
    """``value`` as a flat float array, or ``None`` when it is missing or not numbers."""
    if value is None:
        return None
    try:
        out = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    return out if out.size else None


def _utc(seconds: float, start_h: float = 0.0, end: bool = False) -> str:
    """The UTC time of ``seconds`` into a run that starts at ``start_h`` UTC, as hh:mm
    (a later day marked: 01:30+1d); with ``end``, the midnight that ends a day is 24:00
    of that day, not 00:00 of the next."""
    total = max(0, round(start_h * 60.0 + seconds / 60.0))
    day, minute = divmod(total, 1440)
    if end and minute == 0 and day > 0:
        day, minute = day - 1, 1440
    return f"{minute // 60:02d}:{minute % 60:02d}" + (f"+{day}d" if day else "")


def _span(at: float, until: float | None, start_h: float) -> str:
    """An event's or a window's times: 13:30–14:45 UTC, or from 13:30 UTC."""
    if until is None:
        return f"from {_utc(at, start_h)} UTC"
    return f"{_utc(at, start_h)}–{_utc(until, start_h, end=until > at)} UTC"


def _count(x: float) -> str:
    """A count: with thousands separators, or in SI units from ten million (15.85 G)."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(x) >= max(scale, 1e7):
            return f"{x / scale:,.4g} {suffix}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _si(x: float) -> str:
    """A count in a few characters: 950, 12.3k, 4.56M, 7.89G (999,700 is 1M)."""
    rounded = float(f"{x:.3g}")
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(rounded) >= scale:
            return f"{rounded / scale:.3g}{suffix}"
    return f"{rounded:g}"


def _modes(c: Comparison) -> list[str]:
    """The runs present, in the usual order (unknown modes last)."""
    return [m for m in MODES if m in c.runs] + sorted(m for m in c.runs if m not in MODES)


def _mode_title(mode: str) -> str:
    return MODE_TITLES.get(mode, mode)


def _swatch(mode: str, modes: Sequence[str]) -> str:
    return f'<span class="swatch" style="border-color:{_mode_colour(mode, modes)}"></span>'


def _mode_colour(mode: str, modes: Sequence[str]) -> str:
    if mode in MODE_COLOURS:
        return MODE_COLOURS[mode]
    extra = [m for m in modes if m not in MODE_COLOURS]
    return OTHER_COLOURS[extra.index(mode) % len(OTHER_COLOURS)]


def _map_mode(modes: Sequence[str]) -> str | None:
    """The run the map shows first: the Traffic Manager's when there is one."""
    if "manager" in modes:
        return "manager"
    return modes[-1] if modes else None


def _health(u: float | None) -> str:
    if u is None:
        return "unknown"
    if u < GREEN_BELOW:
        return "green"
    return "yellow" if u <= YELLOW_UP_TO else "red"


HEALTH_LETTERS = {"green": "g", "yellow": "y", "red": "r", "unknown": "u"}


def _hourly_health(run: RunResult, sites: Sequence[str], hours: int) -> dict[str, str]:
    """Each site's health in each FLOW_BIN_S of ``run``, one letter an hour (g, y, r; u:
    no sample): the worst utilisation sampled in the hour, a site that could not serve
    (no finite utilisation) counting as overloaded, as the run's own worst does."""
    u = np.asarray(run.series.utilisation, dtype=np.float64)
    if u.ndim != 2 or u.shape[1] != len(sites) or hours <= 0:
        return {}
    u = np.where(np.isfinite(u), u, 10.0)
    hour = (np.arange(u.shape[0]) * run.series.step_s // FLOW_BIN_S).astype(np.int64)
    worst = np.full((hours, len(sites)), np.nan)
    for h in range(hours):
        rows = u[hour == h]
        if rows.size:
            worst[h] = rows.max(axis=0)
    return {
        code: "".join(
            HEALTH_LETTERS[_health(None if np.isnan(x) else float(x))] for x in worst[:, i]
        )
        for i, code in enumerate(sites)
    }


def _site_traffic(run: RunResult) -> dict[str, tuple[float, float]]:
    """Requests moved out of and into each site in ``run``."""
    out: dict[str, list[float]] = {}
    for (src, dst), volume in run.flows.items():
        v = _float(volume) or 0.0
        if v <= 0:
            continue
        out.setdefault(str(src), [0.0, 0.0])[0] += v
        out.setdefault(str(dst), [0.0, 0.0])[1] += v
    return {k: (v[0], v[1]) for k, v in out.items()}


def _events(c: Comparison) -> list[tuple[float, float | None, str, str]]:
    """(start, end or None, kind, sentence) of each event, by start time."""
    out = []
    for ev in c.events:
        if not isinstance(ev, Mapping):
            continue
        at = _float(ev.get("at_s")) or 0.0
        until = _float(ev.get("until_s"))
        out.append((at, until, str(ev.get("kind", "") or ""), str(ev.get("what", "") or "")))
    return sorted(out, key=lambda e: e[0])


def _duration(c: Comparison) -> float:
    d = _float(c.duration_s)
    if d and d > 0:
        return d
    lengths = [r.series.utilisation.shape[0] * r.series.step_s for r in c.runs.values()]
    return max([x for x in lengths if x > 0], default=3600.0)


def _nice_step(span: float, ticks: int = 4) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about ``ticks`` ticks."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * power >= raw:
            return m * power
    return 10 * power


def _nice_ceiling(x: float) -> float:
    step = _nice_step(x, 5)
    return math.ceil(x / step - 1e-9) * step


def _time_ticks(duration: float, start_h: float = 0.0) -> list[float]:
    """Times into the run of round UTC clock times (every 5 minutes to a week)."""
    for minutes in (5, 10, 15, 30, 60, 120, 180, 240, 360, 720, 1440, 2880, 10080):
        if duration / (minutes * 60) <= 8:
            step = minutes * 60.0
            first = (-start_h * 3600.0) % step
            return [first + i * step for i in range(int((duration - first) // step) + 1)]
    return [0.0, duration]


# ---------------------------------------------------------------------------------------
# the header: scenario and events


def _header(c: Comparison) -> str:
    n_sites = len(c.sites)
    facts = [
        f"{_duration(c) / 3600:.3g} h simulated from {_utc(0.0, c.start_utc_hour)} UTC",
        f"tick {c.tick_s:g} s",
        f"{n_sites} site{'s' if n_sites != 1 else ''}",
        f"{len(c.runs)} run{'s' if len(c.runs) != 1 else ''}",
        "every time on this page is UTC",
    ]
    if c.wall_seconds:
        facts.append(f"{c.wall_seconds:.3g} s of wall time")
    events = _events(c)
    items = []
    start_h = c.start_utc_hour
    for i, (at, until, kind, what) in enumerate(events, 1):
        when = _span(at, until, start_h)
        kind_html = f'<span class="kind">{_e(kind)}</span> ' if kind else ""
        items.append(
            f'<li data-at="{_utc(at, start_h)}"><span class="evno">{i}</span>'
            f"<time>{_e(when)}</time> {kind_html}{_e(what)}</li>"
        )
    listing = (
        f'<ol class="events" id="events">{"".join(items)}</ol>'
        if items
        else '<p class="muted" id="events">No events: demand only.</p>'
    )
    return (
        f"<header><h1>Scenario <q>{_e(c.scenario)}</q> under three controllers</h1>"
        f'<p class="muted">{_e(" · ".join(facts))}</p>'
        f"<h2>Events</h2>{listing}</header>"
    )


def _footer(c: Comparison) -> str:
    return (
        '<footer class="muted">Written by anyedge from the digital twin\'s runs of '
        f"<q>{_e(c.scenario)}</q>. The page is self-contained: it loads nothing from the "
        "network. Coastlines are a coarse sketch drawn for this page.</footer>"
    )


# ---------------------------------------------------------------------------------------
# the comparison table

# (label, unit hint, getter, formatter, compare): the best of a compare=True row (an
# outcome: lower is better) is marked; the others are context or the cost of acting, where
# the run that did nothing always "wins" and so nothing is marked.  A row with no getter
# and no formatter is a heading.
_Row = tuple[str, str, Any, Any, bool]

_ROWS: list[_Row] = [
    ("requests", "all users sent", lambda t: t.requests, _count, False),
    ("failed requests", "5xx or no route", lambda t: t.failed, _count, True),
    (
        "failed share",
        "of all requests",
        lambda t: t.failed / t.requests if t.requests else 0.0,
        lambda x: f"{100 * x:.3g} %",
        True,
    ),
    ("of which unrouted", "no route at all", lambda t: t.unrouted, _count, True),
    ("SLO-breach minutes", "summed over sites", lambda t: t.slo_breach_total, _count, True),
    (
        "stranded CPU",
        "core-hours left idle",
        lambda t: t.stranded_cpu_hours,
        lambda x: f"{x:,.1f}",
        True,
    ),
    ("what acting cost", "", None, "heading", False),
    (
        "added latency, mean",
        "demand-weighted",
        lambda t: t.added_latency_mean_ms,
        lambda x: f"{x:.3g} ms",
        False,
    ),
    ("added latency, p95", "", lambda t: t.added_latency_p95_ms, lambda x: f"{x:.3g} ms", False),
    ("traffic moved", "requests served away", lambda t: t.moved, _count, False),
    ("of which forwarded", "by Plurimog", lambda t: t.forwarded, _count, False),
    ("routing changes", "withdrawn or restored", lambda t: t.routing_changes, _count, False),
    ("decisions / actions", "", None, None, False),
    ("origin fetches (cache misses)", "", None, "heading", False),
    (
        "over the backbone",
        "share of fetches",
        lambda t: t.origin_fetch.get("backbone_share"),
        lambda x: f"{100 * x:.1f} %",
        False,
    ),
    (
        "round trip, backbone",
        "median / p90",
        lambda t: _fetch_rtt(t, "backbone"),
        lambda x: x,
        False,
    ),
    ("round trip, transit", "median / p90", lambda t: _fetch_rtt(t, "transit"), lambda x: x, False),
    ("failed fetches", "with Orpheus", lambda t: t.origin_fetch.get("failed"), _count, True),
    (
        "failed without Orpheus",
        "on Argo's choice alone",
        lambda t: t.origin_fetch.get("failed_without_orpheus"),
        _count,
        False,
    ),
]


def _fetch_rtt(t: Any, path: str) -> str | None:
    """``"median / p90 ms"`` of the origin fetches over ``path``; None if there were none."""
    q = (t.origin_fetch.get("rtt_ms") or {}).get(path) or {}
    if q.get("median") is None:
        return None
    return f"{q['median']:.0f} / {q['p90']:.0f} ms"


def _comparison_table(c: Comparison, modes: Sequence[str]) -> str:
    head = "".join(
        f'<th scope="col" data-mode="{_e(m)}">{_e(_mode_title(m))}'
        f'<span class="code">{_swatch(m, modes)}{_e(m)}</span></th>'
        for m in modes
    )
    rows = []
    for label, hint, get, fmt, compare in _ROWS:
        cells: list[str] = []
        if fmt == "heading":
            rows.append(
                f'<tr class="group"><th scope="rowgroup" colspan="{len(modes) + 1}">'
                f"{_e(label)}</th></tr>"
            )
            continue
        if get is None:
            for m in modes:
                t = c.runs[m].totals
                cells.append(f"<td>{t.decisions:,} / {t.actions:,}</td>")
        else:
            raw = [get(c.runs[m].totals) for m in modes]
            if any(isinstance(v, str) for v in raw):  # text already (round trips)
                cells.extend(f"<td>{_e(v)}</td>" if v else '<td class="na">—</td>' for v in raw)
                hint_html = f'<span class="hint">{_e(hint)}</span>' if hint else ""
                rows.append(f'<tr><th scope="row">{_e(label)}{hint_html}</th>{"".join(cells)}</tr>')
                continue
            values = [_float(v) for v in raw]
            finite = [v for v in values if v is not None and math.isfinite(v)]
            best: float | None = None
            if compare and finite and max(finite) > min(finite):
                best = min(finite)
            for v in values:
                if v is None:
                    cells.append('<td class="na">—</td>')
                    continue
                tol = 1e-9 * max(1.0, abs(best)) if best is not None else 0.0
                is_best = best is not None and math.isfinite(v) and v <= best + tol
                cls = ' class="best"' if is_best else ""
                text = fmt(v)
                exact = f"{v:,.0f}"
                title = f' title="{exact}"' if fmt is _count and text != exact else ""
                cells.append(f"<td{cls}{title}>{_e(text)}</td>")
        hint_html = f'<span class="hint">{_e(hint)}</span>' if hint else ""
        rows.append(f'<tr><th scope="row">{_e(label)}{hint_html}</th>{"".join(cells)}</tr>')
    return (
        '<div class="card" id="comparison-card"><h2>The three controllers</h2>'
        '<table id="comparison"><thead><tr><th scope="col">metric</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        '<p class="muted small">Lower is better in every row. The best of each outcome row '
        "(failures, SLO breach, stranded CPU) is marked; what acting cost is not, since the "
        "run that does nothing never pays it: judge it against the failures it saved. "
        "Stranded CPU is healthy capacity below a site's maximum left idle while requests "
        "failed elsewhere, plus capacity lost to sites' withdrawn prefixes: room the "
        "network had but did not use. Origin fetches are the cache misses each site "
        "fetched from customers' origins over the path Argo chose, rerouted by Orpheus "
        "around losing paths (the same paths under every controller; only where the "
        "misses land differs).</p></div>"
    )


# ---------------------------------------------------------------------------------------
# what each event cost


def _share(x: object) -> str:
    v = _float(x)
    return f" ({100 * v:.0f} %)" if v is not None and math.isfinite(v) else ""


def _cost_cells(failed: object, slo: object, failed_share: object, slo_share: object) -> str:
    f, m = _float(failed), _float(slo)
    # a difference of two runs: round-off around zero is zero, not -4e-06 or -0
    f = 0.0 if f is not None and abs(f) < 0.5 else f
    m = 0.0 if m is not None and abs(m) < 0.5 else m
    exact = f' title="{f:,.0f}"' if f is not None and _count(f) != f"{f:,.0f}" else ""
    return (
        f"<td{exact}>{_e(_count(f) if f is not None else '—')}{_e(_share(failed_share))}</td>"
        f"<td>{_e(f'{m:,.0f}' if m is not None else '—')}{_e(_share(slo_share))}</td>"
    )


def _attribution_card(c: Comparison, modes: Sequence[str]) -> str:
    shown = [m for m in modes if isinstance(c.attribution.get(m), Mapping)]
    if not shown:
        return ""
    att = {m: c.attribution[m] for m in shown}
    tail = _float(att[shown[0]].get("tail_s")) or 0.0
    head = "".join(
        f'<th scope="colgroup" colspan="2" data-mode="{_e(m)}">{_swatch(m, modes)}'
        f"{_e(_mode_title(m))}</th>"
        for m in shown
    )
    sub = "".join("<th>failed requests</th><th>SLO minutes</th>" for _ in shown)
    rows = []
    events = [e for e in c.events if isinstance(e, Mapping)]
    for i, ev in enumerate(events):
        at = _float(ev.get("at_s")) or 0.0
        until = _float(ev.get("until_s"))
        when = _span(at, until, c.start_utc_hour)
        cells = []
        sites: list[str] = []
        for m in shown:
            rows_m = att[m].get("events") or []
            r = rows_m[i] if i < len(rows_m) and isinstance(rows_m[i], Mapping) else {}
            cells.append(
                _cost_cells(
                    r.get("failed"), r.get("slo_minutes"), r.get("failed_share"), r.get("slo_share")
                )
            )
            sites += [str(x) for x in r.get("sites", []) if str(x) not in sites]
        where = ", ".join(sites[:8]) + (f" and {len(sites) - 8} more" if len(sites) > 8 else "")
        rows.append(
            f'<tr data-event="{i + 1}"><th scope="row"><span class="evno">{i + 1}</span> '
            f"<time>{_e(when)}</time> {_e(str(ev.get('what', '') or ''))}"
            f'<span class="hint">at {_e(where or "no site")}</span></th>{"".join(cells)}</tr>'
        )
    overlap = any((_float(att[m].get("elsewhere_failed")) or 0.0) <= -0.5 for m in shown)
    rows.append(
        '<tr class="rest"><th scope="row">elsewhere<span class="hint">outside every event\'s '
        "window and sites"
        + ("; below zero where events overlap and each counted the same minutes" if overlap else "")
        + "</span></th>"
        + "".join(
            _cost_cells(
                att[m].get("elsewhere_failed"), att[m].get("elsewhere_slo_minutes"), None, None
            )
            for m in shown
        )
        + "</tr>"
    )
    rows.append(
        '<tr class="reference"><th scope="row">the same day without events'
        '<span class="hint">the reference, not counted above</span></th>'
        + "".join(
            _cost_cells(
                att[m].get("reference_failed"), att[m].get("reference_slo_minutes"), None, None
            )
            for m in shown
        )
        + "</tr>"
    )
    return (
        '<section class="card" id="attribution"><h2>What each event cost</h2>'
        '<div class="scroll-x"><table id="attribution-table"><thead><tr><th scope="col" '
        f'rowspan="2">event</th>{head}</tr><tr>{sub}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        '<p class="muted small" id="attribution-method">How this is counted: each controller '
        "also runs the same day without events (same seed, same demand), the reference. An "
        "event's cost is what its run lost beyond that reference, minute by minute and site "
        f"by site, summed over the event's window plus {tail / 60:g} minutes after it (time "
        "to recover and to take traffic back) and over the event's sites: the site(s) it "
        "hits, the sites BGP moved their users to, and the sites the controller moved their "
        "traffic to during the window. Requests with no route at all count in every window "
        "open at the time. The share is of everything the run lost beyond the reference; "
        "events that overlap in time and sites each count the minutes they share, and "
        "what no event covers is <q>elsewhere</q>.</p></section>"
    )


# ---------------------------------------------------------------------------------------
# the map

# Coarse coastlines, hand-drawn for this page as "lon lat" pairs (degrees, east and north
# positive).  Deliberately rough: the sites are the map; the land is only for orientation.
_LAND = (
    # North America
    "-168 66,-165 68.5,-156.5 71.3,-141 69.6,-128 70.5,-117 68.5,-108 68,-96 68,-94 71.5,"
    "-85 69.8,-81.5 68.5,-88 64,-94.5 59,-92 57,-85 55.3,-80 51.5,-77.5 55.5,-78 60.5,"
    "-77.5 62.5,-72 61.8,-69 58.8,-64.5 60.3,-61 56,-57 52,-56 51.5,-60 48,-64.5 48.5,"
    "-61 46,-63.5 44.6,-66 43.8,-70.7 43,-70 41.7,-74 40.6,-75.5 38.5,-76 35.2,-78.5 33.8,"
    "-81 31.7,-80 27,-80.5 25.2,-82 26.5,-83 29.8,-85 30,-89 30.2,-94 29.6,-97.3 27.5,"
    "-97.5 24,-97.5 21.5,-96 19,-94.5 18.2,-91 19,-90.5 21,-87 21.5,-88 18,-88.5 16,"
    "-84 15.5,-83.3 11,-81 9,-79 9.5,-77.5 8.5,-78 7.3,-80 7.5,-83 8.2,-85.7 10,-87.5 13,"
    "-91.5 14,-94 16,-96.5 15.7,-100 17,-105.5 20,-105.5 22.5,-109 26,-112.8 31.5,-110 23,"
    "-114 28,-117.1 32.5,-120.6 34.6,-122.5 37.5,-124.2 40.5,-124 46,-124.7 48.4,-123 49,"
    "-127.5 50.5,-130 54.5,-133 57.5,-137.5 58.8,-140 60,-146 61,-151 59.5,-154 57.5,"
    "-158 56.5,-162 55,-164 54.5,-157.5 58.5,-162 58.7,-164.5 60.5,-165 62.5,-161 64.5,"
    "-166 65.4",
    # South America
    "-77 8.5,-75.5 10.5,-71.5 12.4,-68 10.6,-63 10.7,-60.5 8.5,-57 6,-52 5,-50 1.5,"
    "-48.5 -1.2,-44 -2.5,-39 -3.5,-35 -5.5,-35 -9,-38.5 -13,-39 -17.5,-40.8 -21.8,-43 -23,"
    "-48 -25.5,-48.6 -28.5,-52 -32,-54 -34.5,-57.5 -35.5,-57 -38.5,-62 -39,-65 -41,"
    "-63.7 -42.5,-65.5 -45,-67.5 -46.5,-69 -50.5,-68.5 -52.5,-67.3 -55.5,-70 -55,"
    "-74 -52,-75.5 -47,-73.7 -41.5,-73.5 -37,-71.6 -33,-71.5 -28,-70.3 -18.5,-75 -15,"
    "-77 -12,-79.5 -7.5,-81.3 -5,-80 -2.5,-80.5 0,-78.8 1.5,-77.3 4,-77.5 7",
    # Africa
    "-6 35.8,-1 35.1,3 36.8,10 37.2,11 33.5,15.5 32,19 30.3,20.1 32.1,23 32.6,25 31.7,"
    "29.5 31,32.3 31.2,32.5 30,33.5 27.5,35.5 23.9,37.3 21,38.8 17.5,39.7 15.5,43.3 12.6,"
    "44.5 10.5,51.2 11.8,49.5 6.5,46 2,41.5 -1.8,39.2 -6.5,40.3 -10.5,40.6 -15,35.5 -22,"
    "33 -25.8,32.5 -29,30 -31.5,27.5 -33.5,22.5 -34,18.5 -34.2,18 -31.5,15 -27,"
    "14.5 -22.5,11.8 -17,13.5 -11.5,12.2 -6,9.3 -0.7,9.6 3.9,8.3 4.6,4.5 6.3,1 6,"
    "-3.2 5.1,-7.5 4.4,-10.5 6.5,-13.2 8.8,-15.3 11.6,-17.2 14.7,-16.3 19.5,-17 21,"
    "-14.8 25.5,-13.2 27.7,-9.8 29.7,-9.5 32.5,-6.9 34.2",
    # Eurasia
    "-9.3 43,-9.5 38.7,-8.8 37,-6 36.2,-5.5 36,-2 36.8,0 38.7,0.5 40.5,3.2 42,3.5 43.3,"
    "6.5 43.1,8.8 44.4,10.5 43,12.5 41.5,15.6 40,16 38,17.1 39.4,18.5 40.1,16 41.5,"
    "13.5 43.6,12.3 45.3,13.7 45.6,15.2 44.3,19 42,19.5 40,21 38,22.8 36.5,23.2 38.2,"
    "22.5 40.5,24 40.8,26.2 40.3,26.2 39.5,27.2 37.5,28.5 36.7,30.5 36.5,32.5 36.1,"
    "36 36.7,35.8 34.5,35 33,34.3 31.3,32.5 30,34.9 29.5,36.5 26,39 21.5,41 17.5,"
    "42.8 14.5,43.4 12.7,45 12.8,49 14.2,52.2 15.6,55.4 17.8,57.8 19,59.8 22.5,"
    "58.5 23.6,56.3 26.2,54 24.2,51.6 24.5,50.8 26.3,48.5 28.5,48 30,50 30.2,51.5 27.8,"
    "54.8 26.5,57.3 25.8,61.6 25.2,66.6 25.4,68.5 23.5,70 22.5,72.8 21,73 18.9,"
    "74.2 15.5,75.5 12,76.5 9.5,77.5 8.1,78.2 9,79.8 10.3,80.2 13,81 16,84 18.5,"
    "86.8 20.5,88 22,90 22,91.8 22.4,94.3 19,94.2 16,97.6 16.5,98.3 8,100.4 4,"
    "101.5 2.8,103.5 1.3,104.2 1.5,103.4 4.8,102.2 6.2,100.4 7.5,100 9.5,99.2 10.5,"
    "100 13.5,101 12.7,102.9 11.8,104.8 8.7,106.7 10.3,109.2 11.6,109.2 13.8,108 16.2,"
    "106.6 18.2,106.7 20.7,108.5 21.6,110.5 20.5,113.5 22.2,117 23.5,119.6 25.6,"
    "121.5 28.5,121.9 30.9,120.5 32.5,119.2 35,122.5 37.2,119 37.2,118 38.5,121.5 40.9,"
    "121.2 39,124.2 39.8,125.2 37.8,126.5 34.4,129.3 35.2,129.5 37,128.3 38.6,129.8 41,"
    "130.7 42.3,133 42.8,135.5 43.9,138.5 47,140.5 50,141.3 53,137.5 54,135.3 54.8,"
    "140.7 58.5,143 59.3,150.7 59.6,155 59.5,157 58,156.7 51,160 53,162.5 56.2,"
    "163.5 59.8,170 60.3,177.5 62.5,180 65,180 68.9,170 70,160 69.7,150 71.5,140 72.5,"
    "129 72.3,113 73.7,104 77.7,96 76,87 74.5,80 72.5,73 72.7,70 73,66.5 70.5,60 69,"
    "55 68.3,44 68.5,40.5 67.8,33 69.4,28 71,24 71,18 69.8,14 67.5,12.5 65.5,10 63.5,"
    "5 62,5.5 59,7 58,10.5 59.2,11.5 58.5,12 57.5,12.8 55.5,14.3 56,16.5 57.5,18.5 59.5,"
    "17.2 61,21.5 64.5,25.3 65.5,25.2 64.9,21.5 61.5,22.8 60,30.2 59.9,24 59.4,23.5 59.3,"
    "24.2 57.2,21.1 56.8,21 55.7,19.5 54.4,14.5 53.9,11 54,10 54.8,10.5 57.7,8.2 56.8,"
    "8.6 53.9,7 53.5,4.8 53,4 51.8,2.5 51.1,1.6 50.2,-1.5 49.7,-4.7 48.5,-2.2 47.1,"
    "-1.2 44.6,-1.8 43.4,-8 43.7",
    # Chukotka, east of the antimeridian
    "-180 65,-172 64.3,-169.7 66,-175 67.5,-180 68.9",
    # Australia
    "113.5 -22,114 -26.5,115 -31,115 -34.3,118 -35,123.5 -33.9,126 -32.3,131 -31.5,"
    "135.6 -34.9,137.8 -33,138.5 -35.5,140 -37.5,141.5 -38.4,144.5 -38.2,146.4 -39.1,"
    "150 -37.5,151.2 -33.9,153 -31.5,153.5 -28,153 -25,150.8 -22.5,149 -20.5,146 -18.5,"
    "145.5 -15,143.5 -14,142.5 -10.7,141.6 -12.5,141.5 -15.5,140.8 -17.5,139.3 -17.4,"
    "137.5 -16,135.8 -15,136.8 -12.2,132.5 -11.3,130.8 -12.4,129.5 -14.8,126.5 -14,"
    "124.5 -16.5,122.2 -17.9,119 -20,116.5 -20.8",
    # Greenland, Baffin Island, Iceland
    "-73 78,-60 82,-40 83.5,-22 82,-18 77,-22 72.5,-25 69,-34 66.5,-40 65,-43.5 60,"
    "-48.5 61.5,-51.5 64.5,-53.5 67,-54 70,-56 72.5,-66 76",
    "-80 73.5,-73 71.5,-65 68,-62 66.5,-64.5 63.5,-68 62.5,-74 64.5,-78 65,-79 70",
    "-22.7 64,-21 66.2,-15 66.5,-13.6 65.2,-17 63.7,-21 63.8",
    # Great Britain, Ireland
    "-5.7 50.1,1.4 51.2,1.7 52.6,0.3 53.5,-1.6 55.5,-2 57.6,-3 58.6,-5 58.6,-6.2 56.5,"
    "-5 55,-3.2 54.8,-3 53.4,-4.7 52.8,-5.3 51.7,-3 51.4",
    "-6 52.2,-6.2 53.8,-5.6 54.6,-7.3 55.3,-10 54.2,-9.6 53,-10.3 51.7,-8 51.6",
    # Japan: Honshu with Kyushu and Shikoku, Hokkaido
    "129.9 33.2,131 34.5,133 35.6,136 35.8,137.5 37.3,139.6 38.3,140 40.5,141.5 41.4,"
    "142 39.5,141 38,140.9 36.8,140.8 35.7,139.8 35,138.8 34.6,137 34.5,135.8 33.5,"
    "134.5 33.8,132.5 32.8,131.3 31.4,130.2 31.3",
    "140 41.5,139.8 42.3,141.3 43.3,141.8 45.4,144.5 44,145.8 43.3,143.3 42,141.2 41.8",
    # Sumatra, Java, Borneo, New Guinea, Luzon, Mindanao, Sri Lanka, Taiwan, Madagascar
    "95.3 5.6,98.5 3.7,103.8 -1,106 -3.2,105.8 -5.8,102 -4,99 -0.5,96.5 3.5",
    "105.2 -6.8,108 -6.3,112.5 -6.9,114.5 -7.8,112 -8.3,108 -7.8,105.5 -6.9",
    "109 1.5,113 3.2,115.5 5.2,117.2 7,119.2 5.2,118 4.4,117.7 1,116.5 -2.3,116 -3.8,"
    "114.5 -4,111.5 -3,110 -2.5,109 -0.5",
    "131 -1,134 -1,138 -1.7,141 -2.6,145 -4.5,147.5 -6,147.5 -8,150.5 -10.5,147 -10,"
    "143.5 -9,141 -9.2,138 -8.3,137.5 -5,133 -4,131.5 -2.5",
    "120.6 18.5,122.3 18.5,122 16,124 13,121 13.5,120.3 16",
    "122 7,126.2 9,126.5 7,125.5 6,123.5 7.8",
    "79.9 9.8,81.9 7.5,81.5 6.2,80.1 6,79.7 8",
    "120.1 23,121.5 25.2,122 24.5,120.8 22",
    "49.3 -12,50.5 -15.5,47.2 -24.9,45 -25.5,43.5 -22.5,44.2 -17,46.5 -15.5,48 -13.3",
    # New Zealand: North Island, South Island
    "172.6 -34.4,174.8 -36.8,178.5 -37.7,177.9 -39.2,176.8 -39.6,175.3 -41.6,174.6 -41.3,"
    "173.8 -39.3,174.5 -37",
    "172.7 -40.5,174.2 -41.7,173 -43.7,171.2 -44.5,169 -46.6,166.5 -46,168.1 -44,171 -42",
    # Cuba, Hispaniola
    "-84.9 21.9,-82 23.2,-77 22,-74.2 20.2,-77.6 19.9,-80.5 21.7",
    "-74.4 18.4,-73 19.9,-69 19.9,-68.4 18.6,-71.5 17.6",
)
# Inland seas, drawn over the land in the ocean's colour: Black Sea, Caspian Sea
_SEAS = (
    "28 41.3,28.8 44.5,30.5 46.5,31.5 46.6,33.5 44.5,36.5 45.3,38.5 47.1,38 44.5,"
    "41.5 41.6,36 41.7,33 42,29 41.2",
    "49 46.5,53 47,51.3 45.3,53 42,53.9 40.5,53 37.3,49 37.5,49.5 40.3,47.5 42,47 44",
)


class _Projection:
    """Equirectangular: x from longitude, y from latitude, the same scale on both."""

    def __init__(self, top: float, bottom: float) -> None:
        self.top = top
        self.bottom = bottom
        self.scale = MAP_W / 360.0
        self.height = (top - bottom) * self.scale

    def x(self, lon: float) -> float:
        return (lon + 180.0) * self.scale

    def y(self, lat: float) -> float:
        return (self.top - lat) * self.scale


def _outline_path(proj: _Projection, outlines: Iterable[str]) -> str:
    parts = []
    for outline in outlines:
        pts = []
        for pair in outline.split(","):
            lon, lat = (float(v) for v in pair.split())
            pts.append(f"{proj.x(lon):.1f},{proj.y(lat):.1f}")
        parts.append("M" + "L".join(pts) + "Z")
    return "".join(parts)


def _great_circle(lon1: float, lat1: float, lon2: float, lat2: float) -> list[tuple[float, float]]:
    """Points (lon, lat) along the shorter great circle between two places."""

    def vec(lon: float, lat: float) -> tuple[float, float, float]:
        lo, la = math.radians(lon), math.radians(lat)
        return (math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la))

    a, b = vec(lon1, lat1), vec(lon2, lat2)
    dot = max(-1.0, min(1.0, sum(p * q for p, q in zip(a, b, strict=True))))
    omega = math.acos(dot)
    if omega < 1e-6 or math.pi - omega < 1e-6:
        return [(lon1, lat1), (lon2, lat2)]
    n = max(2, min(48, int(math.degrees(omega) / 2)))
    out = []
    for i in range(n + 1):
        f = i / n
        wa = math.sin((1 - f) * omega) / math.sin(omega)
        wb = math.sin(f * omega) / math.sin(omega)
        x, y, z = (wa * p + wb * q for p, q in zip(a, b, strict=True))
        out.append((math.degrees(math.atan2(y, x)), math.degrees(math.asin(max(-1, min(1, z))))))
    return out


def _flow_path(proj: _Projection, pts: Sequence[tuple[float, float]]) -> str:
    """An SVG path along ``pts``, broken where it crosses the antimeridian."""
    d = []
    prev: float | None = None
    for lon, lat in pts:
        cmd = "M" if prev is None or abs(lon - prev) > 180 else "L"
        d.append(f"{cmd}{proj.x(lon):.1f},{proj.y(lat):.1f}")
        prev = lon
    return "".join(d)


def _arrow(proj: _Projection, pts: Sequence[tuple[float, float]], size: float) -> str:
    """A small arrowhead halfway along ``pts``, pointing onwards."""
    i = max(1, len(pts) // 2)
    (lon0, lat0), (lon1, lat1) = pts[i - 1], pts[i]
    if abs(lon1 - lon0) > 180:
        return ""
    x0, y0, x1, y1 = proj.x(lon0), proj.y(lat0), proj.x(lon1), proj.y(lat1)
    angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
    s = size
    return (
        f'<path class="arrow" d="M{s:.1f},0L{-s:.1f},{-s * 0.8:.1f}L{-s:.1f},{s * 0.8:.1f}Z" '
        f'transform="translate({(x0 + x1) / 2:.1f},{(y0 + y1) / 2:.1f}) rotate({angle:.0f})"/>'
    )


def _site_positions(c: Comparison) -> list[tuple[str, str, float, float] | None]:
    out: list[tuple[str, str, float, float] | None] = []
    for i, code in enumerate(c.sites):
        city = c.cities[i] if i < len(c.cities) else ""
        lat = _float(c.lat[i]) if i < len(c.lat) else None
        lon = _float(c.lon[i]) if i < len(c.lon) else None
        if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
            out.append(None)
            continue
        lon = (lon + 180.0) % 360.0 - 180.0
        out.append((str(code), str(city), lon, max(-90.0, min(90.0, lat))))
    return out


def _map_card(c: Comparison, modes: Sequence[str]) -> str:
    shown = _map_mode(modes)
    positions = _site_positions(c)
    lats = [p[3] for p in positions if p is not None]
    top = min(90.0, max([84.0] + [lat + 6 for lat in lats]))
    bottom = max(-90.0, min([-58.0] + [lat - 6 for lat in lats]))
    proj = _Projection(top, bottom)
    traffic = {m: _site_traffic(c.runs[m]) for m in modes}
    biggest = max(
        [sum(v) for t in traffic.values() for v in t.values()] + [0.0],
    )

    # circles shrink when many sites move traffic, so the map stays readable
    active = max([len(t) for t in traffic.values()] + [1])
    growth = max(SITE_R_GROWTH / 2, SITE_R_GROWTH * min(1.0, math.sqrt(30 / active)))

    def radius(site: str, mode: str) -> float:
        moved = sum(traffic[mode].get(site, (0.0, 0.0)))
        if biggest <= 0 or moved <= 0:
            return SITE_R
        return SITE_R + growth * math.sqrt(moved / biggest)

    # for the script, which sizes and colours the sites for the hours chosen
    hours = _hours(c, modes)
    by_hour = {m: _hourly_health(c.runs[m], c.sites, hours) for m in modes} if hours > 1 else {}
    colours = ",".join(f"{HEALTH_LETTERS[k]}{v}" for k, v in HEALTH_COLOURS.items())
    svg = [
        f'<svg id="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {MAP_W:.0f} '
        f'{proj.height:.0f}" role="img" aria-labelledby="map-title" '
        f'data-showing="{_e(shown or "")}" data-r0="{SITE_R:g}" data-growth="{growth:.3f}" '
        f'data-colours="{colours}">',
        f'<title id="map-title">Sites by health and the traffic moved between them '
        f"({_e(_mode_title(shown or ''))})</title>",
        f'<rect class="ocean" x="0" y="0" width="{MAP_W:.0f}" height="{proj.height:.1f}"/>',
        f'<path class="land" d="{_outline_path(proj, _LAND)}"/>',
        f'<path class="ocean" d="{_outline_path(proj, _SEAS)}"/>',
    ]
    # graticule: every 30 degrees, the equator and the prime meridian a little darker
    grid = []
    for meridian in range(-150, 180, 30):
        cls = ' class="axis"' if meridian == 0 else ""
        x = proj.x(meridian)
        grid.append(f'<line{cls} x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{proj.height:.1f}"/>')
    for parallel in range(-90, 91, 30):
        if not bottom < parallel < top:
            continue
        cls = ' class="axis"' if parallel == 0 else ""
        y = proj.y(parallel)
        grid.append(f'<line{cls} x1="0" y1="{y:.1f}" x2="{MAP_W:.0f}" y2="{y:.1f}"/>')
        label = "0°" if parallel == 0 else f"{abs(parallel)}°{'N' if parallel > 0 else 'S'}"
        grid.append(f'<text x="4" y="{y - 3:.1f}">{label}</text>')
    svg.append(f'<g class="graticule">{"".join(grid)}</g>')

    # flows: one group per run, only the shown run's visible
    where = {p[0]: (p[2], p[3]) for p in positions if p is not None}
    volumes = [_float(v) or 0.0 for m in modes for v in c.runs[m].flows.values()]
    vmax = max([*volumes, 0.0])
    for m in modes:
        flows = sorted(
            (
                (str(a), str(b), _float(v) or 0.0)
                for (a, b), v in c.runs[m].flows.items()
                if a in where and b in where and a != b
            ),
            key=lambda f: -f[2],
        )
        flows = [f for f in flows if f[2] > 0][:MAX_FLOWS]
        hidden = "" if m == shown else ' style="display:none"'
        lines = []
        bins = c.runs[m].flow_bins
        for a, b, v in reversed(flows):  # the largest drawn last, on top
            width = 0.8 + 5.0 * math.sqrt(v / vmax) if vmax > 0 else 0.8
            pts = _great_circle(*where[a], *where[b])
            km = _distance_km(where[a], where[b])
            per_bin = bins.get((a, b))
            # each hour's share of the line's requests, per mille (none: left empty)
            hourly = (
                f' data-v="{",".join(_per_mille(_float(x) or 0.0, v) for x in per_bin)}"'
                if per_bin
                else ""
            )
            lines.append(
                f'<g class="flow" data-from="{_e(a)}" data-to="{_e(b)}" data-km="{km:.0f}" '
                f'data-total="{v:.4g}"{hourly}>'
                f"<title>{_e(a)} → {_e(b)}, {km:,.0f} km: {_e(_si(v))} requests</title>"
                f'<path d="{_flow_path(proj, pts)}" stroke-width="{width:.2f}"/>'
                f"{_arrow(proj, pts, 2.5 + width)}</g>"
            )
        svg.append(f'<g class="flows" data-mode="{_e(m)}"{hidden}>{"".join(lines)}</g>')

    # sites: one circle each, coloured by health and sized by traffic moved
    order = []
    for i, p in enumerate(positions):
        if p is None:
            continue
        order.append((radius(p[0], shown) if shown else SITE_R, i, p))
    order.sort(key=lambda item: (-item[0], item[1]))
    circles = []
    for r, _, (code, city, lon, lat) in order:
        attrs = []
        lines = [f"{code} {city}".strip()]
        for m in modes:
            u = _float(c.runs[m].health.get(code))
            colour = HEALTH_COLOURS[_health(u)]
            attrs.append(f'data-fill-{_e(m)}="{colour}" data-r-{_e(m)}="{radius(code, m):.1f}"')
            if code in by_hour.get(m, {}):
                attrs.append(f'data-h-{_e(m)}="{by_hour[m][code]}"')
            out, into = traffic[m].get(code, (0.0, 0.0))
            worst = "no data" if u is None else f"{u:.2f}"
            lines.append(
                f"{_mode_title(m)}: worst utilisation {worst}, moved out {_si(out)}, in {_si(into)}"
            )
        health = _health(_float(c.runs[shown].health.get(code))) if shown else "unknown"
        circles.append(
            f'<circle class="site" data-site="{_e(code)}" cx="{proj.x(lon):.1f}" '
            f'cy="{proj.y(lat):.1f}" r="{r:.1f}" fill="{HEALTH_COLOURS[health]}" '
            f"{' '.join(attrs)}><title>{_e(chr(10).join(lines))}</title></circle>"
        )
    svg.append(f'<g class="sites">{"".join(circles)}</g>')

    # codes of the sites that moved the most (in any run), so the map can be read
    moved_any = {
        code: max(sum(traffic[m].get(code, (0.0, 0.0))) for m in modes) if modes else 0.0
        for code in where
    }
    labelled = sorted((v, k) for k, v in moved_any.items() if v > 0)[-MAX_LABELS:]
    labels = []
    for _, code in labelled:
        lon, lat = where[code]
        r = max(radius(code, m) for m in modes)
        x, y = proj.x(lon), proj.y(lat) - r * 0.7 - 1
        if x > MAP_W - 60:  # near the right edge: write it to the left of the circle
            labels.append(f'<text class="end" x="{x - r * 0.7 - 2:.1f}" y="{y:.1f}">')
        else:
            labels.append(f'<text x="{x + r * 0.7 + 2:.1f}" y="{y:.1f}">')
        labels[-1] += f"{_e(code)}</text>"
    svg.append(f'<g class="labels">{"".join(labels)}</g></svg>')

    buttons = "".join(
        f'<button type="button" data-mode="{_e(m)}" '
        f'aria-pressed="{"true" if m == shown else "false"}">{_swatch(m, modes)}'
        f"{_e(_mode_title(m))}</button>"
        for m in modes
    )
    buttons += _window_select(c, modes)
    legend = (
        '<p class="legend small">'
        f'<span class="dot" style="background:{HEALTH_COLOURS["green"]}"></span>'
        f"worst utilisation below {GREEN_BELOW:g} "
        f'<span class="dot" style="background:{HEALTH_COLOURS["yellow"]}"></span>'
        f"up to {YELLOW_UP_TO:g} "
        f'<span class="dot" style="background:{HEALTH_COLOURS["red"]}"></span>above '
        f'<span class="dot" style="background:{HEALTH_COLOURS["unknown"]}"></span>no data. '
        "Circle area: requests moved from or to the site over the whole run. Lines: from "
        "the site requests reached to the site that served them, wider for more, in the "
        "hours chosen.</p>"
    )
    return (
        '<div class="card" id="map-card"><h2>Where traffic went</h2>'
        f'<div id="map-modes" role="group" aria-label="run shown on the map">{buttons}</div>'
        f"{''.join(svg)}{legend}{_top_moves(c, shown, where)}</div>"
    )


def _per_mille(x: float, total: float) -> str:
    n = round(1000.0 * x / total) if total > 0 else 0
    return str(n) if n else ""


def _hours(c: Comparison, modes: Sequence[str]) -> int:
    """How many FLOW_BIN_S the runs recorded their moves in (0 or 1: not by hour)."""
    return max([len(v) for m in modes for v in c.runs[m].flow_bins.values()] + [0])


def _window_select(c: Comparison, modes: Sequence[str]) -> str:
    """A select of the hours the map covers — its lines, the sites' sizes and colours
    and the largest moves: the whole run, each event's hours, or one hour (when the runs
    recorded their moves by hour)."""
    n = _hours(c, modes)
    if n <= 1:
        return ""
    start_h = c.start_utc_hour
    options = ['<option value="">the whole run</option>']
    for i, (at, until, _, what) in enumerate(_events(c), 1):
        lo = int(at // FLOW_BIN_S)
        end = _duration(c) if until is None else until
        hi = min(n, max(lo + 1, math.ceil(end / FLOW_BIN_S - 1e-9)))
        if lo < n:
            label = f"event {i}: {_span(lo * FLOW_BIN_S, hi * FLOW_BIN_S, start_h)}"
            options.append(f'<option value="{lo},{hi}" title="{_e(what)}">{_e(label)}</option>')
    for b in range(n):
        label = _span(b * FLOW_BIN_S, (b + 1) * FLOW_BIN_S, start_h)
        options.append(f'<option value="{b},{b + 1}">{_e(label)}</option>')
    return (
        '<label class="small" id="map-window-label">hours '
        f'<select id="map-window">{"".join(options)}</select></label>'
    )


def _top_moves(c: Comparison, mode: str | None, where: Mapping[str, tuple[float, float]]) -> str:
    """The largest moves of the map's run over the whole run (the script redraws the
    table for another run or other hours, from the map's lines)."""
    rows = ""
    caption = ""
    if mode is not None:
        flows = sorted(
            ((_float(v) or 0.0, str(a), str(b)) for (a, b), v in c.runs[mode].flows.items()),
            reverse=True,
        )
        flows = [f for f in flows if f[0] > 0]
        total = sum(f[0] for f in flows)
        for v, a, b in flows[:MAX_MOVES]:
            km = f"{_distance_km(where[a], where[b]):,.0f}" if a in where and b in where else ""
            rows += (
                f"<tr><td>{_e(a)} → {_e(b)}</td><td>{km}</td><td>{_e(_si(v))}</td>"
                f"<td>{100 * v / total:.0f} %</td></tr>"
            )
        more = f" ({len(flows) - MAX_MOVES} more)" if len(flows) > MAX_MOVES else ""
        caption = f"Largest moves, {_mode_title(mode)}, the whole run{more}"
        if not flows:
            caption = f"{_mode_title(mode)} moved no traffic."
    return (
        f'<table class="moves small" id="moves" data-rows="{MAX_MOVES}">'
        f"<caption>{_e(caption)}</caption><thead><tr>"
        "<th>from → to</th><th>km</th><th>requests</th><th>share</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


# ---------------------------------------------------------------------------------------
# per-site time series


def _interesting_sites(c: Comparison, modes: Sequence[str], n: int) -> list[int]:
    """Indices of ``n`` sites to chart: the sites of the events first (for each event,
    the busiest site it hits; then for each, the busiest site its users went to), then
    the sites with the most SLO-breach minutes or traffic moved."""
    order = _busiest_sites(c, modes)
    rank = {j: r for r, j in enumerate(order)}
    index = {str(s): i for i, s in enumerate(c.sites)}
    picked: list[int] = []
    events = [e for e in c.events if isinstance(e, Mapping)]
    for key in ("sites", "receivers"):
        for ev in events:
            names = ev.get(key)
            mine = [index[str(x)] for x in names if str(x) in index] if names else []
            best = min(mine, key=lambda j: rank[j], default=None)
            if best is not None and best not in picked:
                picked.append(best)
    picked = picked[:n]
    picked += [j for j in order if j not in picked][: n - len(picked)]
    return picked


def _busiest_sites(c: Comparison, modes: Sequence[str]) -> list[int]:
    """Site indices, the most SLO-breach minutes or traffic moved first."""
    breach = np.zeros(len(c.sites))
    moved = np.zeros(len(c.sites))
    worst = np.zeros(len(c.sites))
    index = {str(s): i for i, s in enumerate(c.sites)}
    for m in modes:
        run = c.runs[m]
        for site, minutes in run.totals.slo_breach_minutes.items():
            if site in index:
                breach[index[site]] += _float(minutes) or 0.0
        for site, (out, into) in _site_traffic(run).items():
            if site in index:
                moved[index[site]] += out + into
        for site, u in run.health.items():
            if site in index:
                worst[index[site]] = max(worst[index[site]], _float(u) or 0.0)
    score = np.zeros(len(c.sites))
    if breach.max(initial=0.0) > 0:
        score += breach / breach.max()
    if moved.max(initial=0.0) > 0:
        score += moved / moved.max()
    return sorted(range(len(c.sites)), key=lambda i: (-score[i], -worst[i], i))


def _bucket_max(t: Array, y: Array, max_points: int) -> tuple[Array, Array]:
    """At most ``max_points`` points: each the largest of its bucket (peaks survive)."""
    n = len(y)
    if n <= max_points:
        return t, y
    k = math.ceil(n / max_points)
    buckets = math.ceil(n / k)
    padded = np.full(buckets * k, -np.inf)
    padded[:n] = np.where(np.isnan(y), -np.inf, y)
    peaks = padded.reshape(buckets, k).max(axis=1)
    peaks[np.isneginf(peaks)] = np.nan
    return t[::k][:buckets], peaks


class _Chart:
    """A time-series panel: the plot area inside margins, x over the scenario's duration."""

    W, H = 600.0, 190.0
    LEFT, RIGHT, TOP, BOTTOM = 44.0, 18.0, 10.0, 22.0

    def __init__(self, duration: float, ymax: float, start_h: float = 0.0) -> None:
        self.duration = duration
        self.ymax = ymax
        self.start_h = start_h  # the UTC hour of the run's time 0
        self.pw = self.W - self.LEFT - self.RIGHT
        self.ph = self.H - self.TOP - self.BOTTOM

    def x(self, t: float) -> float:
        return self.LEFT + self.pw * min(max(t / self.duration, 0.0), 1.0)

    def y(self, v: float) -> float:
        return self.TOP + self.ph * (1.0 - min(max(v / self.ymax, 0.0), 1.0))

    def frame(self, yticks: Sequence[float], fmt: Any) -> str:
        out = []
        for v in yticks:
            y = self.y(v)
            out.append(
                f'<line class="grid" x1="{self.LEFT}" y1="{y:.1f}" '
                f'x2="{self.W - self.RIGHT}" y2="{y:.1f}"/>'
                f'<text class="ytick" x="{self.LEFT - 4}" y="{y + 3:.1f}">{_e(fmt(v))}</text>'
            )
        for t in _time_ticks(self.duration, self.start_h):
            x = self.x(t)
            out.append(
                f'<line class="tick" x1="{x:.1f}" y1="{self.TOP + self.ph}" x2="{x:.1f}" '
                f'y2="{self.TOP + self.ph + 4}"/>'
                f'<text class="xtick" x="{x:.1f}" y="{self.H - 6}">'
                f"{_utc(t, self.start_h, end=t > 0)}</text>"
            )
        out.append(
            f'<rect class="plot" x="{self.LEFT}" y="{self.TOP}" width="{self.pw}" '
            f'height="{self.ph}"/>'
        )
        return "".join(out)

    def events(self, events: Sequence[tuple[float, float | None, str, str]]) -> str:
        out = []
        for i, (at, until, kind, what) in enumerate(events, 1):
            x0 = self.x(at)
            x1 = self.x(self.duration if until is None else until)
            if x1 - x0 < 1.0:
                x1 = x0 + 1.0
            out.append(
                f'<rect class="event" x="{x0:.1f}" y="{self.TOP}" width="{x1 - x0:.1f}" '
                f'height="{self.ph}"><title>{i}. {_e(kind)}: {_e(what)}</title></rect>'
                f'<text class="evlabel" x="{x0 + 2:.1f}" y="{self.TOP + 10}">{i}</text>'
            )
        return "".join(out)

    def hline(self, v: float, cls: str, label: str) -> str:
        y = self.y(v)
        return (
            f'<line class="{cls}" x1="{self.LEFT}" y1="{y:.1f}" x2="{self.W - self.RIGHT}" '
            f'y2="{y:.1f}"/><text class="hlabel {cls}" x="{self.W - self.RIGHT - 3}" '
            f'y="{y - 3:.1f}">{_e(label)}</text>'
        )

    def lines(self, t: Array, y: Array, colour: str, mode: str) -> str:
        """Polylines of ``y`` over ``t``, broken where a value is missing."""
        out = []
        run: list[str] = []
        for ti, yi in zip(t.tolist(), y.tolist(), strict=True):
            if math.isnan(yi):
                if run:
                    out.append(run)
                run = []
                continue
            run.append(f"{self.x(ti):.1f},{self.y(yi):.1f}")
        if run:
            out.append(run)
        return "".join(
            f'<polyline class="series" data-mode="{_e(mode)}" stroke="{colour}" '
            f'points="{" ".join(pts)}"/>'
            for pts in out
            if pts
        )

    def marks(
        self,
        actions: Sequence[Mapping[str, Any]],
        colour: str,
        mode: str,
        row: int,
    ) -> str:
        """A short tick at the foot of the plot for each action, one row per run, with
        what it did on hover."""
        out = []
        y = self.TOP + self.ph - 5.0 * (row + 1)
        for a in actions:
            t = _float(a.get("time_s"))
            if t is None:
                continue
            x = self.x(t)
            what = (
                f"{_utc(t, self.start_h)} UTC, {_mode_title(mode)}: {a.get('site')} "
                f"{KIND_WORDS.get(str(a.get('kind')), a.get('kind'))}"
                f"{' to ' + str(a.get('to')) if a.get('to') else ''}: {a.get('reason', '')}"
            )
            out.append(
                f'<path class="mark" d="M{x:.1f},{y:.1f}v4" stroke="{colour}">'
                f"<title>{_e(what)}</title></path>"
            )
        return f'<g class="marks" data-mode="{_e(mode)}">{"".join(out)}</g>' if out else ""

    def svg(self, label: str, content: str) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {self.W:.0f} '
            f'{self.H:.0f}" role="img" aria-label="{_e(label)}">{content}</svg>'
        )


def _site_series(run: RunResult, j: int, field: str) -> tuple[Array, Array] | None:
    data = getattr(run.series, field, None)
    if data is None:
        return None
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 2 or j >= arr.shape[1] or arr.shape[0] == 0:
        return None
    step = _float(run.series.step_s) or 60.0
    return np.arange(arr.shape[0], dtype=np.float64) * step, arr[:, j]


def _learned_by_site(c: Comparison, modes: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for entry in _learned_entries(c, modes):
        if entry.get("site") is not None:
            out.setdefault(str(entry["site"]), entry)
    return out


def _site_charts(c: Comparison, modes: Sequence[str]) -> str:
    if not c.sites or not modes:
        return ""
    duration = _duration(c)
    events = _events(c)
    learned = _learned_by_site(c, modes)
    picked = _interesting_sites(c, modes, CHART_SITES)
    roles = _event_roles(c)
    cards = []
    for j in picked:
        code = str(c.sites[j])
        city = str(c.cities[j]) if j < len(c.cities) else ""
        util = {m: s for m in modes if (s := _site_series(c.runs[m], j, "utilisation"))}
        p95 = {m: s for m in modes if (s := _site_series(c.runs[m], j, "p95_ms"))}
        card = _site_card(c, modes, code, city, util, p95, duration, events, learned)
        if roles.get(code):
            note = f'<p class="small roles">{_e("; ".join(roles[code]))}</p>'
            card = card.replace('<ul class="facts small">', note + '<ul class="facts small">', 1)
        cards.append(card)
    legend = "".join(
        f'<span class="swatch" style="border-color:{_mode_colour(m, modes)}"></span>'
        f"{_e(_mode_title(m))} "
        for m in modes
    )
    return (
        '<section id="sites"><h2>The sites of the events, and the most eventful</h2>'
        f'<p class="legend small">{legend}<span class="evbox"></span>event windows. '
        f"First the site each event hits and the site its users went to, then the sites "
        f"with the most SLO-breach minutes or traffic moved, across the runs. Each "
        f"point is the highest of up to {MAX_POINTS} buckets, so peaks survive. The ticks "
        f"at the foot of the utilisation chart are the controllers' actions at or to the "
        f"site (hover for what and why).</p>"
        f'<div class="site-grid">{"".join(cards)}</div></section>'
    )


def _event_roles(c: Comparison) -> dict[str, list[str]]:
    """Per site code, what the events did to it ("event 2 hits it", ...)."""
    out: dict[str, list[str]] = {}
    events = [e for e in c.events if isinstance(e, Mapping)]
    for i, ev in enumerate(events, 1):
        for key, what in (("sites", "hits it"), ("receivers", "sends it users")):
            for code in ev.get(key) or []:
                out.setdefault(str(code), []).append(f"event {i} {what}")
    return out


def _site_card(
    c: Comparison,
    modes: Sequence[str],
    code: str,
    city: str,
    util: Mapping[str, tuple[Array, Array]],
    p95: Mapping[str, tuple[Array, Array]],
    duration: float,
    events: Sequence[tuple[float, float | None, str, str]],
    learned: Mapping[str, Mapping[str, Any]],
) -> str:
    facts = []
    acted: dict[str, list[Mapping[str, Any]]] = {}
    for m in modes:
        run = c.runs[m]
        minutes = _float(run.totals.slo_breach_minutes.get(code)) or 0.0
        out, into = _site_traffic(run).get(code, (0.0, 0.0))
        acted[m] = [a for a in run.actions if code in (a.get("site"), a.get("to"))]
        n = sum(a.get("kind") != "hold" for a in acted[m])
        did = f", {n} action{'s' if n != 1 else ''}" if n else ""
        facts.append(
            f'<li><span class="swatch" style="border-color:{_mode_colour(m, modes)}"></span>'
            f"{_e(_mode_title(m))}: {minutes:,.0f} SLO-breach min, moved out "
            f"{_e(_si(out))}, in {_e(_si(into))}{_e(did)}</li>"
        )

    # utilisation
    down = {m: _bucket_max(*s, MAX_POINTS) for m, s in util.items()}
    peak = max([float(np.nanmax(y)) for _, y in down.values() if np.isfinite(y).any()] + [1.0])
    ymax = min(2.0, _nice_ceiling(peak))
    chart = _Chart(duration, ymax, c.start_utc_hour)
    parts = [chart.events(events), chart.frame(_ticks(ymax), lambda v: f"{v:g}")]
    entry = learned.get(code)
    maximum = _float(entry.get("value")) if entry else None
    if maximum is not None and 0 < maximum < ymax:
        parts.append(chart.hline(maximum, "learned", f"learned max {maximum:.2f}"))
    for m in modes:
        if m in down:
            parts.append(chart.lines(*down[m], _mode_colour(m, modes), m))
    for k, m in enumerate(modes):
        parts.append(chart.marks(acted[m][:MAX_MARKS], _mode_colour(m, modes), m, k))
    clipped = " (clipped at the top)" if peak > ymax else ""
    util_svg = chart.svg(f"utilisation of {code}", "".join(parts))

    # p95 latency
    down = {m: _bucket_max(*s, MAX_POINTS) for m, s in p95.items()}
    finite = [y[np.isfinite(y)] for _, y in down.values()]
    peak_ms = max([float(v.max()) for v in finite if v.size] + [2 * SLO_MS])
    ymax_ms = min(10 * SLO_MS, _nice_ceiling(peak_ms))
    chart = _Chart(duration, ymax_ms, c.start_utc_hour)
    parts = [chart.events(events), chart.frame(_ticks(ymax_ms), lambda v: f"{v:g}")]
    parts.append(chart.hline(SLO_MS, "slo", f"SLO {SLO_MS:g} ms"))
    for m in modes:
        if m in down:
            parts.append(chart.lines(*down[m], _mode_colour(m, modes), m))
    clipped_ms = f" (clipped at {ymax_ms:g} ms)" if peak_ms > ymax_ms else ""
    p95_svg = chart.svg(f"p95 latency of {code}", "".join(parts))

    return (
        f'<article class="card site" data-site="{_e(code)}"><h3>{_e(code)} '
        f'<span class="muted">{_e(city)}</span></h3><ul class="facts small">{"".join(facts)}'
        f'</ul><div class="pair"><figure><figcaption>utilisation{_e(clipped)}</figcaption>'
        f"{util_svg}</figure><figure><figcaption>p95 latency, ms{_e(clipped_ms)}"
        f"</figcaption>{p95_svg}</figure></div></article>"
    )


def _ticks(ymax: float) -> list[float]:
    step = _nice_step(ymax, 4)
    return [i * step for i in range(int(ymax / step + 1e-9) + 1)]


# ---------------------------------------------------------------------------------------
# servers inside sites

SERVER_COLOURS = {"failed": "#e7298a", "drained": "#666666"}  # the events' lines
SERVER_WORDS = {
    "fail": "failed",
    "remove": "taken out of the table",
    "recover": "back up",
    "drain": "drained",
    "undrain": "back from draining",
}


def _servers_card(c: Comparison, modes: Sequence[str]) -> str:
    head = '<section class="card" id="servers"><h2>Servers inside sites</h2>'
    runs = {m: c.runs[m].servers for m in modes if c.runs[m].servers}
    sections = srv.affected(runs)
    if not sections:
        return (
            f'{head}<p class="muted" id="servers-none">No server failed or was drained in '
            "this scenario: no site's load balancer table changed.</p></section>"
        )
    duration = _duration(c)
    events = _events(c)
    legend = (
        "".join(
            f'<span class="swatch" style="border-color:{colour}"></span>servers {what} '
            for what, colour in SERVER_COLOURS.items()
        )
        + "".join(
            f'<span class="swatch" style="border-color:{_mode_colour(m, modes)}"></span>'
            f"{_e(_mode_title(m))} "
            for m in modes
        )
        + '<span class="evbox"></span>event windows. A dashed line in a run\'s colour: '
        "the servers its controller took out of the table."
    )
    articles = [_server_section(c, modes, runs, sec, duration, events) for sec in sections]
    return (
        f"{head}"
        '<p class="small">Inside a site, a load balancer spreads each section\'s requests '
        "over its servers by a table of buckets (the one the XDP balancer reads). A failed "
        "server's buckets fail until the table is changed: the Traffic Manager takes failed "
        "servers out at its first decision that sees them (Unimog); the other controllers "
        "leave them in. A drained server's buckets move to the others and it stays their "
        "second hop, so its connections go on. <i>Connections broken</i> is the share of "
        "the section's connections each change broke, summed over the changes; "
        "<i>without the second hop</i> is what the same changes would have broken with a "
        "balancer that forgets a bucket's old server.</p>"
        f'<p class="legend small">{legend}</p>{"".join(articles)}</section>'
    )


def _share1(share: float) -> str:
    """A share as a percentage to a tenth: 37.5 %, 0.0 %."""
    return f"{100 * share:.1f} %"


def _step_points(chart: _Chart, steps: Sequence[srv.Step], attr: str, end: float) -> str:
    pts: list[str] = []
    prev: int | None = None
    for st in steps:
        v = getattr(st, attr)
        if prev is not None:
            pts.append(f"{chart.x(st.time_s):.1f},{chart.y(prev):.1f}")
        pts.append(f"{chart.x(st.time_s):.1f},{chart.y(v):.1f}")
        prev = v
    if prev is not None:
        pts.append(f"{chart.x(end):.1f},{chart.y(prev):.1f}")
    return " ".join(pts)


def _server_section(
    c: Comparison,
    modes: Sequence[str],
    runs: Mapping[str, Mapping[str, Any]],
    sec: srv.Section,
    duration: float,
    events: Sequence[tuple[float, float | None, str, str]],
) -> str:
    # servers failed, drained (the scenario's, the same in every run) and taken out of
    # the table (the controller's): step lines
    steps = {m: srv.steps(r, sec.name) for m, r in runs.items()}
    first = next(iter(steps.values()))
    most = [max(st.failed, st.drained, st.removed) for ss in steps.values() for st in ss]
    ymax = float(max(sec.servers, *most, 1))  # up to the section's servers
    chart = _Chart(duration, ymax, c.start_utc_hour)
    ticks = [v for v in _ticks(ymax) if v == int(v)]
    parts = [chart.events(events), chart.frame(ticks, lambda v: f"{v:g}")]
    for what, colour in SERVER_COLOURS.items():
        parts.append(
            f'<polyline class="series" data-servers="{what}" stroke="{colour}" '
            f'points="{_step_points(chart, first, what, duration)}"/>'
        )
    for m, ss in steps.items():
        if any(st.removed for st in ss):
            parts.append(
                f'<polyline class="series dashed" data-servers="removed" data-mode="{_e(m)}" '
                f'stroke="{_mode_colour(m, modes)}" '
                f'points="{_step_points(chart, ss, "removed", duration)}"/>'
            )
    count_svg = chart.svg(f"servers failed and drained in {sec.name}", "".join(parts))

    # the most loaded server's utilisation, per run
    hot = {m: h for m, r in runs.items() if (h := srv.hottest(r, sec.name)) is not None}
    down = {m: _bucket_max(t, y, MAX_POINTS) for m, (t, y) in hot.items()}
    peak = max([float(np.nanmax(y)) for _, y in down.values() if y.size] + [1.0])
    umax = min(2.0, _nice_ceiling(peak))
    chart = _Chart(duration, umax, c.start_utc_hour)
    parts = [chart.events(events), chart.frame(_ticks(umax), lambda v: f"{v:g}")]
    parts.append(chart.hline(1.0, "slo", "100 %"))
    for m in modes:
        if m in down:
            parts.append(chart.lines(*down[m], _mode_colour(m, modes), m))
    clipped = " (clipped at the top)" if peak > umax else ""
    util_svg = chart.svg(f"most loaded server of {sec.name}", "".join(parts))

    # connections broken, by failures and by drains
    rows = []
    for m in modes:
        if m not in runs:
            continue
        b = srv.broken(runs[m], sec.name)
        cells = "".join(
            f'<td data-value="{v!r}">{_e(_share1(v))}</td>'
            for v in (b.failure, b.failure_without_second_hop, b.drain, b.drain_without_second_hop)
        )
        rows.append(
            f'<tr data-mode="{_e(m)}"><td>{_swatch(m, modes)}{_e(_mode_title(m))}</td>{cells}</tr>'
        )
    totals = (
        f'<table class="small broken" data-section="{_e(sec.name)}"><thead><tr><th>run</th>'
        "<th>broken by failures</th><th>… without the second hop</th>"
        "<th>broken by drains</th><th>… without the second hop</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )

    # every change of the table
    rows = []
    for m in modes:
        for ch in srv.changes_of(runs.get(m, {}), sec.name):
            t = _float(ch.get("time_s")) or 0.0
            what = str(ch.get("what", ""))
            n = int(ch.get("servers", 0) or 0)
            cells = "".join(
                f'<td data-value="{v!r}">{_e(_share1(v))}</td>'
                for v in (
                    _float(ch.get("moved")) or 0.0,
                    _float(ch.get("broken")) or 0.0,
                    _float(ch.get("broken_without_second_hop")) or 0.0,
                    _float(ch.get("capacity")) or 0.0,
                )
            )
            rows.append(
                f'<tr data-mode="{_e(m)}" data-what="{_e(what)}"><td>{_swatch(m, modes)}'
                f"{_e(_mode_title(m))}</td><td>{_utc(t, c.start_utc_hour)}</td>"
                f"<td>{n} {_e(SERVER_WORDS.get(what, what))}</td>{cells}</tr>"
            )
    changes = (
        f'<table class="small changes" data-section="{_e(sec.name)}"><thead><tr><th>run</th>'
        "<th>UTC</th><th>servers</th><th>buckets moved</th><th>connections broken</th>"
        "<th>… without the second hop</th><th>servers serving</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    site = f" · site {sec.site}" if sec.site else ""
    size = f"{sec.servers} servers of {_si(sec.cpu_per_server)} CPU ms/s" if sec.servers else ""
    return (
        f'<article data-section="{_e(sec.name)}"><h3>{_e(sec.name)} '
        f'<span class="muted">{_e(site)} · {_e(size)}</span></h3>'
        '<div class="pair"><figure><figcaption>servers failed, drained and taken out of '
        f"the table</figcaption>{count_svg}</figure><figure><figcaption>utilisation of the "
        f"most loaded server{_e(clipped)}</figcaption>{util_svg}</figure></div>"
        f"{totals}{changes}</article>"
    )


# ---------------------------------------------------------------------------------------
# learned thresholds


def _learned_entries(c: Comparison, modes: Sequence[str]) -> list[Mapping[str, Any]]:
    """The comparison's learned thresholds, else those of a run (the manager's first)."""
    sources: list[object] = [c.learned]
    sources += [getattr(c.runs[m], "learned", None) for m in sorted(modes, key=_manager_first)]
    for source in sources:
        if isinstance(source, Sequence) and not isinstance(source, str):
            entries = [e for e in source if isinstance(e, Mapping)]
            if entries:
                return entries
    return []


def _manager_first(mode: str) -> int:
    return 0 if mode == "manager" else 1


def _learned_section(c: Comparison, modes: Sequence[str]) -> str:
    entries = _learned_entries(c, modes)
    if not entries:
        return (
            '<section id="learned"><h2>Learned maximum thresholds</h2>'
            '<p class="muted">None were learned in this scenario.</p></section>'
        )
    cities = {
        str(s): (str(c.cities[i]) if i < len(c.cities) else "") for i, s in enumerate(c.sites)
    }
    rows = []
    for e in entries:
        site = str(e.get("site", "?"))
        value = _float(e.get("value"))
        r2 = _float(e.get("r2"))
        rows.append(
            f'<tr data-site="{_e(site)}"><td>{_e(site)} <span class="muted">'
            f"{_e(cities.get(site, ''))}</span></td><td>{_e(e.get('method', '') or '—')}</td>"
            f'<td class="num">{"—" if value is None else f"{value:.3f}"}</td>'
            f'<td class="num">{"—" if r2 is None else f"{r2:.3f}"}</td>'
            f"<td>{_e(e.get('reason', '') or '')}</td></tr>"
        )
    # curves for up to SCATTER_SITES sites whose points came along, eventful sites first
    rank = {str(c.sites[j]): r for r, j in enumerate(_interesting_sites(c, modes, len(c.sites)))}
    with_points = [e for e in entries if _scatter_data(e) is not None]
    with_points.sort(key=lambda e: rank.get(str(e.get("site")), len(rank)))
    figures = "".join(_scatter(e) for e in with_points[:SCATTER_SITES])
    figures_html = f'<div class="scatter-grid">{figures}</div>' if figures else ""
    return (
        '<section id="learned"><h2>Learned maximum thresholds</h2>'
        '<p class="small muted">Where p95 latency, fitted against CPU utilisation, meets the '
        "SLO: the Traffic Manager's maximum for the site.</p>"
        f"{figures_html}"
        '<div class="scroll"><table id="learned-table"><thead><tr><th>site</th><th>method</th>'
        '<th class="num">learned maximum</th><th class="num">R²</th><th>reason</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _scatter_data(e: Mapping[str, Any]) -> tuple[Array, Array] | None:
    u, y = _array(e.get("points_u")), _array(e.get("points_p95"))
    if u is None or y is None or u.size != y.size:
        return None
    keep = np.isfinite(u) & np.isfinite(y)
    if not keep.any():
        return None
    return u[keep], y[keep]


def _scatter(e: Mapping[str, Any]) -> str:
    data = _scatter_data(e)
    if data is None:
        return ""
    u, y = data
    lo_u, hi_u = float(u.min()), float(u.max())
    if u.size > MAX_SCATTER:  # an even sample, the same every time
        idx = np.linspace(0, u.size - 1, MAX_SCATTER).round().astype(np.int64)
        u, y = u[idx], y[idx]
    slo = _float(e.get("slo_ms")) or SLO_MS
    value = _float(e.get("value"))
    w, h, left, bottom, top, right = 300.0, 220.0, 40.0, 28.0, 10.0, 10.0
    pw, ph = w - left - right, h - top - bottom
    xmax = max(1.0, _nice_ceiling(float(u.max())))
    ymax = min(10 * slo, _nice_ceiling(max(2 * slo, float(np.percentile(y, 99)))))

    def px(v: float) -> float:
        return left + pw * min(max(v / xmax, 0.0), 1.0)

    def py(v: float) -> float:
        return top + ph * (1.0 - min(max(v / ymax, 0.0), 1.0))

    parts = [f'<rect class="plot" x="{left}" y="{top}" width="{pw}" height="{ph}"/>']
    for v in _ticks(ymax):
        parts.append(
            f'<line class="grid" x1="{left}" y1="{py(v):.1f}" x2="{w - right}" y2="{py(v):.1f}"/>'
            f'<text class="ytick" x="{left - 4}" y="{py(v) + 3:.1f}">{v:g}</text>'
        )
    for v in _ticks(xmax):
        parts.append(f'<text class="xtick" x="{px(v):.1f}" y="{h - 14}">{v:g}</text>')
    parts.append(f'<text class="xtick" x="{left + pw / 2:.1f}" y="{h - 2}">utilisation</text>')
    dots = "".join(
        f"M{px(a):.1f},{py(b):.1f}h0.1" for a, b in zip(u.tolist(), y.tolist(), strict=True)
    )
    parts.append(f'<path class="points" d="{dots}"/>')
    cu, cy = _array(e.get("curve_u")), _array(e.get("curve_p95"))
    if cu is not None and cy is not None and cu.size == cy.size:
        # the fit only where it has data: not beyond the lowest and highest utilisation
        keep = np.isfinite(cu) & np.isfinite(cy) & (cu >= lo_u) & (cu <= hi_u)
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(cu[keep], cy[keep], strict=True))
        if pts:
            parts.append(f'<polyline class="curve" points="{pts}"/>')
    parts.append(
        f'<line class="slo" x1="{left}" y1="{py(slo):.1f}" x2="{w - right}" y2="{py(slo):.1f}"/>'
        f'<text class="hlabel slo" x="{w - right - 3}" y="{py(slo) - 3:.1f}">SLO {slo:g} ms</text>'
    )
    if value is not None:
        parts.append(
            f'<line class="learned" x1="{px(value):.1f}" y1="{top}" x2="{px(value):.1f}" '
            f'y2="{top + ph}"/><text class="hlabel learned" x="{px(value) - 3:.1f}" '
            f'y="{top + 10}">max {value:.2f}</text>'
        )
    site = str(e.get("site", "?"))
    method = str(e.get("method", "") or "")
    return (
        f'<figure class="scatter" data-site="{_e(site)}"><figcaption>{_e(site)}: p95 ms '
        f"against utilisation{', ' + _e(method) if method else ''}</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w:.0f} {h:.0f}" '
        f'role="img" aria-label="learned threshold of {_e(site)}">{"".join(parts)}</svg></figure>'
    )


# ---------------------------------------------------------------------------------------
# the words, the network over the day, what the controllers did, and the CSV files

KIND_WORDS = {
    "forward": "forward (Plurimog)",
    "revert": "take back",
    "handback": "hand back",
    "shift": "shift (Duomog)",
    "withdraw": "withdraw prefix",
    "announce": "announce prefix",
    "hold": "could not",
}


def _glossary() -> str:
    return (
        '<section class="card" id="glossary"><h2>How the controllers move traffic</h2><dl>'
        "<dt>Plurimog</dt><dd>forwarding between sites: a site above its maximum "
        "utilisation sends a share of one plan's requests to a nearby site with room, "
        "which serves them. Users keep their route; their requests pay the round trip "
        "between the two sites. Only the Traffic Manager forwards.</dd>"
        "<dt>Duomog</dt><dd>shifting inside a site: a section (a group of servers) above "
        "its maximum hands a share of its traffic to its sister sections, when the site as "
        "a whole has room. Nothing leaves the site.</dd>"
        "<dt>withdrawal</dt><dd>the sledgehammer: a site stops announcing a prefix, and BGP "
        "takes that prefix's users to wherever their routes lead next, with or without "
        "room there.</dd>"
        "<dt>stranded capacity</dt><dd>healthy CPU below a site's maximum left idle while "
        "requests failed elsewhere, plus the capacity below target of sites whose prefixes "
        "were withdrawn: room the network had and did not use (core-hours).</dd>"
        "</dl></section>"
    )


_NETWORK_CHARTS = (
    ("failed_rps", "failed requests/s", "over capacity or no route, per minute"),
    ("sites_forwarding", "sites forwarding", "sites sending requests to other sites"),
    ("withdrawn", "prefixes withdrawn", "announcements withdrawn by the controller"),
)


def _network_card(c: Comparison, modes: Sequence[str]) -> str:
    if not modes:
        return ""
    duration = _duration(c)
    events = _events(c)
    data = {m: network_series(c.runs[m]) for m in modes}
    figures = []
    for key, title, hint in _NETWORK_CHARTS:
        down: dict[str, tuple[Array, Array]] = {}
        for m in modes:
            t = np.asarray(data[m]["time_s"], dtype=np.float64)
            y = np.asarray(data[m][key], dtype=np.float64)
            if t.size and t.size == y.size:
                down[m] = _bucket_max(t, y, MAX_POINTS)
        peak = max([float(np.nanmax(y)) for _, y in down.values() if y.size] + [0.0])
        ymax = max(1.0, _nice_ceiling(peak)) if peak > 0 else 1.0
        ticks = _ticks(ymax)
        if key != "failed_rps":  # counts: whole ticks
            ymax = max(ymax, 2.0)
            ticks = [v for v in _ticks(ymax) if v == int(v)]
        chart = _Chart(duration, ymax, c.start_utc_hour)
        parts = [chart.events(events), chart.frame(ticks, _si)]
        for m in modes:
            if m in down:
                parts.append(chart.lines(*down[m], _mode_colour(m, modes), m))
        figures.append(
            f'<figure data-series="{key}"><figcaption><b>{_e(title)}</b> · {_e(hint)}'
            f"</figcaption>{chart.svg(title, ''.join(parts))}</figure>"
        )
    legend = "".join(f"{_swatch(m, modes)}{_e(_mode_title(m))} " for m in modes)
    return (
        '<section class="card" id="network"><h2>The whole network over the day</h2>'
        f'<p class="legend small">{legend}<span class="evbox"></span>event windows. '
        "Each point is the highest of its bucket.</p>"
        f'<div class="triple">{"".join(figures)}</div>'
        '<p class="small downloads">Download: '
        f"{_download('csv-series', c, 'series', 'these series (CSV)')} "
        f"{_download('csv-totals', c, 'totals', 'the comparison table (CSV)')}</p></section>"
    )


def _download(block: str, c: Comparison, what: str, label: str) -> str:
    slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in str(c.scenario))
    return (
        f'<button type="button" class="csv" data-csv="{block}" '
        f'data-file="anyedge-{_e(slug)}-{what}.csv">{_e(label)}</button>'
    )


def _distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (lon, lat) places, km."""
    lon1, lat1, lon2, lat2 = (math.radians(v) for v in (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))


def _places(c: Comparison) -> dict[str, tuple[float, float]]:
    return {p[0]: (p[2], p[3]) for p in _site_positions(c) if p is not None}


def _timeline_card(c: Comparison, modes: Sequence[str]) -> str:
    acting = [m for m in modes if c.runs[m].actions]
    if not acting:
        return (
            '<section class="card" id="timeline"><h2>What the controllers did</h2>'
            '<p class="muted">No controller acted in this scenario.</p></section>'
        )
    where = _places(c)
    start_h = c.start_utc_hour
    rows: list[tuple[float, int, str]] = []
    sites: set[str] = set()
    notes = []
    for k, m in enumerate(acting):
        actions = c.runs[m].actions
        if len(actions) > MAX_ACTIONS:
            notes.append(f"the first {MAX_ACTIONS:,} of {len(actions):,} for {_mode_title(m)}")
        for a in actions[:MAX_ACTIONS]:
            at = _float(a.get("time_s"))
            site, to = a.get("site"), a.get("to")
            involved = [str(x) for x in (site, to) if x]
            sites.update(involved)
            km = ""
            if site in where and to in where:
                km = f" ({_distance_km(where[str(site)], where[str(to)]):,.0f} km)"
            share = _float(a.get("share")) or 0.0
            cpu = _float(a.get("cpu")) or 0.0
            what = a.get("plan") or a.get("section") or a.get("prefix") or ""
            kind = str(a.get("kind", ""))
            rows.append(
                (
                    at if at is not None else math.inf,
                    k,
                    f'<tr data-mode="{_e(m)}" data-sites="{_e(" ".join(involved))}" '
                    f'data-kind="{_e(kind)}"><td class="t">'
                    f"{'—' if at is None else _utc(at, start_h)}</td><td>{_swatch(m, modes)}</td>"
                    f"<td>{_e(site or 'network')}</td>"
                    f"<td>{_e(KIND_WORDS.get(kind, kind))}</td><td>{_e(what)}</td>"
                    f"<td>{_e(str(to or '') + km)}</td>"
                    f'<td class="num">{_percent(share)}</td>'
                    f'<td class="num">{_si(cpu / 1000.0) if cpu > 0 else ""}</td>'
                    f'<td class="reason">{_e(a.get("reason", ""))}</td></tr>',
                )
            )
    rows.sort(key=lambda r: (r[0], r[1]))  # in time, the runs side by side (stable)
    mode_options = "".join(f'<option value="{_e(m)}">{_e(_mode_title(m))}</option>' for m in acting)
    site_options = "".join(f'<option value="{_e(x)}">{_e(x)}</option>' for x in sorted(sites))
    counts = ", ".join(
        f"{_mode_title(m)} {sum(a.get('kind') != 'hold' for a in c.runs[m].actions):,}"
        for m in acting
    )
    capped = f" The table shows {'; '.join(notes)}; the CSV has all." if notes else ""
    return (
        '<section class="card" id="timeline"><h2>What the controllers did</h2>'
        f'<p class="small muted">Every change each controller made ({_e(counts)}), in '
        "order, with the reason it journaled; a <q>could not</q> row is something it "
        "wanted to do and did not, shown where it starts (not again each minute while it "
        f"lasts). CPU is in cores moved; share is of the plan or section.{_e(capped)}</p>"
        '<div class="filters small"><label>controller <select id="timeline-mode">'
        f'<option value="">all</option>{mode_options}</select></label> '
        '<label>site <select id="timeline-site"><option value="">all</option>'
        f"{site_options}</select></label> "
        '<label><input type="checkbox" id="timeline-holds" checked> show <q>could not</q>'
        "</label> "
        f"{_download('csv-actions', c, 'actions', 'every action (CSV)')}</div>"
        '<div class="scroll"><table id="timeline-table" class="small"><thead><tr>'
        "<th>time</th><th></th><th>site</th><th>action</th><th>plan / section / prefix</th>"
        '<th>to</th><th class="num">share</th><th class="num">CPU, cores</th><th>reason</th>'
        f"</tr></thead><tbody>{''.join(r[2] for r in rows)}</tbody></table></div></section>"
    )


def _percent(share: float) -> str:
    if share <= 0:
        return ""
    return f"{100 * share:.0f} %" if share >= 0.01 else f"{100 * share:.1g} %"


def _csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


def series_csv(c: Comparison) -> str:
    """The network-wide series of every run, one row per run and sample."""
    rows = []
    for m in _modes(c):
        data = network_series(c.runs[m])
        for i, t in enumerate(data["time_s"]):
            rows.append(
                [m, t, _utc(t, c.start_utc_hour)] + [data[k][i] for k in NETWORK_FIELDS[1:]]
            )
    return _csv(["controller", "time_s", "time_utc", *NETWORK_FIELDS[1:]], rows)


def actions_csv(c: Comparison) -> str:
    """Every action of every run (ACTION_FIELDS), one row each, in order."""
    rows = []
    for m in _modes(c):
        for a in c.runs[m].actions:
            t = _float(a.get("time_s"))
            when = "" if t is None else _utc(t, c.start_utc_hour)
            rows.append([m, a.get("time_s"), when] + [a.get(k) for k in ACTION_FIELDS[1:]])
    return _csv(["controller", "time_s", "time_utc", *ACTION_FIELDS[1:]], rows)


def totals_csv(c: Comparison) -> str:
    """The comparison table: one row per run, the totals of ``anyedge simulate --json``."""
    modes = _modes(c)
    data = {m: c.runs[m].totals.as_dict() for m in modes}
    keys = [k for k in (data[modes[0]] if modes else {}) if not isinstance(data[modes[0]][k], dict)]
    return _csv(["controller", *keys], ([m, *(data[m][k] for k in keys)] for m in modes))


def _csv_blocks(c: Comparison) -> str:
    """The CSV files, as inert text in the page; the script turns one into a download."""
    out = []
    for block, text in (
        ("csv-series", series_csv(c)),
        ("csv-actions", actions_csv(c)),
        ("csv-totals", totals_csv(c)),
    ):
        safe = text.replace("</", "<\\/")  # nothing in it may close the element
        out.append(f'<script type="text/csv" id="{block}">{safe}</script>')
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# style and script

_CSS = """
:root { --ink: #1d2330; --muted: #5f6b7a; --line: #d9dee5; --card: #fff; --bg: #f4f6f9; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1380px; margin: 0 auto; padding: 16px 20px 32px; }
h1 { font-size: 22px; margin: 4px 0 2px; }
h2 { font-size: 16px; margin: 12px 0 6px; }
h3 { font-size: 15px; margin: 0 0 4px; }
.muted { color: var(--muted); font-weight: normal; }
.small { font-size: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; }
ol.events { margin: 0; padding: 0; list-style: none; display: flex; flex-wrap: wrap;
  gap: 4px 18px; }
ol.events li { display: flex; gap: 6px; align-items: baseline; }
ol.events time { font-variant-numeric: tabular-nums; font-weight: 600; }
.evno { display: inline-block; min-width: 18px; text-align: center; border-radius: 9px;
  background: #f6d5a8; font-size: 12px; }
.kind { color: var(--muted); font-size: 12px; text-transform: uppercase; }
.overview { display: grid; grid-template-columns: minmax(500px, 1fr) minmax(560px, 1.3fr);
  gap: 14px; margin-top: 12px; align-items: start; }
@media (max-width: 1100px) { .overview { grid-template-columns: 1fr; } }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: right;
  font-variant-numeric: tabular-nums; vertical-align: top; }
th[scope=row], thead th:first-child { text-align: left; }
th[scope=row] { white-space: nowrap; }
thead th { font-size: 12px; vertical-align: bottom; }
.code { display: block; color: var(--muted); font-weight: normal; font-family: monospace; }
.hint { display: block; color: var(--muted); font-weight: normal; font-size: 11px; }
td.best { background: #e1e9f5; font-weight: 700; }
tr.group th { text-align: left; font-size: 12px; color: var(--muted); padding-top: 10px; }
td.na { color: var(--muted); }
#comparison-card { overflow-x: auto; }
#attribution { margin-top: 14px; }
p.roles { margin: 0 0 2px; color: #a8671f; }
.scroll-x { overflow-x: auto; }
#attribution-table th[scope=row] { white-space: normal; min-width: 260px; }
#attribution-table th[scope=colgroup] { text-align: center; }
#attribution-table tr.rest th, #attribution-table tr.reference th { font-weight: normal; }
#attribution-table tr.reference td { color: var(--muted); }
#map { width: 100%; height: auto; display: block; border-radius: 4px; }
#map .ocean { fill: #eaf1f8; }
#map .land { fill: #d9dcd3; stroke: #c5c9bd; stroke-width: 0.6; }
#map .graticule line { stroke: #c9d6e3; stroke-width: 0.5; }
#map .graticule line.axis { stroke: #a9bccf; stroke-width: 0.8; }
#map .graticule text { fill: #7d8fa3; font-size: 9px; }
#map .flow path { fill: none; stroke: #2b5ea7; stroke-opacity: 0.6; stroke-linecap: round; }
#map .flow path.arrow { fill: #2b5ea7; stroke: none; fill-opacity: 0.85; }
#map circle.site { stroke: #fff; stroke-width: 1; }
#map .labels text.end { text-anchor: end; }
#map .labels text { font-size: 10px; fill: #26313f; paint-order: stroke; stroke: #fff;
  stroke-width: 2.5px; }
#map-modes { display: flex; gap: 6px; margin-bottom: 6px; flex-wrap: wrap; }
#map-modes button { font: inherit; font-size: 12px; border: 1px solid var(--line);
  background: #fff; border-radius: 12px; padding: 2px 10px; cursor: pointer; }
#map-modes button[aria-pressed=true] { background: #1d2330; color: #fff; }
.legend .dot { display: inline-block; width: 9px; height: 9px; border-radius: 50%;
  margin: 0 3px 0 8px; vertical-align: baseline; }
.swatch { display: inline-block; width: 16px; height: 0; border-top: 3px solid;
  margin: 0 4px 3px 8px; vertical-align: middle; }
.evbox { display: inline-block; width: 14px; height: 10px; background: #f6d5a8;
  margin: 0 4px 0 8px; }
table.moves { margin-top: 4px; }
table.moves caption { text-align: left; color: var(--muted); }
table.moves td:first-child { text-align: left; }
#sites { margin-top: 16px; }
.site-grid { display: grid; grid-template-columns: 1fr; gap: 12px; }
ul.facts { margin: 0 0 4px; padding: 0; list-style: none; display: flex; flex-wrap: wrap;
  gap: 0 14px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }
@media (max-width: 900px) { .pair { grid-template-columns: 1fr; } }
figure { margin: 0; }
figcaption { font-size: 12px; color: var(--muted); }
svg.chart { width: 100%; height: auto; display: block; }
.chart .plot { fill: none; stroke: #b9c2cc; stroke-width: 0.8; }
.chart .grid { stroke: #eceff3; stroke-width: 0.8; }
.chart .tick { stroke: #9aa5b1; }
.chart text { font-size: 10px; fill: #5f6b7a; }
.chart .ytick { text-anchor: end; }
.chart .xtick { text-anchor: middle; }
.chart .event { fill: #f6d5a8; fill-opacity: 0.5; }
.chart .evlabel { fill: #a8671f; font-size: 9px; }
.chart .series { fill: none; stroke-width: 1.4; stroke-linejoin: round; }
.chart .series.dashed { stroke-dasharray: 5 3; }
#servers { margin-top: 14px; }
#servers article { margin-top: 10px; }
#servers table { margin-top: 6px; }
#servers table td:first-child { text-align: left; }
.chart .mark { stroke-width: 2.2; fill: none; }
.chart line.slo { stroke: #c0392b; stroke-dasharray: 5 3; stroke-width: 1; }
.chart line.learned { stroke: #6b7785; stroke-dasharray: 2 3; stroke-width: 1; }
.chart .hlabel { text-anchor: end; font-size: 9px; }
.chart .hlabel.slo { fill: #c0392b; }
.chart .points { stroke: #5b7fb0; stroke-opacity: 0.55; stroke-width: 3.5;
  stroke-linecap: round; fill: none; }
.chart .curve { fill: none; stroke: #1d2330; stroke-width: 1.6; }
#learned { margin-top: 16px; }
.scatter-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr));
  gap: 10px; margin-bottom: 10px; }
.scatter { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 6px; }
.scroll { max-height: 480px; overflow: auto; background: #fff; border: 1px solid var(--line);
  border-radius: 8px; }
#learned-table td, #learned-table th { text-align: left; }
#learned-table .num { text-align: right; }
footer { margin-top: 20px; font-size: 12px; }
#glossary { margin-top: 12px; }
#glossary dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
#glossary dt { font-weight: 700; }
#glossary dd { margin: 0; }
#network, #timeline { margin-top: 14px; }
.triple { display: grid; grid-template-columns: repeat(3, 1fr); gap: 10px; }
@media (max-width: 1000px) { .triple { grid-template-columns: 1fr; } }
.filters { display: flex; gap: 6px 14px; flex-wrap: wrap; align-items: center; margin: 4px 0 6px; }
select, button.csv { font: inherit; font-size: 12px; }
button.csv { border: 1px solid var(--line); background: #fff; border-radius: 12px;
  padding: 1px 10px; cursor: pointer; }
#timeline-table td, #timeline-table th { text-align: left; white-space: nowrap; }
#timeline-table .num { text-align: right; }
#timeline-table td.reason { white-space: normal; min-width: 320px; color: #33404f; }
#timeline-table thead th { position: sticky; top: 0; background: #fff; }
#timeline-table .swatch { margin: 0 2px; }
#map-window-label { margin-left: auto; }
"""

_JS = """
(function () {
  "use strict";
  function all(selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  }
  function si(x) {
    var r = Number(x.toPrecision(3)), units = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(r) >= units[i][0]) {
        return Number((r / units[i][0]).toPrecision(3)) + units[i][1];
      }
    }
    return String(r);
  }

  // downloads: a CSV block of the page, as a file
  all("button.csv").forEach(function (button) {
    button.addEventListener("click", function () {
      var block = document.getElementById(button.getAttribute("data-csv"));
      if (!block) { return; }
      var text = block.textContent.replace(/<\\\\\\//g, "</");
      var url = URL.createObjectURL(new Blob([text], {type: "text/csv"}));
      var link = document.createElement("a");
      link.href = url;
      link.download = button.getAttribute("data-file") || "anyedge.csv";
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 2000);
    });
  });

  // the action timeline: by controller, by site, with or without what could not be done
  var tMode = document.getElementById("timeline-mode");
  var tSite = document.getElementById("timeline-site");
  var tHolds = document.getElementById("timeline-holds");
  function filter() {
    var mode = tMode.value, site = tSite.value, holds = tHolds.checked;
    all("#timeline-table tbody tr").forEach(function (row) {
      var sites = " " + row.getAttribute("data-sites") + " ";
      var on = (!mode || row.getAttribute("data-mode") === mode) &&
        (!site || sites.indexOf(" " + site + " ") >= 0) &&
        (holds || row.getAttribute("data-kind") !== "hold");
      row.style.display = on ? "" : "none";
    });
  }
  if (tMode && tSite && tHolds) {
    [tMode, tSite, tHolds].forEach(function (el) { el.addEventListener("change", filter); });
  }

  // the map: which run, which hours; the largest moves follow both
  var map = document.getElementById("map");
  if (!map) { return; }
  var buttons = all("#map-modes button");
  var hours = document.getElementById("map-window");
  var moves = document.getElementById("moves");
  function volume(flow, lo, hi) {
    if (lo < 0) { return Number(flow.getAttribute("data-total")) || 0; }
    var v = flow.getAttribute("data-v");
    if (!v) { return 0; }
    var parts = v.split(","), sum = 0;  // per mille of the line's total, by hour
    for (var i = lo; i < hi && i < parts.length; i++) { sum += Number(parts[i]) || 0; }
    return sum * (Number(flow.getAttribute("data-total")) || 0) / 1000;
  }
  // the sites for the hours chosen: sized by the traffic they moved out and in (of
  // the lines drawn) and coloured by their worst hour; the whole run: as drawn
  var colours = {};
  (map.getAttribute("data-colours") || "").split(",").forEach(function (kv) {
    colours[kv.charAt(0)] = kv.slice(1);
  });
  function sites(lo, hi, mode, flows, values) {
    var circles = all("circle.site", map);
    if (lo < 0) {
      circles.forEach(function (s) {
        s.setAttribute("fill", s.getAttribute("data-fill-" + mode) || s.getAttribute("fill"));
        s.setAttribute("r", s.getAttribute("data-r-" + mode) || s.getAttribute("r"));
      });
      return;
    }
    var moved = {}, biggest = 0;
    flows.forEach(function (flow, i) {
      var m = flow.parentNode.getAttribute("data-mode");
      var a = m + " " + flow.getAttribute("data-from");
      var b = m + " " + flow.getAttribute("data-to");
      moved[a] = (moved[a] || 0) + values[i];
      moved[b] = (moved[b] || 0) + values[i];
      biggest = Math.max(biggest, moved[a], moved[b]);
    });
    var r0 = Number(map.getAttribute("data-r0")), growth = Number(map.getAttribute("data-growth"));
    circles.forEach(function (s) {
      var v = moved[mode + " " + s.getAttribute("data-site")] || 0;
      var r = biggest > 0 && v > 0 ? r0 + growth * Math.sqrt(v / biggest) : r0;
      s.setAttribute("r", r.toFixed(1));
      var h = (s.getAttribute("data-h-" + mode) || "").slice(lo, hi);
      var worst = h.indexOf("r") >= 0 ? "r" : h.indexOf("y") >= 0 ? "y" :
        h.indexOf("g") >= 0 ? "g" : "u";
      if (h) { s.setAttribute("fill", colours[worst]); }
    });
  }
  function redraw() {
    var lo = -1, hi = -1;
    if (hours && hours.value) {
      var range = hours.value.split(",");
      lo = Number(range[0]);
      hi = Number(range[1]);
    }
    var mode = map.getAttribute("data-showing");
    var flows = all("g.flow", map), values = [], vmax = 0;
    flows.forEach(function (flow) {
      var v = volume(flow, lo, hi);
      values.push(v);
      vmax = Math.max(vmax, v);
    });
    sites(lo, hi, mode, flows, values);
    var mine = [], total = 0;
    flows.forEach(function (flow, i) {
      var v = values[i];
      flow.style.display = v > 0 ? "" : "none";
      if (v > 0) {
        var width = 0.8 + 5 * Math.sqrt(v / vmax);
        flow.querySelector("path").setAttribute("stroke-width", width.toFixed(2));
        if (flow.parentNode.getAttribute("data-mode") === mode) {
          mine.push([v, flow]);
          total += v;
        }
      }
    });
    if (!moves) { return; }
    mine.sort(function (a, b) { return b[0] - a[0]; });
    var body = moves.querySelector("tbody");
    while (body.firstChild) { body.removeChild(body.firstChild); }
    var limit = Number(moves.getAttribute("data-rows")) || 8;
    mine.slice(0, limit).forEach(function (item) {
      var row = document.createElement("tr"), flow = item[1];
      [flow.getAttribute("data-from") + " \\u2192 " + flow.getAttribute("data-to"),
       Number(flow.getAttribute("data-km")).toLocaleString("en-GB"), si(item[0]),
       Math.round(100 * item[0] / total) + " %"].forEach(function (text) {
        var cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      });
      body.appendChild(row);
    });
    var title = "";
    buttons.forEach(function (b) {
      if (b.getAttribute("data-mode") === mode) { title = b.textContent; }
    });
    var when = "the whole run";
    if (hours && hours.value) { when = hours.options[hours.selectedIndex].textContent; }
    var more = mine.length > limit ? " (" + (mine.length - limit) + " more)" : "";
    moves.querySelector("caption").textContent = mine.length ?
      "Largest moves, " + title + ", " + when + more : title + " moved no traffic in " + when + ".";
  }
  function show(mode) {
    var groups = map.querySelectorAll("g.flows");
    for (var j = 0; j < groups.length; j++) {
      groups[j].style.display = groups[j].getAttribute("data-mode") === mode ? "" : "none";
    }
    for (var k = 0; k < buttons.length; k++) {
      var on = buttons[k].getAttribute("data-mode") === mode;
      buttons[k].setAttribute("aria-pressed", on ? "true" : "false");
    }
    map.setAttribute("data-showing", mode);
    redraw();
  }
  buttons.forEach(function (button) {
    button.addEventListener("click", function (event) {
      show(event.currentTarget.getAttribute("data-mode"));
    });
  });
  if (hours) { hours.addEventListener("change", redraw); }
  // the address may choose the hours (#hours=3,4) and the run (#mode=none)
  var window_ = /(?:^#|&)hours=([0-9]+,[0-9]+)/.exec(window.location.hash);
  if (window_ && hours && hours.querySelector('option[value="' + window_[1] + '"]')) {
    hours.value = window_[1];
    redraw();
  }
  var wanted = /(?:^#|&)mode=([a-z0-9_-]+)/.exec(window.location.hash);
  if (wanted && map.querySelector('g.flows[data-mode="' + wanted[1] + '"]')) {
    show(wanted[1]);
  }
})();
"""
