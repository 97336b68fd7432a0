"""Shared fixtures, the hypothesis profile and the rules for the ``lab`` and ``slow``
markers.

``lab`` tests need root and network namespaces; where they cannot run they are skipped
with the reason, never silently passed.

The default day (``anyedge simulate`` with no argument: the default world, six runs of
24 hours) is the most expensive thing the suite does, so it is done once per test run,
by :func:`default_day_run`, through the real command; every test that needs the
default day's numbers, report or comparison takes them from that one run.

The suite runs on five workers (pytest-xdist, ``-n 5 --dist loadgroup
--no-loadscope-reorder`` in pyproject.toml) on two cores: many tests wait (on BGP
timers, servers, browsers), so a fifth worker computes while others wait.  (Measured
on a quiet 2-core machine, one run each: four workers 8 min 12 s of pytest and 760
CPU-s in all, the cores 77 % busy; six 6 min 33 s.)  Each test module is one group, so a
module's fixtures are built once.  The tests that run labs of BGP daemons are three
groups, each one lab at a time (their workers mostly wait on BGP timers); the other
tests that need root make namespaces of their own without BGP and stay in their
modules' groups.  The modules that read the default day share a group, so it is
simulated once.  The default and the small world are built once per run too, by the
first worker that asks, and read back by the others.  The three lab groups and the
default day go first, one to each worker (see ``_ORDER``).  (Measured: with one lab
group its ~9 minutes, one module after another, were the suite's whole time once numpy
ran on one BLAS thread.)
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from numpy.lib.stride_tricks import as_strided

from anyedge.model import World
from anyedge.model.worldgen import WorldOptions, build_world

HERE = Path(__file__).parent

# The suite starts hundreds of Python processes: its four workers, and the command line,
# the lab's services, probes and speakers.  Where PYTHONDONTWRITEBYTECODE is set, as in
# many container images, each of them would compile anyedge's sources again (~0.1 CPU-s
# a command) and each worker would rewrite every test module's asserts again (~5 CPU-s).
# The suite keeps bytecode, in the usual __pycache__ folders, which git ignores; the
# workers and every process they start inherit this environment.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    sys.dont_write_bytecode = False
DATA = HERE / "data"

# No deadlines: on a shared, busy machine one slow example is not a failure.  Example
# counts stay each test's own (modest) choice; the default here is hypothesis's 100.
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# modules that read the default day: one group, so the day is simulated once
DEFAULT_DAY_MODULES = {"test_sim", "test_readme_commands", "test_docs"}


# The modules whose tests run BGP daemons, in three groups of about the same time, each
# one lab at a time.  (Measured alone, in seconds: lab: lab 73, speakers 71, failover 69,
# edge 50, chaos 47-79, turn and bad_input ~40, prepend 17-31, delay 22; lab-b: generated 136, docs
# 71, control_run_lab ~40, dns 40, transit_lab ~20, dns_docs 17, policy 16; lab-c:
# operators 87, exit_status 64-94, model_faults 54, faults 50, dns_rtt ~45, lab_transit
# and transit_announce ~10 each, vty ~8.  dns, delay, prepend and policy were lab-c's, which had
# become the longest, ~470 s against ~300.)  Other tests marked ``lab`` make namespaces
# of their own without BGP (the edge's, the delay lines', Magic Transit's firewalls and
# tunnels, the controller's actuators): their module's group.
LAB_GROUPS = {
    "test_lab": "lab",
    "test_lab_speakers": "lab",
    "test_lab_failover": "lab",
    "test_lab_edge": "lab",
    "test_lab_turn": "lab",
    "test_cli_bad_input": "lab",
    "test_lab_delay": "lab",
    "test_lab_prepend": "lab",
    "test_lab_chaos": "lab",
    "test_lab_generated": "lab-b",
    "test_lab_docs": "lab-b",
    "test_lab_dns_docs": "lab-b",
    "test_lab_dns": "lab-b",
    "test_transit_lab": "lab-b",
    "test_control_run_lab": "lab-b",
    "test_lab_policy": "lab-b",
    "test_exit_status": "lab-c",
    "test_lab_operators": "lab-c",
    "test_lab_hotpotato": "lab-c",
    "test_lab_dns_rtt": "lab-c",
    "test_transit_announce": "lab-c",
    "test_lab_transit": "lab-c",
    "test_lab_faults": "lab-c",
    "test_lab_model_faults": "lab-c",
    "test_lab_ipv6": "lab-c",
    "test_lab_vty": "lab-c",
}


# The order groups are handed out in (``--no-loadscope-reorder``: xdist keeps it rather
# than sorting groups by their number of tests): the longest first, one to each
# worker, then the next longest, so that no two long ones share a worker.  (Measured: on
# xdist's order by test count the default day and lab-b shared one, which took 450 s
# while the others took 360-390 s.)
_ORDER = {
    g: i
    for i, g in enumerate(
        [
            "lab",
            "lab-b",
            "lab-c",
            "default_day",
            "test_cli_bad_input",
            "test_store",
            "test_turn_interop_coturn",
            "test_control_run",
            "test_routing_properties",
            "test_edge_pmtud",
            "test_predict",
            "test_routing_bgpy",
        ]
    )
}


def _group(item: pytest.Item) -> str:
    module = item.path.stem
    if "lab" in item.keywords and module in LAB_GROUPS:
        return LAB_GROUPS[module]
    return "default_day" if module in DEFAULT_DAY_MODULES else module


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    labs = {i.path.stem for i in items if "lab" in i.keywords}
    stray = {m for m in labs if m.startswith("test_lab")} - LAB_GROUPS.keys()
    if stray:  # a lab of BGP daemons running beside the others would be a surprise
        raise pytest.UsageError(f"tests/conftest.py: give {', '.join(sorted(stray))} a LAB_GROUPS")
    items.sort(key=lambda item: _ORDER.get(_group(item), len(_ORDER)))  # stable sort
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="lab tests need root (network namespaces)")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


def _built_once(name: str, options: WorldOptions, factory: pytest.TempPathFactory) -> World:
    """A generated world, built by the first worker that asks and read back by the others
    from a pickle in the run's shared temporary directory (under a lock), so that a run
    builds it once rather than once per worker."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build_world(options)
    shared = factory.getbasetemp().parent  # the same for every worker of this run
    path = shared / f"{name}.pickle"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            world: World = pickle.loads(path.read_bytes())
            return world
        world = build_world(options)
        tmp = path.with_suffix(".part")
        with open(tmp, "wb") as f:
            _KeepReadOnly(f, protocol=pickle.HIGHEST_PROTOCOL).dump(world)
        tmp.replace(path)
        return world


