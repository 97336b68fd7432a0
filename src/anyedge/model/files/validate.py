"""A YAML document checked against a pydantic model, with every problem in its place.

The fast loader reads the text (refusing a key given twice); pydantic checks it; each
problem becomes a :class:`~anyedge.errors.Problem` with the file, the line and the place
(``listen[1].port``), for exit status 2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ...errors import InputError, Problem
from .yamlpos import _Loader, line_of, place

M = TypeVar("M", bound=BaseModel)


def parse_model(
    text: str,
    file: str | Path,
    model: type[M],
    what: str,
    message: Callable[[Any], str] | None = None,
) -> M:
    """``text`` as ``model``.  ``what`` is the problem to report for a document that is
    not even a mapping ("a scenario is a YAML mapping (...)"); ``message`` words a
    pydantic error (default: pydantic's own words, with the value that was given)."""
    word = message or _message
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = int(mark.line) + 1 if mark is not None else None
        raise InputError.one(
            file, "", f"not valid YAML: {getattr(e, 'problem', e)}", line
        ) from None
    if not isinstance(data, dict):
        raise InputError.one(file, "", what)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InputError(
            file,
            [
                Problem(place(tuple(err["loc"])), word(err), line_of(text, tuple(err["loc"])))
                for err in e.errors()
            ],
        ) from None


def _message(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if "input" in err and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return msg
