"""The Python example of docs/routing.md runs and says what it claims."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_routing_doc_example_runs() -> None:
    text = (ROOT / "docs" / "routing.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/routing.md", "exec"), {})
    assert out.getvalue().strip() == "AKL"
