"""curate: choose the training rows of an iteration, and keep every dropped row with its reason.

In order: drop samples the verifier rejected; drop exact duplicates (same prompt and completion, within the
iteration and against rows carried from earlier iterations); drop near-duplicates (MinHash + LSH,
`flywheel.dedupe`); cap the samples kept per prompt; carry earlier iterations' rows ('accumulate', Lee et al.
2025) or not ('replace', STaR / ReST-EM); mix in a share of the labelled seed data, which anchors the model
against collapse on its own outputs. Then the `curated` quality gate (`curated_suite`) checks the result,
including that no evaluation prompt leaked into it.
Recipes dpo and spin build preference pairs instead: `flywheel.steps.pairs`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from flywheel.config import Config
from flywheel.gates import check_gate, expectations, rule
from flywheel.steps import step
from flywheel.io import read_table, write_table
from flywheel.schema import CURATED_COLUMNS, DROPPED_COLUMNS, PROBLEM_COLUMNS, VERDICT_COLUMNS


def _drop(df: pd.DataFrame, mask: pd.Series, reason, dropped: list[pd.DataFrame]) -> pd.DataFrame:
    """Move the rows under `mask` to `dropped` with `reason` (a string or a Series); return the rest."""
    out = df[mask].copy()
    out["drop_reason"] = reason[mask] if isinstance(reason, pd.Series) else reason
    dropped.append(out)
    return df[~mask]


@step
def curate_samples(verdicts_path: str | Path, seed_path: str | Path, out_path: str | Path,
                   dropped_path: str | Path, cfg: Config, iteration: int,
                   previous_path: str | Path | None = None, eval_path: str | Path | None = None) -> dict:
    """`eval_path` (the held-out problems) lets the gate check the curated rows for contamination."""
    if cfg.train.recipe == "grpo":  # online RL samples while it trains: curate chooses its prompts
        from flywheel.steps.grpo_prompts import curate_prompts

        return curate_prompts(verdicts_path, out_path, dropped_path, cfg, iteration, eval_path)
    if cfg.train.recipe in ("dpo", "spin"):  # preference recipes train on pairs, built in their own module
        from flywheel.steps.pairs import curate_pairs

        return curate_pairs(verdicts_path, seed_path, out_path, dropped_path, cfg, iteration, previous_path)
    c = cfg.curate
    df = read_table(verdicts_path, VERDICT_COLUMNS, what="verdicts").sort_values(["prompt_id", "sample_id"])
    verdicts_prompts = df["prompt_id"].nunique()
    seed = read_table(seed_path, ("prompt_id", "prompt", "completion", "difficulty"), what="labelled seed set")
    dropped: list[pd.DataFrame] = []
    df["duplicate_of"] = ""

    df = _drop(df, ~df["correct"], "rejected by verifier: " + df["reason"], dropped)
    df = _drop(df, df["score"] < c.min_score, f"score below curate.min_score {c.min_score:g}", dropped)

    carried = pd.DataFrame(columns=list(CURATED_COLUMNS))
    if c.data_policy == "accumulate" and previous_path:
        prev = read_table(previous_path, CURATED_COLUMNS, what="previous curated rows")
        carried = prev[prev["source"] == "self"]  # seed rows are drawn afresh below

    key = df["prompt"] + "\x00" + df["completion"]
    ids = df["prompt_id"].astype(str) + "/" + df["sample_id"].astype(str)
    first_id = dict(zip(key[::-1], ids[::-1]))  # reversed, so the first occurrence wins
    dup = key.duplicated()
    df = df.assign(duplicate_of=key.map(first_id).where(dup, ""))
    df = _drop(df, dup, "exact duplicate within iteration", dropped)

    earlier = set(carried["prompt"] + "\x00" + carried["completion"])
    seen = (df["prompt"] + "\x00" + df["completion"]).isin(earlier)
    df = df.assign(duplicate_of=df["duplicate_of"].where(~seen, "earlier iteration"))
    df = _drop(df, seen, "exact duplicate of an earlier iteration's row", dropped)

    if c.near_dup_threshold < 1 and len(df):
        df = _drop_near_duplicates(df, carried, c, dropped)

    rank = df.groupby("prompt_id").cumcount()
    df = _drop(df, rank >= c.max_per_prompt, f"over the cap of {c.max_per_prompt} per prompt", dropped)

    df, carried = _cap_to_seed_mix(df, carried, len(seed), c.seed_fraction, dropped)
    own = df.assign(source="self", iteration=iteration)[list(CURATED_COLUMNS)]
    self_rows = pd.concat([carried, own], ignore_index=True) if len(carried) else own
    # seed_fraction f of the final set: n_seed / (n_self + n_seed) = f.
    n_seed = min(len(seed), round(c.seed_fraction / (1 - c.seed_fraction) * len(self_rows)))
    fallback = None
    if len(self_rows) == 0:
        # Nothing passed (an early model, or a too-strict verifier): rather than stop the loop, rehearse
        # the labelled seed data, one row per prompt of the iteration. The pass rate in the summary shows it.
        n_seed = min(len(seed), int(verdicts_prompts))
        fallback = "no verified samples: training on labelled seed rows only"
    mix = seed.sample(n=n_seed, random_state=cfg.seed + iteration).assign(
        source="seed", iteration=iteration, score=1.0)[list(CURATED_COLUMNS)]
    curated = pd.concat([self_rows, mix], ignore_index=True).sample(frac=1.0, random_state=cfg.seed + iteration)

    drops = pd.concat(dropped, ignore_index=True) if dropped else pd.DataFrame(columns=list(DROPPED_COLUMNS))
    write_table(curated.reset_index(drop=True), out_path)
    write_table(drops[list(DROPPED_COLUMNS)], dropped_path)
    metrics = {
        "kept": len(curated), "kept_new": len(own), "kept_carried": len(carried), "kept_seed": n_seed,
        "dropped": len(drops), "dropped_by_reason": _reason_counts(drops["drop_reason"]),
        "kept_by_difficulty": {str(k): int(v) for k, v in own.groupby("difficulty").size().items()},
        "fallback": fallback,
    }
    if eval_path:
        read_table(eval_path, PROBLEM_COLUMNS, what="evaluation set")  # one clear error for a wrong file
    metrics["gate"] = check_gate("curated", out_path, curated_suite, cfg, eval_path=eval_path,
                                 inputs={"verdicts": verdicts_path, "seed_set": seed_path, "previous": previous_path,
                                         "eval_set": eval_path, "dropped": dropped_path},
                                 fallback=fallback is not None, rows=len(curated))
    return metrics


def _cap_to_seed_mix(df: pd.DataFrame, carried: pd.DataFrame, n_seed_set: int, f: float,
                     dropped: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep at most as many own rows as the seed set can balance at `curate.seed_fraction` f, so the collapse
    guard holds however many rows accumulate: this iteration's rows (`df`, the newest model's) first, then
    carried rows from the latest iterations; the rest go to the dropped table with the reason."""
    if f <= 0:
        return df, carried
    cap = int(n_seed_set * (1 - f) / f + 1e-9)  # the epsilon: 64 * 0.6 / 0.4 is 95.999... in floating point
    if len(df) + len(carried) <= cap:
        return df, carried
    reason = (f"over the seed mix: curate.seed_fraction {f:g} of {n_seed_set} seed rows balances at most {cap} "
              f"own rows (the newest are kept; a larger seed set keeps more)")
    df = _drop(df, pd.Series(range(len(df)), index=df.index) >= cap, reason, dropped)
    gone = carried.sort_values("iteration", ascending=False, kind="stable").iloc[cap - len(df):]
    dropped.append(gone.assign(drop_reason=reason, duplicate_of="").reindex(columns=list(DROPPED_COLUMNS)))
    return df, carried.drop(index=gone.index)


