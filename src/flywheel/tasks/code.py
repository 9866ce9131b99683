"""`code`: programming problems with unit tests, from your own JSONL or Parquet file.

    task:
      name: code
      params:
        path: examples/data/code_problems.jsonl
        sandbox: {wall_s: 5, memory_mb: 512}     # flywheel.sandbox.Limits fields, plus workers

Each row: `prompt` (the model's input), `tests` (a list of `assert` statements, e.g. `assert f(2) == 7`,
each checked when the file is read to be one the verifier can grade without trusting the program: see
flywheel.verifiers.unit_tests),
optionally `prefix` (code the completion continues, e.g. a signature; the program is `prefix +
completion`), `solution` (a correct completion, for the labelled seed set) and `difficulty` (int).
A sample is verified by running its program against every test in the sandbox (`flywheel.sandbox`, via
the `unit-tests` verifier, in parallel): score = share of tests passed, correct = all passed. The
problem's `reference` column holds `{"prefix": ..., "tests": [...]}` as JSON, so the `unit-tests`
verifier can check samples of any task that writes references this way.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from flywheel.tasks import Verdict
from flywheel.tasks.files import MAX_ROW_BYTES, DataError, ProblemPool, field, load_problems


class Code:
    def __init__(self, path: str, prompt_field: str = "prompt", tests_field: str = "tests",
                 prefix_field: str | None = "prefix", solution_field: str | None = "solution",
                 difficulty_field: str | None = "difficulty", id_field: str | None = None,
                 eval_fraction: float = 0.2, seed_size: int = 200, seed_max_difficulty: int | None = None,
                 sandbox: dict[str, Any] | None = None,
                 repo: str = "", rev: str = "", max_row_bytes: int = MAX_ROW_BYTES):
        """
        path: a .jsonl or .parquet file of problems (relative to the working directory).
        prompt_field / tests_field: the model's input and the list of test statements.
        prefix_field / solution_field / difficulty_field: optional fields (None: not in the data); a row
            without the field gets '' / no seed completion / difficulty 1.
        id_field: a stable row id (default: the line number).
        eval_fraction / seed_size / seed_max_difficulty: as in the jsonl task.
        sandbox: keyword arguments of the unit-tests verifier (workers, isolate_tests, Limits fields).
        repo / rev: read `path` from a DVC repository, as in the jsonl task.
        max_row_bytes: longest row accepted (bytes); a longer one is an error naming its line.
        """
        from flywheel.verifiers.unit_tests import UnitTests

        self.path, self.prompt_field, self.tests_field = path, prompt_field, tests_field
        self.prefix_field, self.solution_field = prefix_field, solution_field
        self.difficulty_field, self.id_field = difficulty_field, id_field
        try:
            self.tests = UnitTests(**(sandbox or {}))
        except TypeError as err:
            raise ValueError(f"task.params.sandbox: {err}") from None
        rows, self.inputs = load_problems(path, self._problem, repo, rev, max_row_bytes)
        self.pool = ProblemPool(rows, eval_fraction, seed_size, seed_max_difficulty)

    def _optional(self, loc: str, rec: dict, name: str | None, param: str, kind, default):
        return field(loc, rec, name, param, kind) if name and name in rec and rec[name] is not None else default

    def _problem(self, loc: str, n: int, rec: dict[str, Any]) -> dict[str, Any]:
        prompt = field(loc, rec, self.prompt_field, "prompt_field")
        tests = field(loc, rec, self.tests_field, "tests_field", list)
        if not tests or not all(isinstance(t, str) and t.strip() for t in tests):
            raise DataError(f"{loc}: field {self.tests_field!r} must be a non-empty list of Python statements "
                            f"(strings), got {str(tests)[:80]!r}")
        from flywheel.verifiers.unit_tests import plan_test

        for i, t in enumerate(tests):
            try:  # the split the verifier grades by (probes in the sandbox, the check here): fail now if none
                plan_test(t)
            except ValueError as err:
                raise DataError(f"{loc}: field {self.tests_field!r}, test {i} {t[:60]!r}: {err}") from None
        prefix = self._optional(loc, rec, self.prefix_field, "prefix_field", str, "")
        solution = self._optional(loc, rec, self.solution_field, "solution_field", str, "")
        difficulty = self._optional(loc, rec, self.difficulty_field, "difficulty_field", int, 1)
        row_id = field(loc, rec, self.id_field, "id_field", (str, int)) if self.id_field else n
        return {"prompt_id": f"row-{row_id}", "prompt": prompt, "difficulty": int(difficulty),
                "reference": json.dumps({"prefix": prefix, "tests": tests}), "completion": solution}

    # -- Task interface ----------------------------------------------------------------------------------
    def prompts(self, iteration: int, n: int, seed: int) -> list[dict[str, Any]]:
        return self.pool.prompts(iteration, n, seed)

    def eval_sets(self, per_difficulty: int, seed: int) -> list[dict[str, Any]]:
        return self.pool.eval_sets(per_difficulty, seed)

    def seed_set(self, seed: int) -> list[dict[str, Any]]:
        return self.pool.seed_set(seed)

    def verify(self, problem: dict[str, Any], completion: str) -> Verdict:
        return self.tests.verify(problem, completion)

    def verify_batch(self, samples: pd.DataFrame) -> list[Verdict]:
        """All samples at once, spread over the sandbox workers (optional Task method; see flywheel.verifiers)."""
        return self.tests.verify_batch(samples)
