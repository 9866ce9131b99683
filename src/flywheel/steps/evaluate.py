"""evaluate: accuracy per difficulty on the held-out sets (greedy), pass@k on request, and the comparison
with the previous iteration's model.

Held-out answers are always judged by the task's own verifier against its references, whatever
`verify.verifier` says: a label-free or model-based verifier changes what the loop learns from, never how
it is measured."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flywheel.config import Config
from flywheel.gates import check_gate, expectations, rule
from flywheel.steps import step
from flywheel.io import read_json, read_table, write_table
from flywheel.steps.generate import rendered_prompts
from flywheel.steps.vllm_backend import open_decoder
from flywheel.steps.data import task_of
from flywheel.verifiers import task_verifier
from flywheel.schema import PROBLEM_COLUMNS, RESULT_COLUMNS


@step
def evaluate_model(model_dir: str | Path, eval_path: str | Path, out_path: str | Path, cfg: Config,
                   iteration: int,
                   previous_metrics_path: str | Path | None = None, seed_path: str | Path | None = None) -> dict:
    """Write per-problem results to `out_path`; return (and write) accuracy metrics.

    `seed_path` (the labelled seed set) adds `accuracy_beyond_seed`: the mean accuracy over difficulties
    harder than any seed problem, the number that shows whether the loop taught the model anything new.
    """
    from flywheel.model import load_model

    e, g = cfg.evaluate, cfg.generate
    problems = read_table(eval_path, PROBLEM_COLUMNS, what="evaluation set")
    decoder = open_decoder(g.backend, model_dir, seed=cfg.seed, load=lambda: load_model(model_dir, cfg.model))
    verify = task_verifier(task_of(cfg))
    # The model is asked as generate asks it (the chat template when it has one); the verifier reads the
    # task's prompt and the completion, never the rendered text.
    texts, special = rendered_prompts(model_dir, problems["prompt"].tolist(), cfg)
    greedy = decoder.decode(texts, samples=1, temperature=0.0, top_p=1.0,
                            max_new_tokens=g.max_new_tokens, batch_size=e.batch_size, seed=cfg.seed,
                            desc="evaluate", add_special_tokens=special)
    df = problems.assign(completion=[s[0][0] for s in greedy])
    verdicts = verify(df)
    df = df.assign(correct=[bool(v.correct) for v in verdicts], reason=[v.reason for v in verdicts])
    by_diff = df.groupby("difficulty")["correct"].mean()
    metrics: dict = {
        "iteration": iteration, "model": str(model_dir), "items": len(df),
        "accuracy": float(df["correct"].mean()),
        # Mean of the per-difficulty accuracies, so that no level dominates by its count.
        "accuracy_macro": float(by_diff.mean()),
        "accuracy_by_difficulty": {str(k): float(v) for k, v in by_diff.items()},
        "backend": decoder.backend, "backend_reason": decoder.reason,
    }
    if seed_path:
        seed_max = int(read_table(seed_path, ("difficulty",), what="labelled seed set")["difficulty"].max())
        harder = by_diff[by_diff.index > seed_max]
        metrics["seed_max_difficulty"] = seed_max
        metrics["accuracy_beyond_seed"] = float(harder.mean()) if len(harder) else None
    if e.pass_k:
        sampled = decoder.decode(texts, samples=e.pass_k,
                                 temperature=e.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens,
                                 batch_size=e.batch_size, seed=cfg.seed + 7919, desc=f"evaluate pass@{e.pass_k}",
                                 add_special_tokens=special)
        k_rows = problems.loc[problems.index.repeat(e.pass_k)].assign(
            completion=[text for s in sampled for text, _, _ in s])
        ok = [bool(v.correct) for v in verify(k_rows)]
        solved = [any(ok[i * e.pass_k:(i + 1) * e.pass_k]) for i in range(len(problems))]
        df["solved_at_k"] = solved
        metrics[f"pass@{e.pass_k}"] = float(pd.Series(solved).mean())
        metrics["pass_at_k_by_difficulty"] = {str(k): float(v) for k, v in
                                              df.groupby("difficulty")["solved_at_k"].mean().items()}
    if previous_metrics_path:
        prev = read_json(previous_metrics_path, what="previous evaluation metrics")
        metrics["previous_accuracy"] = prev["accuracy"]
        metrics["delta_accuracy"] = metrics["accuracy"] - prev["accuracy"]
        metrics["delta_by_difficulty"] = {k: v - prev["accuracy_by_difficulty"].get(k, 0.0)
                                          for k, v in metrics["accuracy_by_difficulty"].items()}
        if metrics.get("accuracy_beyond_seed") is not None and prev.get("accuracy_beyond_seed") is not None:
            metrics["delta_beyond_seed"] = metrics["accuracy_beyond_seed"] - prev["accuracy_beyond_seed"]
    write_table(df, out_path)
    metrics["gate"] = check_gate("results", out_path, results_suite, cfg,
                                 inputs={"model": model_dir, "eval_set": eval_path})
    return metrics


def results_suite(cfg: Config) -> list:
    """The rules every evaluation-results table must meet (docs/data.md, 'results')."""
    E = expectations()
    return [
        rule("results.schema", E.ExpectTableColumnsToMatchSet(column_set=list(RESULT_COLUMNS), exact_match=False),
             "all result columns", "every column of docs/architecture.md, 'Artifacts'"),
        rule("results.rows", E.ExpectTableRowCountToBeBetween(min_value=1), "at least one evaluated problem", ">= 1 row"),
        rule("results.unique_problems", E.ExpectColumnValuesToBeUnique(column="prompt_id"),
             "each held-out problem once", "0 repeated prompt_id"),
        rule("results.prompt", E.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1),
             "no empty prompt", "non-empty"),
        rule("results.completion", E.ExpectColumnValuesToNotBeNull(column="completion"),
             "an answer per problem", "0 nulls"),
        rule("results.correct_type", E.ExpectColumnValuesToBeOfType(column="correct", type_="bool"),
             "a yes/no verdict per problem", "type bool"),
    ]
