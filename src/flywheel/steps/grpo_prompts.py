"""curate under recipe grpo: choose the prompts GRPO trains on, from the generate step's samples.

GRPO draws its own samples while it trains, so curate does not pick training rows. It picks prompts: with
`train.grpo.prompt_filter: informative` (default) a prompt is kept when the verifier's scores of its K
generate samples differ (solved sometimes but not always). A prompt whose samples all scored the same gives
a group with zero reward variance, so a zero advantage for every sample, and a GRPO step on it is wasted
(DAPO's dynamic sampling drops such groups after sampling; here they are dropped before training, from
samples the loop draws anyway to measure its health). The samples of every dropped prompt go to the dropped
table with the reason. If no prompt is informative, all are kept (the train step then reports reward
variance 0, and the summary says why).

Writes `GRPO_PROMPT_COLUMNS` (the problem, its pass rate, the iteration), gated by `grpo_prompts_suite`:
no evaluation prompt among them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flywheel.config import Config
from flywheel.gates import check_gate, expectations, rule
from flywheel.io import read_table, write_table
from flywheel.schema import DROPPED_COLUMNS, GRPO_PROMPT_COLUMNS, PROBLEM_COLUMNS, VERDICT_COLUMNS


def curate_prompts(verdicts_path: str | Path, out_path: str | Path, dropped_path: str | Path, cfg: Config,
                   iteration: int, eval_path: str | Path | None = None) -> dict:
    df = read_table(verdicts_path, VERDICT_COLUMNS, what="verdicts").sort_values(["prompt_id", "sample_id"])
    by = df.groupby("prompt_id", sort=True)
    per = by.agg(pass_rate=("correct", "mean"), score_min=("score", "min"), score_max=("score", "max"))
    informative = per["score_max"] > per["score_min"]
    reason = pd.Series("", index=per.index)
    reason[~informative & (per["pass_rate"] >= 1)] = "no learning signal: every sample of the prompt passed"
    reason[~informative & (per["pass_rate"] <= 0)] = "no learning signal: every sample of the prompt failed"
    reason[~informative & (reason == "")] = "no learning signal: every sample of the prompt scored the same"
    fallback = None
    keep = informative.copy() if cfg.train.grpo.prompt_filter == "informative" else pd.Series(True, index=per.index)
    if not keep.any():
        keep[:] = True
        fallback = "no informative prompt (every prompt's samples scored alike): all prompts kept"
    problems = by.first()[[c for c in PROBLEM_COLUMNS if c != "prompt_id"]]
    kept = problems[keep].assign(pass_rate=per["pass_rate"][keep], iteration=iteration).reset_index()
    drop_ids = set(keep.index[~keep])
    drops = df[df["prompt_id"].isin(drop_ids)].assign(duplicate_of="")
    drops["drop_reason"] = drops["prompt_id"].map(reason)
    write_table(kept[list(GRPO_PROMPT_COLUMNS)], out_path)
    write_table(drops[list(DROPPED_COLUMNS)], dropped_path)
    metrics = {
        "kept": len(kept), "kept_prompts": len(kept), "prompts": len(per), "dropped": len(drops),
        "dropped_prompts": len(drop_ids), "informative_share": float(informative.mean()) if len(per) else 0.0,
        "dropped_by_reason": {str(k): int(v) for k, v in drops.groupby("drop_reason")["prompt_id"].nunique().items()},
        "kept_by_difficulty": {str(k): int(v) for k, v in kept.groupby("difficulty").size().items()},
        "fallback": fallback, "pairs": False, "prompts_only": True,
    }
    if eval_path:
        read_table(eval_path, PROBLEM_COLUMNS, what="evaluation set")
    metrics["gate"] = check_gate("curated", out_path, grpo_prompts_suite, cfg, eval_path=eval_path,
                                 inputs={"verdicts": verdicts_path, "eval_set": eval_path, "dropped": dropped_path})
    return metrics


def grpo_prompts_suite(cfg: Config, eval_path: str | Path | None = None) -> list:
    """The rules the prompts handed to GRPO must meet (docs/data.md, 'curated', recipe grpo)."""
    E, g = expectations(), cfg.gates
    rules = [
        rule("curated.schema", E.ExpectTableColumnsToMatchSet(column_set=list(GRPO_PROMPT_COLUMNS), exact_match=False),
             "all GRPO prompt columns", "docs/architecture.md, 'Artifacts'"),
        rule("curated.prompt_length", E.ExpectColumnValueLengthsToBeBetween(
            column="prompt", min_value=1, max_value=g.max_prompt_chars),
             "no null or empty prompt, none too long", f"1..{g.max_prompt_chars} chars (gates.max_prompt_chars)"),
        rule("curated.unique_prompts", E.ExpectColumnValuesToBeUnique(column="prompt_id"),
             "each prompt once", "unique prompt_id"),
    ]
    if eval_path is not None:
        rules.append(rule("curated.contamination_exact", E.ExpectColumnValuesToNotOccurInReferences(
            column="prompt", references_path=str(eval_path), mostly=1 - g.max_contaminated_share),
            "no training prompt is an evaluation prompt", f"<= {g.max_contaminated_share:.0%} of rows "
                                                         "(gates.max_contaminated_share)"))
    return rules
