"""``anyedge ipsec serve`` refuses bad input before it touches the network: exit status
2, one line naming the option or file and what is wrong, no traceback, nothing made."""

from __future__ import annotations

from pathlib import Path

import pytest

from anyedge.cli.main import main

BASE = ["ipsec", "serve", "--local-ts", "198.51.100.0/24", "--remote-ts", "203.0.113.0/24"]


@pytest.fixture
def psk(tmp_path: Path) -> Path:
    p = tmp_path / "psk"
    p.write_text("correct horse battery staple\n")
    return p


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--listen", "not-an-address"], "--listen: 'not-an-address' is not an IPv4 address"),
        (
            ["--listen", "192.0.2.1", "--psk-file", "SHORT"],
            "the pre-shared key must be at least 8 bytes",
        ),
        (["--listen", "192.0.2.1", "--psk-file", "MISSING"], "cannot read the pre-shared key"),
        (
            ["--listen", "192.0.2.1", "--remote-ts", "203.0.113.0/33"],
            "--remote-ts: '203.0.113.0/33'",
        ),
        (
            ["--listen", "192.0.2.1", "--server-index", "2", "--servers", "2"],
            "--server-index: 2 is not below",
        ),
        (
            ["--listen", "192.0.2.1", "--store", "127.0.0.1:7400"],
            "--fleet-key-file: is needed with --store",
        ),
        (
            ["--listen", "192.0.2.1", "--store", "127.0.0.1:7400", "--fleet-key-file", "SHORT"],
            "the fleet key must be 32 bytes",
        ),
        (["--listen", "192.0.2.1", "--store", "nope"], "'nope' is not HOST:PORT"),
        (["--listen", "192.0.2.1", "--cert", "SHORT"], "--key: --cert, --key and --ca go together"),
        (
            ["--listen", "192.0.2.1", "--cert", "SHORT", "--key", "SHORT", "--ca", "SHORT"],
            "not PEM of the right kind",
        ),
        (["--listen", "192.0.2.1", "--psk-file", "NONE"], "give a pre-shared key or --cert"),
    ],
)
def test_bad_input_exits_2(
    args: list[str], expected: str, psk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short"
    short.write_text("x")
    names = {"SHORT": str(short), "MISSING": str(tmp_path / "missing")}
    args = [names.get(a, a) for a in args]
    if "NONE" in args:  # no key of any kind
        args = args[: args.index("--psk-file")]
    elif "--psk-file" not in args:
        args += ["--psk-file", str(psk)]
    assert main([*BASE, *args]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert err.count("\n") <= 4
