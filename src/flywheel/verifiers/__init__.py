"""Verifiers: what scores a sample, and so what the loop learns from.

A verifier is one of (no base class, no registry; docs/verifiers.md has examples):

- a **per-sample function** `fn(problem: dict, completion: str) -> Verdict`;
- a **batch function** `fn(samples: pandas.DataFrame) -> list[Verdict]`, one verdict per row, in order.
  It sees the whole samples table (every column of docs/architecture.md, "Artifacts": all K samples of
  every prompt), which is what a label-free verifier such as majority vote needs, and what a model-based
  or sandboxed verifier needs to batch or parallelise;
- a **class** constructed with `verify.params` as keyword arguments, whose instances have a method
  `verify(problem, completion)` (per sample) or `verify_batch(samples)` (batch) as above.

`verify.verifier` names it: `task` (the task's own `verify`, or its `verify_batch` when it has one), a
built-in from `BUILTIN`, or an import path `my_pkg.verifiers:MyVerifier`. Whatever it is, `load_verifier`
returns one batch function, so the verify and evaluate steps have a single code path.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import pandas as pd

from flywheel.tasks import Verdict, import_object

BatchVerifier = Callable[[pd.DataFrame], list[Verdict]]

BUILTIN = {
    "unit-tests": "flywheel.verifiers.unit_tests:UnitTests",
    "majority-vote": "flywheel.verifiers.majority:MajorityVote",
    "reward-model": "flywheel.verifiers.models:RewardModel",
    "judge": "flywheel.verifiers.models:Judge",
}

PROBLEM_KEYS = ("prompt_id", "prompt", "reference", "difficulty")


def per_sample(fn: Callable[[dict, str], Verdict]) -> BatchVerifier:
    """Lift `fn(problem, completion)` to a batch verifier."""

    def batch(samples: pd.DataFrame) -> list[Verdict]:
        keys = [c for c in PROBLEM_KEYS if c in samples.columns]
        columns = [samples[c].tolist() for c in keys]  # plain lists: much faster than to_dict("records")
        return [fn(dict(zip(keys, values)), c) for values, c in zip(zip(*columns), samples["completion"].tolist())]

    return batch


def task_verifier(task) -> BatchVerifier:
    """The task's own verifier: its optional `verify_batch(samples)` if it has one, else `verify` per sample."""
    batch = getattr(task, "verify_batch", None)  # optional: tasks that verify faster in bulk (e.g. code)
    return batch if callable(batch) else per_sample(task.verify)


def _positional_params(fn) -> int:
    sig = inspect.signature(fn)
    return sum(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in sig.parameters.values())


SHAPE = ("a verifier is fn(problem, completion) -> Verdict, fn(samples: DataFrame) -> list[Verdict], or a "
         "class with a verify(problem, completion) or verify_batch(samples) method (docs/verifiers.md)")


def resolve_verifier(name: str):
    """Import the verifier `name` (not 'task') and check its shape without constructing it: cheap enough to
    run before a pipeline starts. Returns (object, kind) with kind 'class', 'per-sample' or 'batch'."""
    obj = import_object(BUILTIN.get(name, name), "verifier")
    if inspect.isclass(obj):
        if not (callable(getattr(obj, "verify_batch", None)) or callable(getattr(obj, "verify", None))):
            raise ValueError(f"verifier {name!r}: {obj!r} has neither a verify nor a verify_batch method; {SHAPE}")
        return obj, "class"
    if not callable(obj):
        raise ValueError(f"verifier {name!r} is not callable; {SHAPE}")
    n = _positional_params(obj)
    if n not in (1, 2):
        raise ValueError(f"verifier {name!r} takes {n} required positional arguments; {SHAPE}")
    return obj, "per-sample" if n == 2 else "batch"


def load_verifier(name: str, params: dict[str, Any] | None = None, task=None) -> BatchVerifier:
    """Resolve `verify.verifier` (+ `verify.params`) to a batch function; one clear error if it cannot."""
    params = params or {}
    if name == "task":
        if params:
            raise ValueError("verify.params is set but verify.verifier is 'task': the task's verifier takes its "
                             "settings from task.params; remove verify.params")
        return _checked("task", task_verifier(task))
    obj, kind = resolve_verifier(name)
    if kind == "class":
        try:
            inst = obj(**params)
        except TypeError as err:
            raise ValueError(f"verifier {name!r}: bad verify.params {params!r}: {err}") from None
        batch = getattr(inst, "verify_batch", None)
        return _checked(name, batch if callable(batch) else per_sample(inst.verify))
    if params:
        raise ValueError(f"verifier {name!r} is a function, so it takes no verify.params; "
                         "remove them or make it a class whose constructor takes them")
    return _checked(name, per_sample(obj) if kind == "per-sample" else obj)


def _checked(name: str, fn: BatchVerifier) -> BatchVerifier:
    """Check what a (user's) verifier returns, so that a bug there is reported as such, not as a KeyError later."""

    def batch(samples: pd.DataFrame) -> list[Verdict]:
        verdicts = list(fn(samples))
        if len(verdicts) != len(samples):
            raise ValueError(f"verifier {name!r} returned {len(verdicts)} verdicts for {len(samples)} samples; "
                             "it must return one per row, in order")
        bad = next((v for v in verdicts if not isinstance(v, Verdict)), None)
        if bad is not None:
            raise ValueError(f"verifier {name!r} returned {bad!r}; expected flywheel.tasks.Verdict(correct, score, reason)")
        return verdicts

    return batch