def _text(df: pd.DataFrame) -> pd.Series:
    """The text of a training row, as near-duplicate detection compares it."""
    return df["prompt"] + "\n" + df["completion"]


def _drop_near_duplicates(df, carried, c, dropped):
    """Drop rows whose prompt + completion is a near-duplicate (word-shingle Jaccard >= threshold) of a row
    kept before it, in this iteration or carried from an earlier one; `duplicate_of` names that row."""
    from flywheel.dedupe import near_duplicates

    kept_keys = carried["prompt_id"].astype(str) + "@iteration " + carried["iteration"].astype(str)
    kept_keys = kept_keys + "#" + kept_keys.groupby(kept_keys).cumcount().astype(str)  # unique keys
    keys = df["prompt_id"].astype(str) + "/" + df["sample_id"].astype(str)
    dup_of, sims = near_duplicates(_text(df).tolist(), keys.tolist(), threshold=c.near_dup_threshold,
                                   n=c.near_dup_ngram, num_perm=c.near_dup_num_perm,
                                   kept_texts=_text(carried).tolist(), kept_keys=kept_keys.tolist())
    dup = pd.Series([d is not None for d in dup_of], index=df.index)
    df = df.assign(duplicate_of=pd.Series([d or "" for d in dup_of], index=df.index).str.replace(r"#\d+$", "", regex=True))
    reason = pd.Series([f"near duplicate (Jaccard {s:.2f} >= {c.near_dup_threshold})" for s in sims], index=df.index)
    return _drop(df, dup, reason, dropped)


