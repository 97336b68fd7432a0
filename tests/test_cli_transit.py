"""``anyedge transit``: customers from a file into a real embedded store, and back.

Bad input names the file and the place, exits with status 2 and writes nothing; good
input is written in one transaction and read back by ``list`` from a fresh replica.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anyedge.cli.main import main
from anyedge.store import EmbeddedWriter

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "transit-acme.yaml"


@pytest.fixture
def writer(tmp_path: Path) -> EmbeddedWriter:
    w = EmbeddedWriter(tmp_path / "config.db")
    yield w
    w.close()


def connect(w: EmbeddedWriter) -> list[str]:
    host, port = w.address
    return ["--connect", f"{host}:{port}"]


def test_bad_customers_are_refused_and_nothing_is_written(
    writer: EmbeddedWriter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        EXAMPLE.read_text()
        .replace("ports: [20, 21]", "ports: [20, 70000]")
        .replace("key: 7}", "key: -1}")
    )
    assert main(["transit", "put", str(bad), *connect(writer)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: customers[0].rules[1].ports" in err
    assert f"{bad}: customers[1].tunnel.key" in err
    assert writer.seq == 0
    dup = tmp_path / "dup.yaml"
    dup.write_text(
        "- {id: a, prefixes: [192.0.2.0/24], tunnel: {router: 198.51.100.2, key: 1}}\n"
        "- {id: a, prefixes: [192.0.2.0/24], tunnel: {router: 198.51.100.2, key: 1}}\n"
    )
    assert main(["transit", "put", str(dup), *connect(writer)]) == 2
    assert "[1].id: customer 'a' twice" in capsys.readouterr().err
    clash = tmp_path / "clash.yaml"
    clash.write_text(
        "- {id: a, prefixes: [192.0.2.0/24], tunnel: {router: 198.51.100.2, key: 1}}\n"
        "- {id: b, prefixes: [192.0.2.128/25], tunnel: {router: 198.51.100.3, key: 2}}\n"
    )
    assert main(["transit", "put", str(clash), *connect(writer)]) == 2
    assert (
        "[1]: prefix 192.0.2.128/25 overlaps customer a's 192.0.2.0/24" in capsys.readouterr().err
    )
    assert main(["transit", "put", str(tmp_path / "missing.yaml"), *connect(writer)]) == 2
    assert writer.seq == 0


def test_a_customer_clashing_with_one_in_the_store_is_refused(
    writer: EmbeddedWriter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The appliers would refuse it on every server; ``put`` says so before writing."""
    assert main(["transit", "put", str(EXAMPLE), *connect(writer)]) == 0  # acme and beta
    capsys.readouterr()
    seq = writer.seq
    new = tmp_path / "new.yaml"
    new.write_text(
        "- {id: gamma, prefixes: [100.64.10.0/24], tunnel: {router: 198.51.100.9, key: 7}}\n"
        "- {id: delta, prefixes: [198.51.100.128/26], tunnel: {router: 198.51.100.9, key: 99}}\n"
    )
    assert main(["transit", "put", str(new), *connect(writer)]) == 2
    err = capsys.readouterr().err
    assert f"{new}: gamma: GRE key 7 is customer beta's in the store" in err
    assert f"{new}: delta: prefix 198.51.100.128/26 overlaps customer beta's" in err
    assert writer.seq == seq  # nothing written
    # a file that replaces beta itself may keep beta's key and prefixes
    beta = tmp_path / "beta.yaml"
    beta.write_text(
        "{id: beta, prefixes: [198.51.100.128/25], tunnel: {router: 192.0.2.77, key: 7}}\n"
    )
    assert main(["transit", "put", str(beta), *connect(writer)]) == 0
    assert writer.seq == seq + 1


def test_put_list_remove(writer: EmbeddedWriter, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transit", "put", "--json", str(EXAMPLE), *connect(writer)]) == 0
    assert json.loads(capsys.readouterr().out) == {"acme": 1, "beta": 1}
    assert main(["transit", "list", "--json", *connect(writer)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(listed["customers"]) == ["acme", "beta"]
    assert listed["customers"]["acme"]["rules"][1]["ports"] == [20, 21]
    assert main(["transit", "remove", "acme", *connect(writer)]) == 0
    assert capsys.readouterr().out.strip() == "2"
    assert main(["transit", "list", *connect(writer)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("beta: 198.51.100.128/25, 2001:db8:be7a::/48; GRE to 192.0.2.77 key 7")
