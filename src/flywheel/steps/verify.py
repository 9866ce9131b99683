"""verify: a verdict per sample (correct, score, reason).

The verifier is the task's own `verify(problem, completion)` unless `verify.verifier` names another
function by import path. It is the signal the loop learns from, so every sample gets a reason.
"""

from __future__ import annotations

from pathlib import Path

from flywheel.config import Config
from flywheel.gates import check_gate, expectations, rule
from flywheel.steps import step
from flywheel.io import read_table, write_table
from flywheel.steps.data import task_of
from flywheel.schema import PROBLEM_COLUMNS, SAMPLE_COLUMNS, VERDICT_COLUMNS
from flywheel.tasks import import_object


def verifier_of(cfg: Config):
    if cfg.verify.verifier == "task":
        return task_of(cfg).verify
    fn = import_object(cfg.verify.verifier, "verifier")
    if not callable(fn):
        raise ValueError(f"verifier {cfg.verify.verifier!r} is not callable; expected fn(problem, completion) -> Verdict")
    return fn


def pass_metrics(df) -> dict:
    """Pass rate overall and per difficulty, and the share of prompts with at least one correct sample."""
    by_prompt = df.groupby("prompt_id")["correct"].any()
    return {
        "pass_rate": float(df["correct"].mean()) if len(df) else 0.0,
        "pass_rate_by_difficulty": {str(k): float(v) for k, v in df.groupby("difficulty")["correct"].mean().items()},
        "prompts_with_correct": float(by_prompt.mean()) if len(by_prompt) else 0.0,
    }


@step
def verify_samples(samples_path: str | Path, out_path: str | Path, cfg: Config) -> dict:
    df = read_table(samples_path, SAMPLE_COLUMNS, what="samples")
    verify = verifier_of(cfg)
    problems = df[list(PROBLEM_COLUMNS)].to_dict("records")
    verdicts = [verify(p, c) for p, c in zip(problems, df["completion"].tolist())]
    df["correct"] = [bool(v.correct) for v in verdicts]
    df["score"] = [float(v.score) for v in verdicts]
    df["reason"] = [str(v.reason) for v in verdicts]
    write_table(df, out_path)
    metrics = {"samples": len(df), "correct": int(df["correct"].sum()), **pass_metrics(df)}
    metrics["gate"] = check_gate("verdicts", out_path, verdicts_suite, cfg, inputs={"samples": samples_path})
    return metrics


def verdicts_suite(cfg: Config) -> list:
    """The rules every verdicts table must meet (docs/data.md, 'verdicts')."""
    E, g = expectations(), cfg.gates
    return [
        rule("verdicts.schema", E.ExpectTableColumnsToMatchSet(column_set=list(VERDICT_COLUMNS), exact_match=False),
             "all verdict columns", "every column of docs/architecture.md, 'Artifacts'"),
        rule("verdicts.correct_type", E.ExpectColumnValuesToBeOfType(column="correct", type_="bool"),
             "a yes/no verdict per sample", "type bool"),
        rule("verdicts.score_not_null", E.ExpectColumnValuesToNotBeNull(column="score"),
             "a score per sample", "0 nulls"),
        rule("verdicts.reason", E.ExpectColumnValueLengthsToBeBetween(column="reason", min_value=1),
             "a reason per verdict", "non-empty"),
        rule("verdicts.pass_rate", E.ExpectColumnMeanToBeBetween(
            column="correct", min_value=g.min_pass_rate, max_value=g.max_pass_rate),
             "verifier pass rate inside the window (near 0: broken model or verifier; near 1: too easy or fooled)",
             f"{g.min_pass_rate}..{g.max_pass_rate} (gates.min_pass_rate, gates.max_pass_rate)"),
    ]
