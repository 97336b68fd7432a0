"""The controller's HTTP API and dashboard, from a running ``anyedge control run`` on a
real Prometheus, in headless Chromium (Debian's): the page shows each site's
utilisation against its thresholds, the forwards in force with the journal's reasons,
the journal and the predictor's answer; an override sent from the page with the token
takes effect, and without it is refused.  The API documents itself (OpenAPI) and
serves ``/metrics`` to Prometheus."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from service_support import (
    TOKEN,
    HTTPStatus,
    Page,
    Prometheus,
    Run,
    Sites,
    chromium,
    controller_yaml,
    free_port,
    get,
    get_json,
    wait_for,
)
from service_support import world as sites_and_prometheus

CAPACITY = {"CHC": 1_000.0, "AKL": 2_000.0, "SYD": 4_000.0}
PREFIX = "192.0.2.0/24"


def _atlas(path: Path) -> None:
    """A hand-made atlas: if CHC withdrew, 70 % of its users would land at AKL, 30 % at SYD."""

    def single(site: str, to: dict[str, float]) -> dict[str, object]:
        return {
            "name": site, "kind": "single", "failed": [site], "section": None,
            "failed_rps": 100.0, "unreached_rps": 0.0, "collateral_rps": 0.0,
            "to": [{"site": s, "rps": 100.0 * x, "share": x} for s, x in to.items()],
            "receivers": [], "excess_cpu": 0.0, "worst_utilisation": None,
        }  # fmt: skip

    doc = {
        "anyedge_atlas": 1, "prefix": PREFIX, "mode": "as", "k": 1,
        "sites": list(CAPACITY), "scenarios": [single("CHC", {"AKL": 0.7, "SYD": 0.3})],
        "riskiest": ["CHC"],
    }  # fmt: skip
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, Sites, Path]]:
    with sites_and_prometheus(tmp_path_factory.mktemp("prom"), CAPACITY) as (sites, prom):
        d = tmp_path_factory.mktemp("controller")
        _atlas(d / "atlas.json")
        port = free_port()
        cfg = controller_yaml(d, prom.url, CAPACITY, http_port=port, prefix=PREFIX,
                              atlas="atlas.json")  # fmt: skip
        run = Run(cfg, port)
        try:
            sites.load("CHC", 1.2)
            wait_for("CHC forwards", lambda: run.state()["moves"]["forward"])
            yield run, sites, d
        finally:
            assert run.stop() == 0, run.log()
            _ = prom


def test_the_dashboard_shows_sites_moves_reasons_journal(
    service: tuple[Run, Sites, Path], tmp_path: Path
) -> None:
    run, _, _ = service
    out, _ = chromium(tmp_path, f"{run.url}/#atlas=CHC")
    page = Page(out)
    rows = {a["data-site"]: a for t, a in page.tags if t == "tr" and "data-utilisation" in a}
    assert set(rows) == {"CHC", "AKL", "SYD"}
    assert float(rows["CHC"]["data-utilisation"]) == pytest.approx(1.2, abs=0.01)
    assert "90.0 %" in page.text["sites"]  # the maximum, with target and acceptable
    assert "80.0 %" in page.text["sites"]
    assert "60.0 %" in page.text["sites"]
    forwards = [a for t, a in page.tags if t == "tr" and a.get("class") == "forward"]
    assert forwards
    assert {a["data-site"] for a in forwards} == {"CHC"}
    assert re.search(r"decision \d+: 120.0 % is above the maximum 90.0 %", page.text["forwards"])
    assert "forward" in page.text["journal"]
    # no site has a location in this configuration: no map
    assert not [a for t, a in page.tags if t == "svg" and a.get("id") == "map"]
    # the script asked the predictor (#atlas=CHC) and wrote its answer
    assert page.text["atlas-answer"] == "CHC withdrawn: its users land at AKL 70.0 %, SYD 30.0 %"


def test_an_override_from_the_page_needs_the_token(
    service: tuple[Run, Sites, Path], tmp_path: Path
) -> None:
    run, _, _ = service
    out, _ = chromium(tmp_path, f"{run.url}/#override=pin:SYD:on&token=not-the-token-at-all")
    page = Page(out)
    assert page.text["override-answer"] == "refused (401): an override needs the bearer token"
    assert not run.state()["overrides"]["pinned"]

    out, _ = chromium(tmp_path, f"{run.url}/#override=pin:SYD:on&token={TOKEN}")
    page = Page(out)
    assert re.fullmatch(r"recorded: override \d+, pin SYD on", page.text["override-answer"])
    assert run.state()["overrides"]["pinned"] == ["SYD"]
    # it takes effect: the next step's plan holds SYD, and the page shows it pinned
    wait_for("SYD pinned in the plan", lambda: _pinned(run, "SYD"))
    out, _ = chromium(tmp_path, f"{run.url}/#atlas=SYD")
    page = Page(out)
    assert re.search(r"SYD.*pinned", page.text["sites"], re.S)
    assert "pinned by the operator" in page.text["plan"]
    out, _ = chromium(tmp_path, f"{run.url}/#override=pin:SYD:off&token={TOKEN}")
    assert run.state()["overrides"]["pinned"] == []


def _pinned(run: Run, site: str) -> bool:
    plan = get_json(f"{run.url}/api/plan")
    return any(a["code"] == "pinned" and a["site"] == site for a in plan)


def test_the_api_documents_itself_and_serves_metrics(service: tuple[Run, Sites, Path]) -> None:
    run, _, _ = service
    spec = get_json(f"{run.url}/openapi.json")
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) >= {
        "/api/state", "/api/plan", "/api/journal", "/api/overrides", "/api/atlas/{site}",
    }  # fmt: skip
    post = spec["paths"]["/api/overrides"]["post"]
    assert post["security"] == [{"bearer": []}]
    assert "401" in post["responses"]
    journal = get_json(f"{run.url}/api/journal?since=0")
    assert any(r["kind"] == "forward" and r["site"] == "CHC" for r in journal)
    assert all(r["reason"] for r in journal)
    assert get_json(f"{run.url}/api/atlas/AKL") == {
        "site": "AKL", "known": False, "lands": {}, "lost": None,
    }  # fmt: skip
    assert "error" in json.loads(_get_status(f"{run.url}/api/atlas/NOPE", 404))
    metrics = get(f"{run.url}/metrics").decode()
    assert "anyedge_controller_telemetry_up 1.0" in metrics
    assert 'anyedge_site_threshold{site="CHC",threshold="maximum"} 0.9' in metrics
    assert re.search(r'anyedge_controller_actions_total\{kind="forward"\} [1-9]', metrics)
    assert "anyedge_controller_frozen 0.0" in metrics


def _get_status(url: str, status: int) -> bytes:
    with pytest.raises(HTTPStatus) as e:
        get(url)
    assert e.value.code == status
    return e.value.body


_ = Prometheus  # re-exported for type checkers
