"""Progress for long work, on stderr so that stdout stays clean for ``--json``.

On a terminal it is a rich progress bar; when stderr is not a terminal (a log file, a
pipe, CI) it is plain lines, one per step and one per tenth of a long task, that read
well in a log and carry no control characters.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click


def plain() -> bool:
    """Whether progress goes out as plain lines (stderr is not a terminal)."""
    return not sys.stderr.isatty()


@contextmanager
def steps(title: str, names: list[str], quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A bar over named steps; call the yielded function with each step's name as it starts."""
    if quiet:
        yield lambda _: None
        return
    if plain():
        t0 = time.monotonic()
        done = 0

        def line(name: str) -> None:
            nonlocal done
            done += 1
            click.echo(f"{title}: {name} ({done}/{len(names)})", err=True)

        yield line
        click.echo(f"{title}: done in {time.monotonic() - t0:.1f} s", err=True)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[step]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(title, total=len(names), step="")
        started = False

        def step(name: str) -> None:
            nonlocal started
            if started:
                bar.advance(task)
            started = True
            bar.update(task, step=name)

        yield step
        bar.update(task, completed=len(names), step="done")


@contextmanager
def counted(
    title: str, total: int, unit: str, quiet: bool = False
) -> Iterator[Callable[[int], None]]:
    """Progress over ``total`` units of work; call the yielded function with how many
    more are done.  Off a terminal: a line at the start, at each quarter and at the end
    ("failover atlas, 1,234 scenarios: 25 % (3 s)")."""
    if quiet:
        yield lambda _: None
        return
    if plain():
        lines, done, what = Lines(), 0, f"{title}, {total:,} {unit}"

        def advance(n: int) -> None:
            nonlocal done
            done += n
            lines.update(what, done / total if total else 1.0)

        lines.update(what, 0.0)
        yield advance
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(title, total=total)
        yield lambda n: bar.advance(task, n)


class Lines:
    """Plain progress lines for tasks that report a fraction done: a line when a task
    starts, at each further quarter, and when it is done."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.quarter: dict[str, int] = {}

    def say(self, text: str) -> None:
        click.echo(f"{text} ({time.monotonic() - self.t0:.0f} s)", err=True)

    def update(self, task: str, fraction: float) -> None:
        q = min(4, int(fraction * 4 + 1e-9))
        if task not in self.quarter:
            self.quarter[task] = q
            self.say(f"{task}: started")
        elif q > self.quarter[task]:
            self.quarter[task] = q
            self.say(f"{task}: {'done' if q == 4 else f'{25 * q} %'}")
