"""Bulk tables of a topology as CSV: metros and eyeballs.

A world has thousands of metros and tens of thousands of (AS, metro) demand rows; YAML
is a poor home for them (slow to parse, noisy to read), so a topology may name a CSV
file for either table instead of listing it inline::

    internet:
      metros: metros.csv        # id,name,country,lat,lon,population
      eyeballs: eyeballs.csv    # asn,metro,rps,mix[,access_ms]

``mix`` is the plan shares separated by spaces, in the order of ``plans:``, or empty for
the default shares; ``access_ms``, a column only calibrated worlds write, is each
network's last mile in that metro.  Text is written in double quotes (numbers bare), so names with
commas, quotes, line breaks or surrounding spaces come back exactly.  Each row is
checked like its inline form; an error names the CSV file, the line and the column.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ...errors import InputError, Problem
from .schema import EyeballIn, MetroIn
from .text import read_text

COLUMNS: dict[str, tuple[type[BaseModel], tuple[str, ...]]] = {
    "metros": (MetroIn, ("id", "name", "country", "lat", "lon", "population")),
    "eyeballs": (EyeballIn, ("asn", "metro", "rps", "mix")),
}
OPTIONAL = {"eyeballs": ("access_ms",)}  # written only when some row has them


def read_table(path: Path, key: str) -> tuple[list[Any], list[int]]:
    """Rows of table ``key`` from ``path`` as validated models, with each row's line."""
    model, cols = COLUMNS[key]
    text = read_text(path, newline="")  # csv handles line ends
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    required = [c for c in cols if c != "mix"]
    if header is None or [h.strip() for h in header][: len(required)] != required:
        raise InputError.one(path, "header", f"the first line must be {','.join(cols)}", 1)
    names = [h.strip() for h in header]
    rows: list[Any] = []
    lines: list[int] = []
    problems: list[Problem] = []
    for raw in reader:
        ln = reader.line_num
        if not raw or all(not f.strip() for f in raw):
            continue
        if len(raw) != len(names):
            problems.append(Problem("", f"expected {len(names)} fields, got {len(raw)}", ln))
            continue
        # names keep their spaces (the writer quotes them); numbers may be padded
        row: dict[str, Any] = {
            k: f if k == "name" else f.strip() for k, f in zip(names, raw, strict=True)
        }
        if "mix" in row:
            try:
                row["mix"] = [float(x) for x in row["mix"].split()] if row["mix"] else None
            except ValueError:
                problems.append(
                    Problem("mix", f"plan shares must be numbers, got {row['mix']!r}", ln)
                )
                continue
        try:
            rows.append(model.model_validate(row, strict=False))
            lines.append(ln)
        except ValidationError as e:
            for err in e.errors():
                col = ".".join(str(x) for x in err["loc"])
                problems.append(Problem(col, f"{err['msg']} (got {err.get('input')!r})", ln))
        if len(problems) > 100:
            break
    if problems:
        raise InputError(path, problems)
    return rows, lines


def format_table(key: str, rows: list[dict[str, Any]]) -> str:
    """CSV text of ``rows``; text fields are quoted, so any name survives the trip."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    _, base = COLUMNS[key]
    cols = base + tuple(c for c in OPTIONAL.get(key, ()) if any(c in r for r in rows))
    out.write(",".join(cols) + "\n")
    for r in rows:
        vals: list[Any] = []
        for c in cols:
            v = r.get(c)
            if c == "mix":
                vals.append(" ".join(repr(float(x)) for x in v) if v else "")
            elif isinstance(v, bool) or v is None:
                vals.append(str(v))
            else:
                vals.append(v)  # str is quoted; int and float are written by repr
        w.writerow(vals)
    return out.getvalue()