class _KeepReadOnly(pickle.Pickler):
    """Pickles a world's read-only arrays as read-only views (numpy's own pickling
    would bring them back writable), so that a test that changes the shared world by
    mistake still fails where it does."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray and not obj.flags.writeable:
            return as_strided, (np.array(obj), None, None, False, False)
        return NotImplemented


@pytest.fixture(scope="session")
def default_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The default 300-site world, built once per test run."""
    return _built_once("default-world", WorldOptions(), tmp_path_factory)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A 40-site world, quick to build and save."""
    options = WorldOptions(sites=40, mcp=5, min_city_population=500_000)
    return _built_once("small-world", options, tmp_path_factory)


@dataclass(frozen=True)
class DefaultDay:
    """One run of ``anyedge simulate --json --report REPORT`` on the default day."""

    comparison: Any  # anyedge.sim.Comparison, as the command computed it
    summary: dict[str, Any]  # what the command printed
    report: Path  # the HTML report it wrote

    def failed_pct(self, mode: str) -> float:
        t = self.summary["runs"][mode]
        return 100.0 * float(t["failed"]) / float(t["requests"])

    def slo_minutes(self, mode: str) -> float:
        return float(self.summary["runs"][mode]["slo_breach_minutes"])


@pytest.fixture(scope="session")
def default_day_run(default_world: World, tmp_path_factory: pytest.TempPathFactory) -> DefaultDay:
    """``anyedge simulate --json --report …`` on the default day, run once per test
    run through the command itself (in this process, so its comparison is kept too).
    The command builds the default world as ``default_world`` does; it is given that
    one rather than building it again."""
    from anyedge.cli import simulate as cli_simulate
    from anyedge.cli.main import main
    from anyedge.sim import Twin

    report = tmp_path_factory.mktemp("default-day") / "anyedge-report.html"
    kept: list[Any] = []
    compare = Twin.compare

    def keep(self: Twin, *args: Any, **kwargs: Any) -> Any:
        kept.append(compare(self, *args, **kwargs))
        return kept[-1]

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Twin, "compare", keep)
        mp.setattr(cli_simulate, "world_from", lambda _topology: default_world)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["simulate", "--json", "--report", str(report)])
    assert rc == 0, err.getvalue()
    assert len(kept) == 1
    return DefaultDay(comparison=kept[0], summary=json.loads(out.getvalue()), report=report)


@pytest.fixture(scope="session")
def default_day(default_day_run: DefaultDay) -> Any:
    """The default day's :class:`anyedge.sim.Comparison` (its reference runs are the
    same day with an empty event list), from the session's one simulation."""
    return default_day_run.comparison