def curated_suite(cfg: Config, eval_path: str | Path | None = None, fallback: bool = False, rows: int = 1) -> list:
    """The rules every curated training set must meet (docs/data.md, 'curated')."""
    E, g, f = expectations(), cfg.gates, cfg.curate.seed_fraction
    share = 1.0 if fallback else f  # nothing passed: curate trains on seed rows only, by design
    tol = g.seed_share_tolerance + 1 / max(rows, 1)  # plus one row of rounding
    self_rows = {"row_condition": 'source == "self"', "condition_parser": "pandas"}
    rules = [
        rule("curated.schema", E.ExpectTableColumnsToMatchSet(column_set=list(CURATED_COLUMNS), exact_match=False),
             "all curated columns", "every column of docs/architecture.md, 'Artifacts'"),
        rule("curated.types", E.ExpectColumnValuesToBeOfType(column="completion", type_="str"),
             "completions are text", "type str"),
        rule("curated.source", E.ExpectColumnValuesToBeInSet(column="source", value_set=["self", "seed"]),
             "every row is the model's own or labelled seed data", "source in {self, seed}"),
        rule("curated.prompt_length", E.ExpectColumnValueLengthsToBeBetween(
            column="prompt", min_value=1, max_value=g.max_prompt_chars),
             "no null or empty prompt, none too long", f"1..{g.max_prompt_chars} chars (gates.max_prompt_chars)"),
        rule("curated.completion_length", E.ExpectColumnValueLengthsToBeBetween(
            column="completion", min_value=1, max_value=g.max_completion_chars),
             "no null or empty completion, none too long",
             f"1..{g.max_completion_chars} chars (gates.max_completion_chars)"),
        rule("curated.duplicate_rate", E.ExpectCompoundColumnsToBeUnique(
            column_list=["prompt", "completion"], mostly=1 - g.max_duplicate_rate),
             "few rows repeat another row's prompt and completion",
             f"<= {g.max_duplicate_rate:.0%} of rows (gates.max_duplicate_rate)"),
        rule("curated.answers_per_prompt", E.ExpectDistinctAnswersPerPromptToBeBetween(
            column="prompt_id", answer_column="completion", min_value=g.min_answers_per_prompt, **self_rows),
             "distinct kept completions per prompt (diversity)",
             f">= {g.min_answers_per_prompt} (gates.min_answers_per_prompt)"),
        rule("curated.distinct_ngrams", E.ExpectColumnDistinctNgramRatioToBeBetween(
            column="completion", n=g.diversity_ngram, min_value=g.min_distinct_ngram_ratio, **self_rows),
             f"distinct {g.diversity_ngram}-gram ratio of the kept model completions (diversity)",
             f">= {g.min_distinct_ngram_ratio} (gates.min_distinct_ngram_ratio)"),
        rule("curated.seed_share", E.ExpectColumnShareOfValueToBeBetween(
            column="source", value="seed", min_value=share - tol, max_value=share + tol),
             "share of labelled seed rows as configured" + (" (1.0: nothing passed, seed rows only)" if fallback else ""),
             f"{share} +- {tol:.3f} (curate.seed_fraction, gates.seed_share_tolerance + 1 row)"),
    ]
    if eval_path is not None:
        mostly, limit = 1 - g.max_contaminated_share, g.max_contaminated_share
        rules.append(rule("curated.contamination_exact", E.ExpectColumnValuesToNotOccurInReferences(
            column="prompt", references_path=str(eval_path), mostly=mostly),
            "no training prompt is an evaluation prompt", f"<= {limit:.0%} of rows (gates.max_contaminated_share)"))
        rules += [rule(f"curated.contamination_ngram_{col}", E.ExpectColumnValuesToNotOccurInReferences(
            column=col, references_path=str(eval_path), n=g.contamination_ngram, mostly=mostly),
            f"no training {col} shares a {g.contamination_ngram}-word n-gram with an evaluation prompt",
            f"<= {limit:.0%} of rows (gates.max_contaminated_share, gates.contamination_ngram)")
            for col in ("prompt", "completion")]
    return rules


def _reason_counts(reasons: pd.Series) -> dict[str, int]:
    # "rejected by verifier: wrong: expected 123, got 124" -> count by the part before the details
    heads = reasons.str.replace(r"^(rejected by verifier: [^:]*):.*$", r"\1", regex=True, flags=re.S)
    return {str(k): int(v) for k, v in heads.value_counts().items()}
