"""Progress display: a bar on a terminal, plain lines in logs and CI.

Long steps (simplification, candidate scoring, timing) must show they are
alive to a person, but a build log should not fill with redraw sequences.
Progress goes to standard output with the report, so standard error carries
only the one line of an error and a build step can show it as the reason.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_SILENT: ContextVar[bool] = ContextVar("onnxprune_progress_silent", default=False)


@contextmanager
def silenced(quiet: bool = True) -> Iterator[None]:
    """Within this block (when ``quiet``), :func:`progress` shows nothing: passes deep in the library report
    progress, and a caller that asked for quiet must not have to thread the flag through every one of them."""
    token = _SILENT.set(quiet or _SILENT.get())
    try:
        yield
    finally:
        _SILENT.reset(token)


def interactive() -> bool:
    """Whether standard output is a terminal a person is watching."""
    return sys.stdout.isatty()


@contextmanager
def progress(description: str, total: int | None = None, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(steps)`` callable; draw a bar only on a terminal.

    Without a terminal a single line announces the step, so logs show where a
    long run spent its time without any escape codes.
    """
    if quiet or _SILENT.get():
        yield _ignore
        return
    if not interactive():
        print(f"{description} ...", flush=True)
        yield _ignore
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)

        def advance(steps: int = 1) -> None:
            bar.advance(task, steps)

        yield advance


def _ignore(steps: int = 1) -> None:
    """``advance`` where nothing is drawn."""
