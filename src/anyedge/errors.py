"""Errors that reach the user.

anyedge separates two kinds of failure.  An :class:`InputError` is the user's to fix:
a file that does not parse, a name that is not defined, a number out of range.  It
carries the file, the place in the file (a line number, a path such as
``sites[3].sections[0].servers``, or both) and what is wrong, and the command line turns
it into one line on stderr and exit status 2.  Anything else is a bug in anyedge and
keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input: where it is and what it is."""

    place: str
    message: str
    line: int | None = None
    file: str | Path | None = None  # when it is not the file of the whole error

    def render(self, file: str | Path | None) -> str:
        file = self.file if self.file is not None else file
        where = [str(file)] if file is not None else []
        if self.line is not None:
            where.append(str(self.line))
        head = ":".join(where)
        parts = [p for p in (head, self.place) if p]
        return ": ".join([*parts, self.message])


class InputError(Exception):
    """Bad input, with every problem found in it (the first few are shown)."""

    def __init__(self, file: str | Path | None, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("InputError needs at least one problem")
        self.file = file
        self.problems = problems
        super().__init__(self.render())

    @classmethod
    def one(
        cls, file: str | Path | None, place: str, message: str, line: int | None = None
    ) -> InputError:
        return cls(file, [Problem(place, message, line)])

    def render(self, limit: int = 10) -> str:
        lines = [p.render(self.file) for p in self.problems[:limit]]
        rest = len(self.problems) - limit
        if rest > 0:
            lines.append(f"... and {rest} more problem{'s' if rest > 1 else ''}")
        return "\n".join(lines)
