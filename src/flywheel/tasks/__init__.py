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


# Optional: a task that can `propose` (the model writes new problems, docs/tasks.md#propose) also has
#   propose_prompt(examples: list[dict]) -> str   the model's input: a few problem rows, shown as examples
#   parse_proposal(text: str) -> dict              the model's output as a problem row (reference filled in
#                                                  when the task can compute it, else ""); raises ValueError
#                                                  with the reason when the text is not a valid problem
# No base class: a task without them simply cannot propose, and `check_can_propose` says so.
PROPOSE_METHODS = ("propose_prompt", "parse_proposal")


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


def check_can_propose(task: Any, name: str) -> None:
    """Stop with one message when `propose.enabled` names a task without the propose methods."""
    missing = [m for m in PROPOSE_METHODS if not callable(getattr(task, m, None))]
    if missing:
        raise ValueError(f"propose.enabled is true but task {name!r} ({type(task).__name__}) lacks method(s) "
                         f"{', '.join(missing)}, so it cannot propose problems; set propose.enabled: false, or add "
                         "propose_prompt(examples) and parse_proposal(text) to the task (docs/tasks.md#propose)")
