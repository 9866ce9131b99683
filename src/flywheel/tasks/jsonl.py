"""`jsonl`: problems and reference answers from your own JSONL or Parquet file.

    task:
      name: jsonl
      params:
        path: examples/data/word_problems.jsonl   # one JSON object per line (or a .parquet file)
        prompt_field: question
        answer_field: answer                       # e.g. GSM8K's "...\\n#### 72"
        answer_format: auto                        # gsm8k | boxed | last-number | exact | math | auto

Each row becomes a problem: `prompt` = `prompt_template` filled with the row's fields, `reference` = the
final answer extracted from `answer_field`, `difficulty` = `difficulty_field` (or 1). The labelled seed set
trains on the full answer text (`completion_field`, default the answer field itself, so a GSM8K solution
teaches its reasoning and its `####` line). A sample is correct when the answer extracted from it matches
the reference: numerically within `rel_tol`/`abs_tol` when both are numbers, else as normalised text.
Held-out rows are a fixed `eval_fraction` of the file chosen by a hash of the prompt (`files.ProblemPool`).
"""

from __future__ import annotations

from typing import Any

from flywheel.tasks import Verdict
from flywheel.tasks.answers import FORMATS, answers_match, extract_answer
from flywheel.tasks.files import DataError, ProblemPool, field, load_problems


class Jsonl:
    def __init__(self, path: str, prompt_field: str = "question", answer_field: str = "answer",
                 answer_format: str = "auto", completion_field: str | None = None,
                 difficulty_field: str | None = None, id_field: str | None = None,
                 prompt_template: str = "{prompt}", eval_fraction: float = 0.2, seed_size: int = 200,
                 seed_max_difficulty: int | None = None, rel_tol: float = 1e-6, abs_tol: float = 1e-9,
                 repo: str = "", rev: str = "", eval_path: str = ""):
        """
        path: a .jsonl (one JSON object per line) or .parquet file; relative to the working directory.
        prompt_field / answer_field: the fields that hold the question and its answer.
        answer_format: how the final answer is found, in the data and in samples (flywheel.tasks.answers).
        completion_field: the labelled completion for the seed set (default: the answer field's full text).
        difficulty_field: an integer field (default: every row has difficulty 1).
        id_field: a stable row id (default: the line number).
        prompt_template: the model's input; `{prompt}` is the prompt field, `{name}` any other field.
        eval_fraction: share of rows held out for evaluation (fixed by a hash of the prompt).
        seed_size: labelled rows in the seed set (warm start and the curate mix).
        seed_max_difficulty: label only rows up to this difficulty (None: any).
        rel_tol / abs_tol: numeric tolerance of the comparison.
        repo / rev: read `path` from this DVC (or Git) repository at this revision with dvc.api (a Git URL or
            a local repository; '' = a local file). The commit and content hash used land in summary.json.
        eval_path: the held-out rows from this file (same fields, ids distinct from `path`'s) instead of a
            hash split of `path` (then `eval_fraction` is unused): a separate test set, such as GSM8K's
            test.jsonl, or problems worded differently from the training ones. A training row whose prompt
            is also a held-out prompt is dropped from training.
        """
        if answer_format not in FORMATS:
            raise ValueError(f"answer_format {answer_format!r}: expected one of {', '.join(FORMATS)}")
        self.path, self.answer_format, self.rel_tol, self.abs_tol = path, answer_format, rel_tol, abs_tol
        self.prompt_field, self.answer_field = prompt_field, answer_field
        self.completion_field, self.difficulty_field, self.id_field = completion_field, difficulty_field, id_field
        self.prompt_template = prompt_template
        rows, self.inputs = load_problems(path, self._problem, repo, rev)
        held_out = load_problems(eval_path, self._problem)[0] if eval_path else None
        self.pool = ProblemPool(rows, eval_fraction, seed_size, seed_max_difficulty, held_out=held_out)

    def _problem(self, loc: str, n: int, rec: dict[str, Any]) -> dict[str, Any]:
        question = field(loc, rec, self.prompt_field, "prompt_field")
        raw = field(loc, rec, self.answer_field, "answer_field", (str, int, float))
        answer = extract_answer(str(raw), self.answer_format)
        if answer is None:
            raise DataError(f"{loc}: field {self.answer_field!r}: no final answer in {str(raw)[-80:]!r} with "
                            f"answer_format {self.answer_format!r} (gsm8k wants '#### N', boxed '\\boxed{{N}}', "
                            "last-number a number); fix the row or set task.params.answer_format")
        completion = str(field(loc, rec, self.completion_field, "completion_field", (str, int, float))
                         if self.completion_field else raw)
        try:
            prompt = self.prompt_template.format_map({**rec, "prompt": question})
        except (KeyError, IndexError, ValueError) as err:
            raise DataError(f"{loc}: prompt_template {self.prompt_template!r} cannot be filled from this row "
                            f"({type(err).__name__}: {err})") from None
        difficulty = field(loc, rec, self.difficulty_field, "difficulty_field", int) if self.difficulty_field else 1
        row_id = field(loc, rec, self.id_field, "id_field", (str, int)) if self.id_field else n
        return {"prompt_id": f"row-{row_id}", "prompt": prompt, "reference": answer, "difficulty": int(difficulty),
                "completion": completion}

    # -- Task interface ----------------------------------------------------------------------------------
    def prompts(self, iteration: int, n: int, seed: int) -> list[dict[str, Any]]:
        return self.pool.prompts(iteration, n, seed)

    def eval_sets(self, per_difficulty: int, seed: int) -> list[dict[str, Any]]:
        return self.pool.eval_sets(per_difficulty, seed)

    def seed_set(self, seed: int) -> list[dict[str, Any]]:
        return self.pool.seed_set(seed)

    def verify(self, problem: dict[str, Any], completion: str) -> Verdict:
        got, want = extract_answer(completion, self.answer_format), problem["reference"]
        if got is None:
            return Verdict(False, 0.0, f"no answer: no {self.answer_format} answer in {completion[-40:]!r}")
        if answers_match(got, want, self.rel_tol, self.abs_tol, self.answer_format):
            return Verdict(True, 1.0, "correct")
        return Verdict(False, 0.0, f"wrong: expected {want}, got {got}")
