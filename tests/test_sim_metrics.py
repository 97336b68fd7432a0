"""``anyedge simulate --metrics FILE``: the twin's day as Prometheus metrics, every
number the same as ``--json`` says, in a file Prometheus's own ``promtool`` accepts."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_exit_status import TINY, anyedge

DAY = "duration: 30m\nevents:\n  - {at: 5m, for: 15m, kind: surge, site: CHC, factor: 30}\n"


def test_the_twin_writes_its_day_as_prometheus_metrics(tmp_path: Path) -> None:
    (tmp_path / "day.yaml").write_text(DAY)
    out = tmp_path / "twin.prom"
    r = anyedge("simulate", str(tmp_path / "day.yaml"), "-t", TINY, "--no-report", "--json",
                "--metrics", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    text = out.read_text()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert set(summary["runs"]) == {"none", "withdraw", "manager"}
    for mode, run in summary["runs"].items():
        m = (("mode", mode),)
        for name, key in [("requests", "requests"), ("failed_requests", "failed"),
                          ("moved_requests", "moved"), ("forwarded_requests", "forwarded"),
                          ("decisions", "decisions"),
                          ("routing_changes", "routing_changes")]:  # fmt: skip
            assert got[(f"anyedge_twin_{name}_total", m)] == pytest.approx(run[key])
        lat = got[("anyedge_twin_added_latency_seconds", (*m, ("stat", "p95")))]
        assert lat == pytest.approx(run["added_latency_p95_ms"] / 1000)
        kinds = Counter(a["kind"] for a in summary["actions"][mode])
        for kind, n in kinds.items():
            assert got[("anyedge_twin_actions_total", (("kind", kind), *m))] == n
        breach = sum(
            got[("anyedge_twin_site_slo_breach_seconds", (*m, ("site", s)))]
            for s in ("CHC", "AKL", "IAD")
        )
        assert breach == pytest.approx(60 * run["slo_breach_minutes"])
    # the surge: only the Traffic Manager forwards, CHC most, and fails fewer requests
    fwd = ("anyedge_twin_site_forwarded_rps", (("mode", "manager"), ("site", "CHC")))
    assert got[fwd] > 0
    assert got[("anyedge_twin_forwarded_requests_total", (("mode", "none"),))] == 0

    def util(stat: str) -> float:
        return got[("anyedge_twin_site_utilisation", (("mode", "none"), ("site", "CHC"),
                                                      ("stat", stat)))]  # fmt: skip

    assert util("peak") > util("mean") > 0
    assert util("peak") > 1.0  # overloaded at the surge's height, with no management
    none, manager = (got[("anyedge_twin_failed_requests_total", (("mode", m),))]
                     for m in ("none", "manager"))  # fmt: skip
    assert manager < none
    assert got[("anyedge_twin_simulated_seconds", ())] == 1800
    promtool = shutil.which("promtool")
    if promtool is not None:  # Debian's prometheus package brings it
        p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, check=False)  # fmt: skip
        assert p.returncode == 0, p.stdout + p.stderr


def test_a_metrics_file_in_no_directory_is_refused(tmp_path: Path) -> None:
    r = anyedge("simulate", "-t", TINY, "--no-report", "--metrics", str(tmp_path / "no" / "x"))
    assert r.returncode == 2
    assert "--metrics: its directory does not exist" in r.stderr
    assert not (tmp_path / "no").exists()
