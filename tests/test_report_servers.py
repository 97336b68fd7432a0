"""The report's section on servers inside sites, from a real ``anyedge simulate`` run.

docs/examples/servers-day.yaml on the tiny world (3 of CHC's 8 servers fail from 10 to
40 minutes, 4 of AKL's 16 are drained from 20 to 50): one command writes the report and
prints ``--json``; the section's numbers must be that JSON's, run by run and change by
change.  A scenario without server events says so in the section.  Chromium opens the
page and runs its script without an error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from anyedge.model import World
from anyedge.model.files import parse_world
from anyedge.report import render
from anyedge.sim import MODE_TITLES, Twin, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny.yaml"
EXAMPLE = ROOT / "docs" / "examples" / "servers-day.yaml"
MODES = ("none", "withdraw", "manager")


class _Rows(HTMLParser):
    """The section's tables: per (table class, section) the rows, each a list of cells
    (a cell's ``data-value`` when it has one, else its text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[tuple[str, str], list[list[str]]] = {}
        self.polylines: list[dict[str, str]] = []
        self.articles: list[str] = []
        self._table: tuple[str, str] | None = None
        self._in_body = False
        self._cell: list[str] | None = None
        self._value: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "article":
            self.articles.append(a.get("data-section", ""))
        elif tag == "table":
            self._table = (a.get("class", ""), a.get("data-section", ""))
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._in_body and self._table:
            self._cell, self._value = [], a.get("data-value")
        elif tag == "polyline":
            self.polylines.append({**a, "section": self.articles[-1] if self.articles else ""})

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table:
            text = "".join(self._cell).strip()
            self.tables[self._table][-1].append(self._value if self._value is not None else text)
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _section(page: str) -> str:
    m = re.search(r'<section class="card" id="servers">.*?</section>', page, re.S)
    assert m is not None, "the page has no section on servers"
    return m.group(0)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """(the --json output, the report) of one ``anyedge simulate`` in a subprocess."""
    d = tmp_path_factory.mktemp("servers-report")
    report = d / "report.html"
    r = subprocess.run(
        [
            "python", "-m", "anyedge", "simulate", str(EXAMPLE), "-t", str(TINY),
            "--report", str(report), "--json",
        ],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout), report.read_text(encoding="utf-8")


def test_the_section_shows_each_runs_changes_as_the_json_says(
    run: tuple[dict[str, Any], str],
) -> None:
    out, page = run
    servers = out["servers"]
    p = _Rows()
    p.feed(_section(page))
    assert p.articles == ["CHC01", "AKL01"]  # in the order of their first change
    assert "site CHC · 8 servers" in page
    assert "site AKL · 16 servers" in page
    for sec in ("CHC01", "AKL01"):
        rows = p.tables[("small changes", sec)]
        expected = [(m, ch) for m in MODES for ch in servers[m]["changes"] if ch["section"] == sec]
        assert len(rows) == len(expected)
        for row, (m, ch) in zip(rows, expected, strict=True):
            assert row[0] == MODE_TITLES[m]
            minutes = int(ch["time_s"] // 60)
            assert row[1] == f"08:{minutes:02d}"  # the day starts at 08:00 UTC
            assert row[2].startswith(f"{ch['servers']} ")
            got = [float(v) for v in row[3:]]
            assert got == [
                ch["moved"],
                ch["broken"],
                ch["broken_without_second_hop"],
                ch["capacity"],
            ]
    # the Traffic Manager took CHC's failed servers out of the table at 08:11
    words = [r[2] for r in p.tables[("small changes", "CHC01")]]
    assert words.count("3 taken out of the table") == 1
    assert words.count("3 failed") == 3


def test_connections_broken_by_failures_and_by_drains(run: tuple[dict[str, Any], str]) -> None:
    out, page = run
    p = _Rows()
    p.feed(_section(page))
    for sec in ("CHC01", "AKL01"):
        rows = p.tables[("small broken", sec)]
        assert len(rows) == 3
        for row, m in zip(rows, MODES, strict=True):
            mine = [c for c in out["servers"][m]["changes"] if c["section"] == sec]
            fail = [c for c in mine if c["what"] in ("fail", "remove", "recover")]
            drain = [c for c in mine if c["what"] in ("drain", "undrain")]
            assert [float(v) for v in row[1:]] == pytest.approx(
                [
                    sum(c["broken"] for c in fail),
                    sum(c["broken_without_second_hop"] for c in fail),
                    sum(c["broken"] for c in drain),
                    sum(c["broken_without_second_hop"] for c in drain),
                ],
                abs=1e-12,
            )
    # the docs' numbers: the failure broke 3/8 of CHC's connections under every
    # controller; the drain broke none of AKL's, 25 % + 25 % without the second hop
    chc = p.tables[("small broken", "CHC01")]
    assert [float(r[1]) for r in chc] == [0.375, 0.375, 0.375]
    akl = p.tables[("small broken", "AKL01")]
    assert [(float(r[3]), float(r[4])) for r in akl] == [(0.0, 0.5)] * 3


def test_servers_failed_drained_and_removed_are_drawn_over_time(
    run: tuple[dict[str, Any], str],
) -> None:
    _, page = run
    p = _Rows()
    p.feed(_section(page))
    lines = {(ln["section"], ln.get("data-servers"), ln.get("data-mode")) for ln in p.polylines}
    assert ("CHC01", "failed", None) in lines
    assert ("AKL01", "drained", None) in lines
    # only the Traffic Manager takes failed servers out of the table
    removed = {(s, m) for s, what, m in lines if what == "removed"}
    assert removed == {("CHC01", "manager")}
    # one utilisation line per run and section
    util = {(s, m) for s, what, m in lines if what is None and m}
    assert util == {(s, m) for s in ("CHC01", "AKL01") for m in MODES}

    def points(section: str, what: str) -> list[tuple[float, float]]:
        (ln,) = [x for x in p.polylines if (x["section"], x.get("data-servers")) == (section, what)]
        return [(float(a), float(b)) for a, b in (pt.split(",") for pt in ln["points"].split())]

    # the chart is 600 wide with the plot from x=44 to x=582 over the hour: the failure
    # steps up at 10 minutes and down at 40, the drain at 20 and 50
    def steps_at(pts: list[tuple[float, float]]) -> list[float]:
        xs = [pts[i][0] for i in range(1, len(pts)) if pts[i][1] != pts[i - 1][1]]
        return [round((x - 44.0) / 538.0 * 60.0) for x in xs]

    assert steps_at(points("CHC01", "failed")) == [10, 40]
    assert steps_at(points("AKL01", "drained")) == [20, 50]
    assert steps_at(points("CHC01", "drained")) == []


@pytest.fixture(scope="module")
def tiny() -> World:
    return parse_world(TINY.read_text(), TINY)


def test_a_scenario_without_server_events_says_so(tiny: World) -> None:
    sc = parse_scenario(
        "duration: 20m\nevents:\n  - {at: 5m, for: 10m, kind: surge, site: CHC, factor: 3}\n",
        tiny,
    )
    page = render(Twin(tiny, sc).compare(reference=False))
    section = _section(page)
    assert 'id="servers-none"' in section
    assert "No server failed or was drained" in section
    assert "<article" not in section
    assert "<svg" not in section


@pytest.mark.slow
def test_chromium_draws_the_section_without_script_errors(
    tmp_path: Path, run: tuple[dict[str, Any], str]
) -> None:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    report = tmp_path / "report.html"
    report.write_text(run[1], encoding="utf-8")
    args = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
        "--dump-dom", f"file://{report}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        dom, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("chromium did not finish in 60 s")
    assert proc.returncode == 0, err[-2000:]
    assert "Uncaught" not in err
    assert "Content Security Policy" not in err
    p = _Rows()
    p.feed(_section(dom))
    assert p.articles == ["CHC01", "AKL01"]
    assert len(p.tables[("small changes", "CHC01")]) == 7
