"""Run independent evaluations (candidate plans, sensitivity probes) in-process or in local worker processes.

The searches only ever call :meth:`Executor.map` with a picklable evaluator
and a list of tasks, so another backend (a cluster queue, say) plugs in
without touching them.  A process pool receives the evaluator once per
worker, not once per task: evaluators carry a model and calibration data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any, Protocol, TypeVar, cast

Task = TypeVar("Task")
Result = TypeVar("Result")


class Executor(Protocol):
    """Evaluates ``evaluator(task)`` for every task; results come back in task order."""

    def map(self, evaluator: Callable[[Task], Result], tasks: Sequence[Task], done: Callable[[int], None] | None = None) -> list[Result]:
        """``done(1)`` is called as each task finishes (for progress)."""
        ...


class InProcess:
    """One task after another in this process (the default: no start-up cost, no pickling)."""

    def map(self, evaluator: Callable[[Task], Result], tasks: Sequence[Task], done: Callable[[int], None] | None = None) -> list[Result]:
        results = []
        for task in tasks:
            results.append(evaluator(task))
            if done is not None:
                done(1)
        return results


class LocalProcesses:
    """``jobs`` worker processes on this machine, each with its own copy of the evaluator."""

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}")
        self.jobs = jobs

    def map(self, evaluator: Callable[[Task], Result], tasks: Sequence[Task], done: Callable[[int], None] | None = None) -> list[Result]:
        if self.jobs == 1 or len(tasks) < 2:
            return InProcess().map(evaluator, tasks, done)
        with ProcessPoolExecutor(min(self.jobs, len(tasks)), initializer=partial(_install, evaluator)) as pool:
            results: list[Result] = []
            for result in pool.map(_evaluate, tasks):
                results.append(cast(Result, result))
                if done is not None:
                    done(1)
            return results


def executor_for(jobs: int) -> Executor:
    """In-process for one job, else a local process pool."""
    return InProcess() if jobs <= 1 else LocalProcesses(jobs)


_installed: Callable[[Any], object] | None = None


def _install(evaluator: Callable[[Any], object]) -> None:
    global _installed
    _installed = evaluator


def _evaluate(task: object) -> object:
    assert _installed is not None, "worker started without an evaluator"
    return _installed(task)
