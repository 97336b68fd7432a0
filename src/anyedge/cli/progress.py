"""Progress for long work, on stderr so that stdout stays clean for ``--json``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def steps(title: str, names: list[str], quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A bar over named steps; call the yielded function with each step's name as it starts."""
    if quiet:
        yield lambda _: None
        return
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
