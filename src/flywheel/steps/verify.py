"""verify: a verdict per sample (correct, score, reason).

The verifier is the task's own (`verify.verifier: task`), a built-in (`unit-tests`, `majority-vote`,
`reward-model`, `judge`) or the user's, named by import path (see `flywheel.verifiers` and
docs/verifiers.md). It is the signal the loop learns from, so every sample gets a reason. With
`verify.audit`, samples are also checked against the task's references, for the metrics only: how often
a label-free or model-based verifier accepts a wrong answer (`accepted_precision`).
"""

from __future__ import annotations

from pathlib import Path

from flywheel.config import Config
from flywheel.gates import check_gate, expectations, rule
from flywheel.steps import step
from flywheel.io import read_table, write_table
from flywheel.steps.data import task_of
from flywheel.schema import SAMPLE_COLUMNS, VERDICT_COLUMNS
from flywheel.verifiers import load_verifier, resolve_verifier, task_verifier


def verifier_of(cfg: Config):
    """The configured verifier as a batch function: samples DataFrame in, one Verdict per row out."""
    task = task_of(cfg) if cfg.verify.verifier == "task" else None
    return load_verifier(cfg.verify.verifier, cfg.verify.params, task=task)


def preflight(cfg: Config) -> None:
    """Load the task and resolve the verifier (without loading its model): the errors a pipeline would meet
    in its first steps, reported before it starts."""
    import inspect

    from flywheel.tasks import check_can_propose

    task = task_of(cfg)
    if cfg.propose.enabled:
        check_can_propose(task, cfg.task.name)
    if cfg.generate.grow_threshold > 0 and "top" not in inspect.signature(task.prompts).parameters:
        raise ValueError(f"generate.grow_threshold is set but task {cfg.task.name!r}'s prompts() takes no `top` "
                         "(the hardest difficulty to draw); set generate.grow_threshold: 0 or add the argument")
    if cfg.verify.verifier != "task":
        resolve_verifier(cfg.verify.verifier)


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
    verdicts = verifier_of(cfg)(df)
    df["correct"] = [bool(v.correct) for v in verdicts]
    df["score"] = [float(v.score) for v in verdicts]
    df["reason"] = [str(v.reason) for v in verdicts]
    metrics = {"verifier": cfg.verify.verifier, "samples": len(df), "correct": int(df["correct"].sum()),
               **pass_metrics(df)}
    if cfg.verify.audit:
        truth = [bool(v.correct) for v in task_verifier(task_of(cfg))(df)]
        df["reference_correct"] = truth
        accepted = df[df["correct"]]
        metrics["audit"] = {
            "reference_pass_rate": float(df["reference_correct"].mean()) if len(df) else 0.0,
            # Of the samples the verifier accepted, the share that are right: the label noise the loop trains on.
            "accepted_precision": float(accepted["reference_correct"].mean()) if len(accepted) else None,
            # Of the right samples, the share the verifier accepted.
            "recall": float(df.loc[df["reference_correct"], "correct"].mean()) if df["reference_correct"].any() else None,
            "accepted_precision_by_difficulty": {
                str(k): float(v) for k, v in accepted.groupby("difficulty")["reference_correct"].mean().items()},
        }
    write_table(df, out_path)
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
