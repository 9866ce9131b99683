"""Tasks: where prompts, held-out sets and the verifier of an answer come from.

A task is any class with the methods of `Task` below (no base class to inherit). Built-ins are named in
the config by a short name; a user's own task by its import path, `my_pkg.tasks:MyTask`.
Problem rows are plain dicts with the columns listed in `PROBLEM_COLUMNS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from flywheel.schema import PROBLEM_COLUMNS  # noqa: F401  (re-exported: the columns of a problem row)


@dataclass(frozen=True)
class Verdict:
    correct: bool
    score: float
    reason: str


@runtime_checkable
class Task(Protocol):
    def prompts(self, iteration: int, n: int, seed: int) -> list[dict[str, Any]]:
        """The `n` problems to sample answers for in `iteration` (never overlapping the held-out sets)."""

    def eval_sets(self, per_difficulty: int, seed: int) -> list[dict[str, Any]]:
        """Held-out problems, `per_difficulty` per difficulty level."""

    def seed_set(self, seed: int) -> list[dict[str, Any]]:
        """Labelled easy problems for the warm start and the curate mix: problem columns + 'completion'."""

    def verify(self, problem: dict[str, Any], completion: str) -> Verdict:
        """Score one completion of one problem.

        A task may also define `verify_batch(samples: pandas.DataFrame) -> list[Verdict]` (one verdict per
        row, in order) to verify many samples at once, e.g. in parallel; the steps then use it instead."""


BUILTIN = {"arithmetic": "flywheel.tasks.arithmetic:Arithmetic", "jsonl": "flywheel.tasks.jsonl:Jsonl",
           "code": "flywheel.tasks.code:Code"}
TASK_METHODS = ("prompts", "eval_sets", "seed_set", "verify")


def import_object(path: str, what: str) -> Any:
    """Import 'pkg.module:Name' with one clear message when it cannot be found."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {path!r}: expected an import path of the form 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{what} {path!r}: cannot import module {module_name!r} ({err}); "
                         "is its package installed in this environment?") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}") from None


def load_task(name: str, params: dict[str, Any] | None = None) -> Task:
    cls = import_object(BUILTIN.get(name, name), "task")
    missing = [m for m in TASK_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise ValueError(f"task {name!r}: {cls!r} lacks method(s) {', '.join(missing)}; "
                         "a task implements prompts, eval_sets, seed_set and verify (docs/architecture.md)")
    try:
        return cls(**(params or {}))
    except TypeError as err:
        raise ValueError(f"task {name!r}: bad task.params {params!r}: {err}") from None
