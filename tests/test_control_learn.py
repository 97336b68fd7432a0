"""Learned maximum thresholds: known answers, outliers, fallbacks, bounds, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyedge.cli.main import main
from anyedge.control import LearnedThreshold, learn_maximum
from anyedge.control.learn import fit_curve, read_history, up_crossing
from anyedge.errors import InputError

U_STAR_QUAD = math.sqrt(15 / 30)  # 5 + 30 u² = 20


def quadratic_site(n: int = 400, noise: float = 0.5, seed: int = 1) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.2, 1.0, n)
    return u, 5.0 + 30.0 * u**2 + rng.normal(0.0, noise, n)


def linear_site(n: int = 400, noise: float = 0.5, seed: int = 2) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.4, 1.0, n)
    return u, 40.0 * u - 10.0 + rng.normal(0.0, noise, n)


def with_spikes(y: Any, share: float = 0.05, seed: int = 3) -> Any:
    rng = np.random.default_rng(seed)
    out = y.copy()
    out[rng.choice(len(y), int(share * len(y)), replace=False)] = 500.0
    return out


# --- known answers --------------------------------------------------------------------


def test_quadratic_meets_the_slo_where_it_should() -> None:
    r = learn_maximum(*quadratic_site())
    assert r.method == "quadratic"
    assert r.value == pytest.approx(U_STAR_QUAD, abs=0.005)
    assert r.crossing == r.value
    assert not r.clamped
    assert r.slo_ms == 20.0
    assert r.n_used + r.n_dropped == 400
    assert r.n_dropped <= 4
    assert r.r2_quadratic is not None
    assert r.r2_linear is not None
    assert r.r2_quadratic > 0.99
    assert r.r2_quadratic >= r.r2_linear
    assert r.quadratic is not None
    assert r.quadratic == pytest.approx((5.0, 0.0, 30.0), abs=1.5)
    assert r.reason.startswith("quadratic fit (R² 0.99")
    assert f"meets the 20 ms SLO at utilisation {r.value:.3f}" in r.reason


def test_exact_quadratic_is_solved_exactly() -> None:
    u = np.linspace(0.3, 1.0, 50)
    r = learn_maximum(u, 5.0 + 30.0 * u**2)
    assert r.method == "quadratic"
    assert r.value == pytest.approx(U_STAR_QUAD, abs=1e-9)
    assert r.quadratic == pytest.approx((5.0, 0.0, 30.0), abs=1e-8)
    assert r.r2_quadratic == pytest.approx(1.0)
    assert fit_curve(r, [r.value])[0] == pytest.approx(20.0, abs=1e-9)


def test_linear_relation() -> None:
    r = learn_maximum(*linear_site())
    assert r.value == pytest.approx(0.75, abs=0.005)
    assert r.linear is not None
    q, m = r.linear
    assert m == pytest.approx(40.0, abs=1.0)
    assert q == pytest.approx(-10.0, abs=1.0)
    assert r.r2_linear is not None
    assert r.r2_linear > 0.99
    # the quadratic's extra term explains nothing the line does not: the line is chosen
    assert r.method == "linear"
    assert r.quadratic is not None
    assert abs(r.quadratic[2]) < 3.0
    assert "adjusted R²" in r.reason or "bends downwards" in r.reason


def test_linear_when_no_quadratic_can_be_fitted() -> None:
    # two distinct utilisations fix a line but not a parabola
    u = np.repeat([0.6, 0.8], 20)
    r = learn_maximum(u, 40.0 * u - 10.0)
    assert r.method == "linear"
    assert r.value == pytest.approx(0.75, abs=1e-12)
    assert r.quadratic is None
    assert r.r2_quadratic is None
    assert r.r2_linear == pytest.approx(1.0)
    assert "too few distinct utilisations for a quadratic" in r.reason


def test_slo_is_a_parameter() -> None:
    u, y = quadratic_site()
    r = learn_maximum(u, y, slo_ms=29.0)  # 5 + 30 u² = 29 at u = sqrt(0.8)
    assert r.value == pytest.approx(math.sqrt(0.8), abs=0.005)
    assert "29 ms SLO" in r.reason


# --- dirty data -----------------------------------------------------------------------


@pytest.mark.parametrize("site", [quadratic_site, linear_site])
def test_spikes_do_not_move_the_answer(site: Any) -> None:
    u, y = site()
    clean = learn_maximum(u, y)
    dirty = learn_maximum(u, with_spikes(y))
    assert abs(dirty.value - clean.value) <= 0.01
    assert dirty.n_dropped >= 20  # every spike is an outlier
    assert dirty.n_used + dirty.n_dropped == 400
    assert dirty.method == clean.method


def test_low_spikes_are_outliers_too() -> None:
    u, y = quadratic_site()
    y = y.copy()
    y[::20] = 0.5  # dropouts: far below the curve
    r = learn_maximum(u, y)
    assert r.value == pytest.approx(U_STAR_QUAD, abs=0.01)
    assert r.n_dropped >= 20


def test_invalid_points_are_dropped() -> None:
    u, y = quadratic_site(n=100)
    bad_u = np.array([np.nan, -0.1, 1.6, 0.5, 0.5, np.inf, 0.5])
    bad_y = np.array([10.0, 10.0, 10.0, 0.0, -3.0, 10.0, np.nan])
    r = learn_maximum(np.concatenate([u, bad_u]), np.concatenate([y, bad_y]))
    assert r.n_used + r.n_dropped == 107
    assert r.n_dropped >= 7
    assert r.value == pytest.approx(learn_maximum(u, y).value, abs=1e-12)


def test_too_few_points_is_static() -> None:
    u, y = quadratic_site(n=29)
    r = learn_maximum(u, y)
    assert r.method == "static"
    assert r.value == 0.90
    assert r.n_used == 29
    assert r.reason == ("too few points: 29 usable, 30 needed (0 invalid, 0 outliers); static 0.90")
    assert r.quadratic is None
    assert r.linear is None
    assert r.r2_quadratic is None
    assert not r.clamped
    assert learn_maximum(u, y, min_points=29).method == "quadratic"


def test_too_few_after_dropping_counts_what_was_dropped() -> None:
    u, y = quadratic_site(n=31)
    y = y.copy()
    y[:2] = np.nan
    r = learn_maximum(u, y, static=0.8)
    assert r.method == "static"
    assert r.value == 0.8
    assert r.reason.startswith("too few points: 29 usable, 30 needed (2 invalid, 0 outliers)")
    assert r.reason.endswith("static 0.80")


def test_pure_noise_is_static_fit_too_poor() -> None:
    rng = np.random.default_rng(4)
    u = rng.uniform(0.2, 1.0, 400)
    y = 12.0 + rng.normal(0.0, 2.0, 400)  # latency unrelated to utilisation
    r = learn_maximum(u, y, static=0.85)
    assert r.method == "static"
    assert r.value == 0.85
    assert r.reason.startswith("fit too poor: R² 0.0")
    assert r.reason.endswith("below 0.5; static 0.85")
    # the rejected fits are still reported
    assert r.r2_quadratic is not None
    assert r.r2_quadratic < 0.05
    assert r.quadratic is not None
    assert r.crossing is None


def test_flat_latency_and_constant_utilisation_are_static() -> None:
    u = np.linspace(0.3, 1.0, 40)
    r = learn_maximum(u, np.full(40, 12.0))
    assert r.method == "static"
    assert r.r2_quadratic == 0.0
    assert r.r2_linear == 0.0
    r = learn_maximum(np.full(40, 0.6), np.linspace(10.0, 14.0, 40))
    assert r.method == "static"
    assert r.reason == "fit too poor: utilisation never varies (all at 0.600); static 0.90"


def test_min_r2_decides() -> None:
    rng = np.random.default_rng(5)
    u = rng.uniform(0.2, 1.0, 400)
    y = 5.0 + 30.0 * u**2 + rng.normal(0.0, 6.0, 400)  # a weak relation
    r = learn_maximum(u, y)
    assert r.r2_quadratic is not None
    assert 0.5 < r.r2_quadratic < 0.9
    assert r.method == "quadratic"
    strict = learn_maximum(u, y, min_r2=0.9)
    assert strict.method == "static"
    assert strict.reason.startswith("fit too poor")


# --- bounds ---------------------------------------------------------------------------


def test_clamped_to_the_lower_bound() -> None:
    r = learn_maximum(*quadratic_site(), bounds=(0.75, 0.95))
    assert r.value == 0.75
    assert r.clamped
    assert r.crossing == pytest.approx(U_STAR_QUAD, abs=0.005)
    assert r.reason.endswith("; raised to the lower bound 0.75")


def test_clamped_to_the_upper_bound() -> None:
    r = learn_maximum(*quadratic_site(), bounds=(0.5, 0.7), static=0.6)
    assert r.value == 0.7
    assert r.clamped
    assert r.reason.endswith("; lowered to the upper bound 0.70")


def test_never_reaching_the_slo_is_the_upper_bound() -> None:
    u = np.linspace(0.2, 1.0, 60)
    r = learn_maximum(u, 2.0 + 10.0 * u)  # 17 ms at u = 1.5
    assert r.method == "quadratic"
    assert r.value == 0.95
    assert r.crossing is None
    assert r.clamped
    assert r.reason == (
        "quadratic fit (R² 1.000) stays below the 20 ms SLO up to utilisation 1.5: "
        "the upper bound 0.95"
    )


def test_above_the_slo_everywhere_is_the_lower_bound() -> None:
    u = np.linspace(0.2, 1.0, 60)
    r = learn_maximum(u, 25.0 + 10.0 * u)
    assert r.value == 0.5
    assert r.crossing is None
    assert r.reason.endswith("is above the 20 ms SLO at every utilisation: the lower bound 0.50")
    # falling latency that starts above the SLO: the safe side too
    r = learn_maximum(u, 30.0 - 20.0 * u)
    assert r.value == 0.5
    assert "at low utilisation and never rises through it" in r.reason


def test_up_crossing() -> None:
    assert up_crossing((5.0, 0.0, 30.0), 20.0) == pytest.approx(U_STAR_QUAD, abs=1e-15)
    assert up_crossing((-10.0, 40.0), 20.0) == pytest.approx(0.75, abs=1e-15)
    assert up_crossing((2.0, 10.0), 20.0) is None  # reaches 20 at 1.8
    assert up_crossing((30.0, -20.0), 20.0) is None  # falls through it
    # convex, above at 0, dips below, rises through at 1.2: (u - 0.2)(u - 1.2) + 20
    assert up_crossing((20.24, -1.4, 1.0), 20.0) == pytest.approx(1.2, abs=1e-12)
    # concave: rises through at 0.5, falls back at 1.0
    assert up_crossing((20.0 - 0.5, 1.5, -1.0), 20.0) == pytest.approx(0.5, abs=1e-12)
    # a nearly linear quadratic keeps its precision
    assert up_crossing((-10.0, 40.0, 1e-14), 20.0) == pytest.approx(0.75, abs=1e-12)


def test_bad_settings_are_value_errors() -> None:
    u, y = quadratic_site(n=40)
    with pytest.raises(ValueError, match="slo_ms"):
        learn_maximum(u, y, slo_ms=0.0)
    with pytest.raises(ValueError, match="bounds"):
        learn_maximum(u, y, bounds=(0.9, 0.5))
    with pytest.raises(ValueError, match="static"):
        learn_maximum(u, y, static=0.99)
    with pytest.raises(ValueError, match="shapes"):
        learn_maximum(u, y[:-1])


def test_fit_curve() -> None:
    r = learn_maximum(*quadratic_site())
    grid = np.array([0.3, 0.5, 1.0])
    assert r.quadratic is not None
    c, b, a = r.quadratic
    assert fit_curve(r, grid) == pytest.approx(c + b * grid + a * grid**2)
    assert r.linear is not None
    assert fit_curve(r, grid, "linear") == pytest.approx(r.linear[0] + r.linear[1] * grid)
    static = learn_maximum(*quadratic_site(n=10))
    with pytest.raises(ValueError, match="no static fit"):
        fit_curve(static, grid)


def test_result_is_frozen_and_hashable() -> None:
    r = learn_maximum(*quadratic_site())
    assert isinstance(r, LearnedThreshold)
    with pytest.raises(AttributeError):
        r.value = 0.5  # type: ignore[misc]
    assert hash(r) == hash(learn_maximum(*quadratic_site()))


@settings(max_examples=60, deadline=None)
@given(
    a=st.floats(0.0, 60.0),
    b=st.floats(0.0, 40.0),
    c=st.floats(1.0, 30.0),
    noise=st.sampled_from([0.0, 0.1, 1.0]),
    seed=st.integers(0, 2**32 - 1),
    lo=st.floats(0.3, 0.7),
    width=st.floats(0.0, 0.3),
)
def test_monotone_quadratic_property(
    a: float, b: float, c: float, noise: float, seed: int, lo: float, width: float
) -> None:
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.1, 1.0, 200)
    y = c + b * u + a * u**2 + rng.normal(0.0, noise, 200)
    bounds = (lo, lo + width)
    r = learn_maximum(u, y, bounds=bounds, static=lo)
    assert bounds[0] <= r.value <= bounds[1]
    if r.method != "static" and not r.clamped:
        assert r.crossing == r.value
        assert fit_curve(r, [r.value])[0] == pytest.approx(20.0, abs=1e-6)
    if noise == 0.0 and r.method == "quadratic" and r.crossing is not None and r.crossing > 1e-6:
        # exact data: the crossing is the true one
        true = up_crossing((c, b, a), 20.0)
        assert true is not None
        assert r.crossing == pytest.approx(true, abs=1e-6)


# --- the history file -----------------------------------------------------------------


def write_history(path: Path, sites: dict[str, tuple[Any, Any]], extra: bool = True) -> Path:
    lines = ["time,site,utilisation,p95_ms" if extra else "site,utilisation,p95_ms"]
    for code, (u, y) in sites.items():
        for i, (ui, yi) in enumerate(zip(u, y, strict=True)):
            row = f"{code},{float(ui)!r},{float(yi)!r}"
            lines.append(f"2024-07-29T{i // 60:02d}:{i % 60:02d}:00Z,{row}" if extra else row)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def history(tmp_path: Path) -> Path:
    u, y = quadratic_site()
    lu, ly = linear_site()
    rng = np.random.default_rng(6)
    nu = rng.uniform(0.2, 1.0, 100)
    return write_history(
        tmp_path / "history.csv",
        {"LIS": (u, with_spikes(y)), "BCN": (lu, ly), "AKL": (nu, 12.0 + rng.normal(0, 2, 100))},
    )


def test_read_history(history: Path) -> None:
    data = read_history(history)
    assert list(data) == ["LIS", "BCN", "AKL"]
    u, y = data["LIS"]
    assert u.dtype == np.float64
    assert len(u) == len(y) == 400
    assert np.array_equal(u, quadratic_site()[0])


def test_read_history_columns_in_any_order_lower_case_sites_nan(tmp_path: Path) -> None:
    f = tmp_path / "h.csv"
    f.write_text("p95_ms, note ,utilisation,site\n12.5,x,0.5,lis\nnan,,0.6,LIS\n", encoding="utf-8")
    data = read_history(f)
    assert list(data) == ["LIS"]
    assert data["LIS"][0].tolist() == [0.5, 0.6]
    assert data["LIS"][1][0] == 12.5
    assert math.isnan(data["LIS"][1][1])


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("time,utilisation,p95_ms\n", ":1: header: no column site: the first line must name"),
        ("site,utilisation,p95_ms,site\n", ":1: header: column site twice"),
        ("", ":1: header: no column site, utilisation, p95_ms"),
        ("site,utilisation,p95_ms\n", ": no samples: the file has a header and no rows"),
        ("site,utilisation,p95_ms\nLIS,0.5,12\nLIS,high,12\n", ":3: utilisation: not a number"),
        ("site,utilisation,p95_ms\nLIS,0.5,\n", ":2: p95_ms: empty: need a number"),
        ("site,utilisation,p95_ms\n,0.5,12\n", ":2: site: empty"),
        ("site,utilisation,p95_ms\nLIS,0.5\n", ":2: expected 3 fields, got 2"),
    ],
)
def test_read_history_errors(tmp_path: Path, text: str, rendered: str) -> None:
    f = tmp_path / "h.csv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as e:
        read_history(f)
    assert e.value.file == f
    assert e.value.render().startswith(f"{f}{rendered}")


def test_read_history_reports_every_bad_row(tmp_path: Path) -> None:
    f = tmp_path / "h.csv"
    f.write_text("site,utilisation,p95_ms\nLIS,x,12\n\nLIS,0.5,y\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        read_history(f)
    assert [(p.line, p.place) for p in e.value.problems] == [(2, "utilisation"), (4, "p95_ms")]
    assert e.value.render() == (
        f"{f}:2: utilisation: not a number: 'x'\n{f}:4: p95_ms: not a number: 'y'"
    )


# --- the command line -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # rich's width when not on a terminal


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["control", "learn", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_table(history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["--history", str(history)], capsys)
    assert rc == 0, err
    assert err == ""
    assert "learned maximum thresholds (SLO: p95 20 ms)" in out
    first_lines = [ln for ln in out.splitlines() if ln.startswith("│ ") and ln.split()[1] != "│"]
    rows = {line.split()[1]: line for line in first_lines}
    assert list(rows) == ["LIS", "BCN", "AKL"]  # the file's order
    # LIS: the 20 spikes and one noisy point dropped, the crossing near sqrt(1/2)
    assert [c.strip() for c in rows["LIS"].split("│")[1:6]] == [
        "LIS",
        "379 / 21",
        "quadratic",
        "0.709",
        "0.996 / 0.966",
    ]
    assert "quadratic fit" in rows["LIS"]
    assert [c.strip() for c in rows["BCN"].split("│")[2:6]] == [
        "400 / 0",
        "linear",
        "0.751",
        "0.995 / 0.995",
    ]
    assert [c.strip() for c in rows["AKL"].split("│")[2:6]] == [
        "100 / 0",
        "static",
        "0.900",
        "0.021 / 0.007",
    ]
    assert rows["AKL"].split("│")[6].strip().startswith("fit too poor: R² 0.021 quadratic")
    assert "<- crosses the SLO" not in out  # the curve is for one --site only


def test_cli_one_site_prints_the_curve(history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["--history", str(history), "--site", "bcn"], capsys)
    assert rc == 0, err
    assert "│ BCN" in out
    assert "│ LIS" not in out
    assert "BCN: p95 of the linear fit (SLO 20 ms)" in out
    rows = [line for line in out.splitlines() if line.startswith("         0.") or "  1.00" in line]
    assert len(rows) == 15  # 0.30, 0.35, ..., 1.00
    marked = [line for line in rows if "<- crosses the SLO at 0.75" in line]
    assert len(marked) == 1
    assert marked[0].split()[0] == "0.80"  # the first grid point past the crossing 0.751
    for line in rows:
        u, p95 = (float(x) for x in line.split()[:2])
        assert p95 == pytest.approx(40 * u - 10, abs=0.5)
    assert "learned maximum 0.75" in out


def test_cli_one_static_site(history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["--history", str(history), "--site", "AKL", "--static", "0.8"], capsys)
    assert rc == 0
    assert "AKL: no fitted curve, the maximum is the static 0.80" in out


def test_cli_json(history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(
        ["--history", str(history), "--site", "LIS", "--site", "AKL", "--json", "--min", "0.75"],
        capsys,
    )
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["site"] for r in rows] == ["LIS", "AKL"]
    lis, akl = rows
    assert set(lis) == {
        "site",
        "value",
        "method",
        "reason",
        "n_used",
        "n_dropped",
        "r2_quadratic",
        "r2_linear",
        "quadratic",
        "linear",
        "slo_ms",
        "crossing",
        "clamped",
    }
    assert lis["method"] == "quadratic"
    assert lis["value"] == 0.75  # the crossing, about 0.707, raised to --min
    assert lis["clamped"] is True
    assert lis["crossing"] == pytest.approx(U_STAR_QUAD, abs=0.01)
    assert lis["n_used"] + lis["n_dropped"] == 400
    assert len(lis["quadratic"]) == 3
    assert len(lis["linear"]) == 2
    assert akl["method"] == "static"
    assert akl["value"] == 0.9
    assert akl["crossing"] is None


def test_cli_slo_option(history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["--history", str(history), "--site", "LIS", "--slo", "29", "--json"], capsys)
    assert rc == 0
    (lis,) = json.loads(out)
    assert lis["slo_ms"] == 29.0
    assert lis["value"] == pytest.approx(math.sqrt(0.8), abs=0.01)


def test_cli_unknown_site(history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["--history", str(history), "--site", "XYZ"], capsys)
    assert rc == 2
    assert out == ""
    assert err == (
        f"anyedge: error: {history}: --site: no samples of site XYZ (the file has AKL, BCN, LIS)\n"
    )


def test_cli_bad_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("time,site,utilisation,p95_ms\nt0,LIS,0.5,12\nt1,LIS,0.6,fast\n", encoding="utf-8")
    rc, out, err = run(["--history", str(f)], capsys)
    assert rc == 2
    assert out == ""
    assert err == f"anyedge: error: {f}:3: p95_ms: not a number: 'fast'\n"


def test_cli_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.csv"
    rc, out, err = run(["--history", str(missing)], capsys)
    assert rc == 2
    assert out == ""
    assert err.startswith(f"anyedge: error: {missing}: cannot read")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo", "0"], "command line: --slo: must be a latency above 0 ms"),
        (["--min", "0.9", "--max", "0.5"], "command line: --min/--max: need 0 <= lower <= upper"),
        (["--max", "0.85"], "command line: --static: must lie within the bounds 0.5..0.85"),
    ],
)
def test_cli_bad_options(
    history: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(["--history", str(history), *args], capsys)
    assert rc == 2
    assert out == ""
    assert err.startswith(f"anyedge: error: {message}")


def test_cli_needs_history(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run([], capsys)
    assert rc == 2
    assert "--history" in err
