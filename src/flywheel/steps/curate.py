"""curate: choose the training rows of an iteration, and keep every dropped row with its reason.

In order: drop samples the verifier rejected; drop exact duplicates (same prompt and completion, within the
iteration and against rows carried from earlier iterations); cap the samples kept per prompt; carry earlier
iterations' rows ('accumulate', Lee et al. 2025) or not ('replace', STaR / ReST-EM); mix in a share of the
labelled seed data, which anchors the model against collapse on its own outputs.
Recipes dpo and spin build preference pairs instead: `flywheel.steps.pairs`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flywheel.config import Config
from flywheel.steps import step
from flywheel.io import read_table, write_table
from flywheel.schema import CURATED_COLUMNS, DROPPED_COLUMNS, VERDICT_COLUMNS


def _drop(df: pd.DataFrame, mask: pd.Series, reason, dropped: list[pd.DataFrame]) -> pd.DataFrame:
    """Move the rows under `mask` to `dropped` with `reason` (a string or a Series); return the rest."""
    out = df[mask].copy()
    out["drop_reason"] = reason[mask] if isinstance(reason, pd.Series) else reason
    dropped.append(out)
    return df[~mask]


@step
def curate_samples(verdicts_path: str | Path, seed_path: str | Path, out_path: str | Path,
                   dropped_path: str | Path, cfg: Config, iteration: int,
                   previous_path: str | Path | None = None) -> dict:
    if cfg.train.recipe in ("dpo", "spin"):  # preference recipes train on pairs, built in their own module
        from flywheel.steps.pairs import curate_pairs

        return curate_pairs(verdicts_path, seed_path, out_path, dropped_path, cfg, iteration, previous_path)
    c = cfg.curate
    df = read_table(verdicts_path, VERDICT_COLUMNS, what="verdicts").sort_values(["prompt_id", "sample_id"])
    verdicts_prompts = df["prompt_id"].nunique()
    seed = read_table(seed_path, ("prompt_id", "prompt", "completion", "difficulty"), what="labelled seed set")
    dropped: list[pd.DataFrame] = []
    df["duplicate_of"] = ""

    df = _drop(df, df["score"] < c.min_score, "rejected by verifier: " + df["reason"], dropped)

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

    rank = df.groupby("prompt_id").cumcount()
    df = _drop(df, rank >= c.max_per_prompt, f"over the cap of {c.max_per_prompt} per prompt", dropped)

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
    return metrics


def _reason_counts(reasons: pd.Series) -> dict[str, int]:
    # "rejected by verifier: wrong: expected 123, got 124" -> count by the part before the details
    heads = reasons.str.replace(r": expected .*$", "", regex=True).str.replace(r", got .*$", "", regex=True)
    return {str(k): int(v) for k, v in heads.value_counts().items()}
