"""The controller's dashboard: one server-rendered page, a little script, no build step.

The page is made from the same :class:`~.service.Service` answers the JSON API gives:

* health — whether Prometheus answers (a red banner while the controller fails static),
  whether an operator froze it, the decisions journaled;
* each site's utilisation as a bar against its thresholds (acceptable, target, maximum;
  the drained thresholds where an override is in force), whether its telemetry is fresh
  and which overrides it has, and why a site was left out (the telemetry's problems);
* the moves in force — forwards and withdrawals — each with the reason the journal gives
  for it, the last step's plan, and the journal's last actions;
* the predictor's answer for a site (``/api/atlas/SITE``, fetched by the script);
* the override form: kind, site, on or off, and the bearer token, posted by the script
  to ``/api/overrides`` with an ``Authorization`` header (the answer is shown under it).

The address can drive the script, for scripts and tests as for people sharing a link:
``#atlas=AKL`` asks the predictor about AKL; ``#override=pin:AKL:on&token=T`` sends that
override (the fragment never leaves the browser).  The page reloads itself every
``refresh`` seconds unless the address drives it.
"""

from __future__ import annotations

from html import escape
from typing import Any

from ..adapters.overrides import KINDS

CSS = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}
.alert{background:#c0392b;color:#fff;padding:.5em 1em}
.frozen{background:#2c3e50;color:#fff;padding:.5em 1em}
.ok{color:#1e7d32}.bad{color:#c0392b}small{color:#666}
"""

SCRIPT = r"""
(function(){
  const $ = id => document.getElementById(id);
  async function atlas(site){
    const r = await fetch('/api/atlas/' + encodeURIComponent(site));
    const j = await r.json();
    const out = $('atlas-answer');
    if(!r.ok){ out.textContent = j.error; return; }
    const lands = Object.entries(j.lands).sort((a,b)=>b[1]-a[1])
      .map(([s,x]) => s + ' ' + (100*x).toFixed(1) + ' %').join(', ');
    out.textContent = site + ' withdrawn: its users land at ' + (lands || 'no site') +
      (j.lost ? '; ' + (100*j.lost).toFixed(1) + ' % have no site' : '') +
      (j.known ? '' : ' (the atlas does not know this site)');
    out.dataset.site = site;
  }
  async function override(kind, site, active, token, note){
    const r = await fetch('/api/overrides', {method: 'POST',
      headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token},
      body: JSON.stringify({kind: kind, site: site || null, active: active, note: note || ''})});
    const j = await r.json();
    const out = $('override-answer');
    out.dataset.status = String(r.status);
    out.textContent = r.ok
      ? ('recorded: override ' + j.id + ', ' + j.kind + ' ' + (j.site || '') + ' ' +
         (j.active ? 'on' : 'off'))
      : ('refused (' + r.status + '): ' + j.error);
  }
  $('atlas-form').addEventListener('submit', e => {
    e.preventDefault(); atlas($('atlas-site').value); });
  $('override-form').addEventListener('submit', e => { e.preventDefault();
    override($('ov-kind').value, $('ov-site').value, $('ov-active').checked,
             $('ov-token').value, $('ov-note').value); });
  const h = new URLSearchParams(location.hash.slice(1));
  if(h.get('atlas')) atlas(h.get('atlas'));
  if(h.get('override')){
    const [kind, site, on] = h.get('override').split(':');
    override(kind, site, on !== 'off', h.get('token') || '', 'from the address');
  }
  if(!location.hash){ setTimeout(() => location.reload(), REFRESH * 1000); }
})();
"""


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _bar(u: float | None, acc: float, tgt: float, mx: float) -> str:
    """Utilisation against the three thresholds, 0..120 %."""
    w, scale = 240, 240 / 1.2

    def x(v: float) -> float:
        return min(max(v, 0.0), 1.2) * scale

    colour = "#c0392b" if u is not None and u > mx else "#2e86c1"
    fill = "" if u is None else f'<rect width="{x(u):.1f}" height="12" fill="{colour}"/>'
    marks = "".join(
        f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="0" y2="14" stroke="{c}" stroke-width="2">'
        f"<title>{name} {100 * v:.0f} %</title></line>"
        for name, v, c in (("acceptable", acc, "#27ae60"), ("target", tgt, "#f39c12"),
                           ("maximum", mx, "#c0392b"))
    )  # fmt: skip
    return (
        f'<svg width="{w}" height="14" role="img"><rect width="{w}" height="12" fill="#eee"/>'
        f"{fill}{marks}</svg>"
    )


def _colour(u: float | None, acc: float, mx: float) -> str:
    if u is None:
        return "#999999"  # left out
    return "#c0392b" if u > mx else "#f39c12" if u > acc else "#27ae60"


def _map(st: dict[str, Any]) -> str:
    """The sites on an equirectangular world map (only sites with a location), each a
    circle coloured by utilisation against its thresholds, and each forward an arrow."""
    where = {s["site"]: s["location"] for s in st["sites"] if s.get("location")}
    if not where:
        return ""
    w, h = 720, 360

    def xy(site: str) -> tuple[float, float]:
        lat, lon = where[site]
        return (lon + 180) / 360 * w, (90 - lat) / 180 * h

    out = [
        f'<svg id=map width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">'
        f'<rect width="{w}" height="{h}" fill="#eef3f8"/>'
        '<defs><marker id=arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z" fill="#555"/></marker></defs>'
    ]
    for fw in st["moves"]["forward"]:
        if fw["site"] in where and fw["to"] in where:
            (x1, y1), (x2, y2) = xy(fw["site"]), xy(fw["to"])
            out.append(
                f'<line class=flow data-site="{escape(fw["site"])}" data-to="{escape(fw["to"])}" '
                f'x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#555" '
                f'stroke-width="1.5" marker-end="url(#arrow)"/>'
            )
    for s in st["sites"]:
        if s["site"] not in where:
            continue
        x, y = xy(s["site"])
        f = s["in_force"]
        fill = _colour(s["utilisation"], f["acceptable"], f["maximum"])
        out.append(
            f'<circle data-site="{escape(s["site"])}" cx="{x:.1f}" cy="{y:.1f}" r="6" '
            f'fill="{fill}"><title>{escape(s["site"])} {_pct(s["utilisation"])}</title></circle>'
        )
    out.append("</svg>")
    return "".join(out)


def _reasons(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The last journaled action behind each forward (site, plan, to) and withdrawal."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in rows:
        if r["kind"] in ("forward", "handback", "revert"):
            out[("forward", r["site"], r["plan"] or "", r["to"] or "")] = r
        elif r["kind"] in ("withdraw", "announce"):
            out[("withdraw", r["site"], r.get("prefix") or "")] = r
    return out


def page(service: Any, refresh: int = 10) -> str:
    st = service.state()
    rows = service.journal_rows(0, 500)
    why = _reasons(rows)
    sites = [s["site"] for s in st["sites"]]
    h: list[str] = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<title>anyedge Traffic Manager</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>anyedge Traffic Manager</h1>",
    ]
    if not st["telemetry_up"]:
        h.append(
            "<p class=alert id=alert>Prometheus does not answer: failing static, no new moves "
            f"({escape('; '.join(st['problems']))})</p>"
        )
    if st["frozen"]:
        h.append("<p class=frozen id=frozen>Frozen by an operator: nothing new is decided</p>")
    h.append(
        f"<p id=health data-up={int(st['telemetry_up'])}>decisions journaled: "
        f"<b id=decisions>{st['decisions']}</b>, steps: {st['steps']}, actuator: "
        f"{escape(st['actuator'])}"
        + (f", <span class=bad>enforcement failing: {escape(st['enforce_error'])}</span>"
           if st["enforce_error"] else "")
        + "</p>"
    )  # fmt: skip
    h.append(_map(st))
    h.append(
        "<h2>Sites</h2><table id=sites><tr><th>site<th>utilisation<th><th>acceptable / "
        "target / maximum<th>telemetry<th>overrides</tr>"
    )
    for s in st["sites"]:
        f = s["in_force"]
        flags = [k for k in ("pinned", "forbidden", "drained") if s[k]]
        h.append(
            f'<tr data-site="{escape(s["site"])}" data-utilisation="{s["utilisation"]}">'
            f"<td>{escape(s['site'])}<td>{_pct(s['utilisation'])}"
            f"<td>{_bar(s['utilisation'], f['acceptable'], f['target'], f['maximum'])}"
            f"<td>{_pct(f['acceptable'])} / {_pct(f['target'])} / {_pct(f['maximum'])}"
            f"<td class={'ok' if s['fresh'] else 'bad'}>{'fresh' if s['fresh'] else 'left out'}"
            f"<td class=flags>{' '.join(flags)}</tr>"
        )
    h.append("</table>")
    if st["problems"]:
        h.append("<ul id=problems>")
        h += [f"<li>{escape(p)}</li>" for p in st["problems"]]
        h.append("</ul>")
    moves = st["moves"] or {"forward": [], "withdrawn": []}
    h.append(
        "<h2>Moves in force</h2><table id=forwards><tr><th>from<th>plan<th>to<th>share"
        "<th>CPU ms/s<th>why (journal)</tr>"
    )
    for fw in moves["forward"]:
        r = why.get(("forward", fw["site"], fw["plan"], fw["to"]))
        reason = "" if r is None else f"decision {r['seq']}: {r['reason']}"
        h.append(
            f'<tr class=forward data-site="{escape(fw["site"])}" data-to="{escape(fw["to"])}">'
            f"<td>{escape(fw['site'])}<td>{escape(fw['plan'])}<td>{escape(fw['to'])}"
            f"<td>{100 * fw['share']:.1f} %<td>{fw.get('cpu', 0):,.0f}<td>{escape(reason)}</tr>"
        )
    for wd in moves["withdrawn"]:
        r = why.get(("withdraw", wd["site"], wd["prefix"]))
        reason = "" if r is None else f"decision {r['seq']}: {r['reason']}"
        h.append(
            f"<tr class=withdrawn><td>{escape(wd['site'])}<td colspan=2>withdrew "
            f"{escape(wd['prefix'])}<td><td><td>{escape(reason)}</tr>"
        )
    h.append("</table><h2>Last step</h2><ul id=plan>")
    h += [f"<li>{escape(a['kind'])} {escape(a.get('site') or '')}: {escape(a['reason'])}</li>"
          for a in service.plan()]  # fmt: skip
    h.append("</ul><h2>Journal</h2><table id=journal><tr><th>decision<th>kind<th>site<th>plan"
             "<th>to<th>share<th>reason</tr>")  # fmt: skip
    for r in reversed(rows[-50:]):
        h.append(
            f"<tr><td>{r['seq']}<td>{escape(r['kind'])}<td>{escape(r.get('site') or '')}"
            f"<td>{escape(r.get('plan') or '')}<td>{escape(r.get('to') or '')}"
            f"<td>{_pct(r.get('share'))}<td>{escape(r['reason'])}</tr>"
        )
    options = "".join(f"<option>{escape(s)}</option>" for s in sites)
    kinds = "".join(f"<option>{k}</option>" for k in KINDS)
    h.append(
        "</table><h2>Predictor</h2><form id=atlas-form>If <select id=atlas-site>"
        f"{options}</select> withdrew its prefix… <button>ask the atlas</button></form>"
        "<p id=atlas-answer></p>"
        "<h2>Override</h2><form id=override-form><select id=ov-kind>"
        f"{kinds}</select> <select id=ov-site><option value=''>(all)</option>{options}"
        "</select> <label><input type=checkbox id=ov-active checked> on</label> "
        "<input id=ov-note placeholder=note> <input type=password id=ov-token "
        "placeholder='bearer token' autocomplete=off> <button>send</button></form>"
        "<p id=override-answer></p>"
        f"<script>{SCRIPT.replace('REFRESH', str(int(refresh)))}</script></body></html>"
    )
    return "\n".join(h)
