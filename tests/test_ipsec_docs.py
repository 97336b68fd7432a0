"""docs/ipsec.md: its Python example runs, and its table states what bench_ipsec measures."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ipsec.md"


def test_python_example_runs(capsys) -> None:  # type: ignore[no-untyped-def]
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    exec(compile(block, str(DOC), "exec"), {})
    spi, key_len = capsys.readouterr().out.split()
    assert spi.startswith("0x")
    assert key_len == "36"


def _row(text: str, start: str) -> list[float]:
    (line,) = [x for x in text.splitlines() if x.startswith(f"| {start}")]
    return [float(cell.split()[0].replace(",", "")) for cell in line.strip("|").split("|")[1:]]


def test_doc_ratios_follow_from_its_rates() -> None:
    """The table's ratio row is ours / strongSwan's of the rows above it, run by run."""
    text = DOC.read_text(encoding="utf-8")
    ours = _row(text, "handshakes/s over UDP, `anyedge ipsec serve`")
    swan = _row(text, "handshakes/s over UDP, strongSwan")
    ratio = _row(text, "ratio anyedge / strongSwan")
    assert len(ours) == len(swan) == len(ratio) == 2
    for o, s, r in zip(ours, swan, ratio, strict=True):
        assert abs(o / s - r) < 0.01
    assert "python bench/bench_ipsec.py" in text
