"""Every exit status the commands document.

0 when all went well; 1 when ``lab compare`` or ``lab predict`` finds model and lab
disagreeing, or ``turn serve`` cannot serve; 2 for bad input (usage errors included);
3 when the lab could not do it; ``lab exec`` exits with its command's own status.  Each
run must also keep tracebacks off stderr.  The statuses came back as 0 once (issue 12):
the entry point dropped what click handed back.

A real ``python -m anyedge`` process (about 2 s each) carries each status once — 0, 1,
2, 3, a usage error and ``lab exec``'s own — so what the process exits with is what
:func:`anyedge.cli.main.main` returns; the many commands behind each status are then
checked in this process, through ``main`` itself.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

from anyedge.cli.main import cli, main
from anyedge.lab import build
from anyedge.lab.measure import Announcer, dominant, probe_all
from anyedge.lab.plan import TEST_PREFIX, LabPlan, make_plan
from anyedge.model.files import load_world
from lab_support import DATA, lab_directory, tear_down

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
TINY = str(DATA / "tiny.yaml")
LAB3 = str(DATA / "lab3.yaml")
OBSERVATION = str(ROOT / "docs" / "examples" / "observation.json")


def anyedge(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``anyedge ARGS`` in its own process (``env``: this tree's package by default);
    stderr must hold no traceback whatever the status."""
    r = subprocess.run(
        [sys.executable, "-m", "anyedge", *args],
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in r.stderr, r.stderr
    return r


def status(*args: str) -> int:
    return anyedge(*args).returncode


def in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``anyedge ARGS`` through :func:`main`, as ``python -m anyedge`` runs it: the
    status and stderr (an exception would escape ``main`` and fail the test)."""
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return rc, err


def test_a_real_process_exits_with_what_main_returns(tmp_path: Path) -> None:
    """0, 2 (bad input and a usage error) and 3 from a real process, as ``main`` gives them."""
    assert status("world", "-t", TINY, "--json") == 0
    r = anyedge("predict", "-t", TINY, "--site", "XXX")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("anyedge: error: "), r.stderr
    r = anyedge("nosuch")
    assert r.returncode == 2, r.stderr
    assert "anyedge: error: " in r.stderr, r.stderr
    r = anyedge("lab", "status", "--dir", str(tmp_path))
    assert r.returncode == 3, r.stderr


# ---------------------------------------------------------------- everywhere: 0 and 2


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert status("--help") == 0
    assert in_process(["--version"], capsys)[0] == 0
    assert in_process(["lab", "exec", "--help"], capsys)[0] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["nosuch"],
        ["world", "--bogus"],
        ["lab", "compare", "--flows", "0"],
        ["turn", "credential"],  # --secret is required
    ],
    ids=["command", "option", "range", "missing"],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = in_process(args, capsys)
    assert rc == 2, err
    assert "anyedge: error: " in err, err


def _ctx_exit() -> None:
    click.get_current_context().exit(5)


def _exit_exception() -> None:
    raise click.exceptions.Exit(6)


def _sys_exit() -> None:
    sys.exit(7)


def _sys_exit_message() -> None:
    sys.exit("gave up")


@pytest.mark.parametrize(
    ("callback", "want"),
    [
        (lambda: None, 0),
        (lambda: 4, 4),
        (_ctx_exit, 5),
        (_exit_exception, 6),
        (_sys_exit, 7),
        (_sys_exit_message, 1),
        (lambda: 256, 1),  # the system would make it 0
        (lambda: {"not": "a status"}, 0),
    ],
    ids=["none", "return", "ctx.exit", "Exit", "sys.exit", "sys.exit-text", "256", "dict"],
)
def test_the_entry_point_passes_on_what_a_command_gives(
    callback: Callable[[], object], want: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """In one process, with a command made for the test: every way of giving a status."""
    cli.add_command(click.command("exit-probe")(callback))
    try:
        assert main(["exit-probe"]) == want
    finally:
        cli.commands.pop("exit-probe")
    if callback is _sys_exit_message:
        assert "anyedge: error: gave up" in capsys.readouterr().err


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scenario, a latency history and a TURN configuration, good and bad."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "day.yaml").write_text(
        "duration: 30m\nevents:\n  - {at: 5m, for: 10m, kind: site_dark, site: CHC}\n"
    )
    rows = [f"{60 * i},CHC,{0.3 + i / 200:.3f},{5 + 20 * (i / 100) ** 2:.2f}" for i in range(100)]
    (d / "history.csv").write_text("time,site,utilisation,p95_ms\n" + "\n".join(rows) + "\n")
    (d / "turn.yaml").write_text(
        "realm: x\nlisten: [{transport: udp, address: 127.0.0.1, port: 3478}]\n"
        "relay: {ipv4: 127.0.0.1, ports: [40000, 40999]}\n"
        "auth: {fleet_keys: [a-fleet-key], users: {alice: wonderland}}\n"
    )
    (d / "bad.yaml").write_text("realm: x\nlisten: [{transport: tls, port: 70000}]\n")
    return d


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        (["world", "-t", TINY, "--json"], ["world", "--sites", "0"]),
        (["catchment", "-t", TINY, "--json"], ["catchment", "-t", TINY, "--withdraw", "XXX"]),
        (["predict", "-t", TINY, "--site", "CHC"], ["predict", "-t", TINY, "--site", "XXX"]),
        (
            ["simulate", "{d}/day.yaml", "-t", TINY, "--no-report", "--json"],
            ["simulate", "{d}/missing.yaml", "-t", TINY, "--no-report"],
        ),
        (
            ["control", "learn", "--history", "{d}/history.csv"],
            ["control", "learn", "--history", "{d}/history.csv", "--site", "XXX"],
        ),
        (
            ["control", "plan", "--input", OBSERVATION],
            ["control", "plan", "--input", "{d}/missing.json"],
        ),
        (["turn", "check", "-c", "{d}/turn.yaml"], ["turn", "check", "-c", "{d}/bad.yaml"]),
        (["turn", "credential", "--secret", "s3cret-2026"], ["turn", "credential", "--ttl", "0"]),
        (
            ["lab", "generate", "--seed", "2", "-o", "{d}/lab.yaml"],
            ["lab", "generate", "-o", "{d}/no/such/dir/lab.yaml"],
        ),
        (
            ["lab", "generate", "--routers", "5", "--sites", "2"],
            ["lab", "up", "-t", TINY, "--dir", "{d}/lab"],  # no lab: part
        ),
    ],
    ids=lambda a: " ".join(a[:2]) if a[0] in ("control", "turn", "lab") else a[0],
)
def test_commands_exit_0_on_success_and_2_on_bad_input(
    good: list[str], bad: list[str], inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = in_process([a.format(d=inputs) for a in good], capsys)
    assert rc == 0, err
    rc, err = in_process([a.format(d=inputs) for a in bad], capsys)
    assert rc == 2, err
    assert err.startswith(("anyedge: error: ", "Usage: ")), err


# ---------------------------------------------------------------------- turn serve


def _taken_port() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def _turn_config(d: Path, port: int, workers: int, tls: bool = False) -> Path:
    listen = f"{{transport: udp, address: 127.0.0.1, port: {port}}}"
    if tls:  # a certificate that does not load
        (d / "cert.pem").write_text("not a certificate\n")
        listen = (
            f"{{transport: tls, address: 127.0.0.1, port: {port}, cert: cert.pem, key: cert.pem}}"
        )
    conf = d / f"turn-{workers}-{tls}.yaml"
    conf.write_text(
        f"realm: x\nlisten: [{listen}]\n"
        "relay: {ipv4: 127.0.0.1, ports: [20000, 20999]}\n"  # below the ephemeral ports
        "auth: {fleet_keys: [a-fleet-key], users: {alice: wonderland}}\n"
        f"workers: {workers}\n"
    )
    return conf


@pytest.mark.parametrize(("workers", "tls"), [(1, False), (2, False), (2, True)])
def test_turn_serve_exits_1_when_it_cannot_serve(tmp_path: Path, workers: int, tls: bool) -> None:
    with _taken_port() as taken:
        port = taken.getsockname()[1]
        if tls:  # a free TCP port: the certificate is what fails
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        r = anyedge("turn", "serve", "-c", str(_turn_config(tmp_path, port, workers, tls)))
    assert r.returncode == 1, r.stderr
    assert "cannot serve" in r.stderr
    assert "PEM" in r.stderr if tls else "Address already in use" in r.stderr


def test_turn_serve_exits_0_when_stopped_and_2_on_a_bad_config(tmp_path: Path) -> None:
    with _taken_port() as s:
        port = s.getsockname()[1]
    conf = _turn_config(tmp_path, port, 2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "anyedge", "turn", "serve", "-c", str(conf)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    r = anyedge("turn", "serve", "-c", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2, r.stderr


# ------------------------------------------------------------------------ the lab: 3

LAB_COMMANDS = [
    ["status"],
    ["exec", "c1", "--", "true"],
    ["probe"],
    ["compare"],
    ["predict"],
    ["withdraw", "CHC"],
    ["announce", "CHC"],
    ["forward", "CHC", "--to", "AKL", "--share", "0"],
    ["failover"],
    ["control", "--duration", "1"],
    ["turn", "--user", "alice:wonderland"],
    ["down"],
]


@pytest.mark.parametrize("args", LAB_COMMANDS, ids=lambda a: a[0])
def test_lab_commands_exit_3_without_a_lab(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = in_process(["lab", args[0], "--dir", str(tmp_path), *args[1:]], capsys)
    assert rc == 3, err
    assert "no lab here" in err or "needs root" in err, err


# -------------------------------------------------------- the lab for real: 0, 1, 2, exec


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[LabPlan, Path]]:
    """The three-site lab, brought up and taken down with ``anyedge lab``; whatever
    happens, nothing of it is left."""
    name = "x" + secrets.token_hex(3)
    d = lab_directory()
    plan = make_plan(load_world(Path(LAB3)), name)
    pids: list[int] = []
    try:
        r = anyedge("lab", "up", "-t", LAB3, "--dir", str(d), "--name", name)
        assert r.returncode == 0, r.stderr
        pids = [p for ps in build.LabState.load(d).pids.values() for p in ps]
        yield plan, d
        r = anyedge("lab", "down", "--dir", str(d), timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        tear_down(d, name, pids)  # up or a test failed: clean up all the same


def lab_status(d: Path, command: str, *args: str) -> int:
    return anyedge("lab", command, "--dir", str(d), *args).returncode


@pytest.mark.lab
@pytest.mark.slow
def test_lab_exec_exits_with_the_commands_own_status(lab: tuple[LabPlan, Path]) -> None:
    _, d = lab
    assert lab_status(d, "exec", "c1", "--", "true") == 0
    assert lab_status(d, "exec", "c1", "--", "false") == 1
    assert lab_status(d, "exec", "c1", "--", "sh", "-c", "exit 7") == 7
    # ended by a signal: 128 + its number, as a shell reports it
    assert lab_status(d, "exec", "c1", "--", "sh", "-c", "kill -TERM $$") == 128 + 15
    assert lab_status(d, "exec", "nosuch", "--", "true") == 2


def _chc_networks(plan: LabPlan, d: Path, *changes: str) -> int:
    """Change what CHC's FRR announces, through ``lab exec``, behind the lab's back: its
    state, and so the model, still say that CHC announces everything."""
    vty = ["vtysh", "--vty_socket", str(build.node_dir(d, "chc"))]
    conf = ["configure terminal", f"router bgp {plan.node('chc').asn}"]
    conf += ["address-family ipv4 unicast", *changes]
    return lab_status(d, "exec", "chc", "--", *vty, *[a for c in conf for a in ("-c", c)])


@pytest.mark.lab
@pytest.mark.slow
def test_compare_and_predict_exit_1_when_model_and_lab_disagree(
    lab: tuple[LabPlan, Path],
) -> None:
    plan, d = lab
    prefixes = [plan.prefixes[0], TEST_PREFIX]
    assert _chc_networks(plan, d, *[f"no network {p}" for p in prefixes]) == 0
    try:
        Announcer(plan, d).settle()
        # the lab sends c1 to AKL now; the model, told CHC still announces, keeps it at CHC
        assert dominant(probe_all(plan, ["c1"], flows=5)["c1"]) == "AKL"
        r = anyedge("lab", "compare", "--dir", str(d), "--no-withdraw", "--flows", "5", "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        rows = json.loads(r.stdout)["rows"]
        assert [(x["client"], x["model"], x["lab"]) for x in rows if not x["agree"]] == [
            ("c1", "CHC", "AKL")
        ]
        r = anyedge("lab", "predict", "--dir", str(d), "CHC", "--flows", "5", "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        (chc,) = json.loads(r.stdout)
        assert (chc["clients"], chc["model_clients"], chc["agree"]) == ([], ["c1"], False)
    finally:
        restore = [f"network {p} route-map ORIGIN-P0" for p in prefixes]
        assert _chc_networks(plan, d, *restore) == 0
        Announcer(plan, d).settle()
    # model and lab agree again: 0
    assert dominant(probe_all(plan, ["c1"], flows=5)["c1"]) == "CHC"
    assert lab_status(d, "compare", "--no-withdraw", "--flows", "5") == 0
    assert lab_status(d, "predict", "CHC", "--flows", "5") == 0


@pytest.mark.lab
@pytest.mark.slow
@pytest.mark.parametrize(
    ("ok", "bad"),
    [
        (["status"], ["status", "--bogus"]),
        (["probe", "--flows", "5"], ["probe", "--plan", "nosuch"]),
        (["compare", "--flows", "5"], ["compare", "--flows", "0"]),
        (["predict", "--flows", "5"], ["predict", "XXX"]),
        (["withdraw", "SYD"], ["withdraw", "XXX"]),
        (["announce", "SYD"], ["announce", "XXX"]),
        (
            ["forward", "CHC", "--to", "AKL", "--share", "0"],
            ["forward", "CHC", "--to", "SYD", "--share", "0"],  # no backbone link
        ),
        (["failover", "CHC"], ["failover", "XXX"]),
        (["control", "--duration", "1"], ["control", "--duration", "0"]),
        (["turn", "--user", "alice:wonderland"], ["turn", "--user", "alice"]),
    ],
    ids=lambda a: a[0],
)
def test_lab_commands_exit_0_and_2(
    lab: tuple[LabPlan, Path], ok: list[str], bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command works on the running lab in a process of its own; its bad input is
    refused through ``main`` in this process (a real process carried 2 once, above)."""
    _, d = lab
    r = anyedge("lab", ok[0], "--dir", str(d), *ok[1:])
    assert r.returncode == 0, r.stdout + r.stderr
    rc, err = in_process(["lab", bad[0], "--dir", str(d), *bad[1:]], capsys)
    assert rc == 2, err
    assert err.startswith(("anyedge: error: ", "Usage: ")), err
