"""``anyedge lab dns|dig|health|drain|verfploeter|rtt`` refuse bad input (exit 2) and a missing
lab (exit 3) with one line naming the place, before anything is made; no root needed."""

from __future__ import annotations

from pathlib import Path

from test_cli_bad_input import refused


def test_health_refuses_a_dead_man_timer_shorter_than_the_interval() -> None:
    refused(
        "lab",
        "health",
        "--interval",
        "1",
        "--deadman",
        "0.5",
        says="--deadman: 0.5 s must be longer than --interval",
    )


def test_health_refuses_a_rise_of_zero() -> None:
    refused("lab", "health", "--rise", "0", says="--rise")


def test_the_dns_commands_need_a_lab(tmp_path: Path) -> None:
    for cmd in (["dns"], ["dig"], ["drain", "CHC"], ["verfploeter"], ["health-log"], ["rtt"]):
        refused("lab", *cmd, "--dir", str(tmp_path / "none"), says="no lab here", status=3)


def test_dns_refuses_a_store_that_is_not_host_port() -> None:
    refused("lab", "dns", "--store", "localhost", says="--store")
    refused("lab", "dns", "--store", "127.0.0.1:99999", says="is not HOST:PORT")


def test_rtt_refuses_a_count_of_zero() -> None:
    refused("lab", "rtt", "--count", "0", says="--count")
