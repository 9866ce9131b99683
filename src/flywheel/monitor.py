"""Loop health: exploration, exploitation and the verifier's own reliability, per iteration.

Self-improvement stalls when samples lose diversity (exploration falls) or the verifier stops separating
good from bad (exploitation falls) (B-STaR, Zeng et al. 2024). These functions measure both on an
iteration's verdicts table; the record step stores them in summary.json and the report plots them.
All functions are pure: a DataFrame in, numbers out.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per prompt, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def distinct_ngram_ratio(texts: Iterable[str], n: int = 3) -> float:
    """Distinct character n-grams over all n-grams of `texts` (distinct-n, Li et al. 2016); 0 for no n-grams."""
    grams = [t[i:i + n] for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def separation_auc(scores: Iterable[float], labels: Iterable[bool]) -> float | None:
    """P(score of a random correct sample > score of a random wrong one), ties half (ROC AUC).

    None when one class is missing (nothing to separate)."""
    s = np.asarray(list(scores), dtype=float)
    y = np.asarray(list(labels), dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    ranks = pd.Series(np.concatenate([pos, neg])).rank().to_numpy()  # average ranks handle ties
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def balance_score(df: pd.DataFrame, n_star: int) -> float:
    """B-STaR's balance score, per prompt min(distinct correct selected / n_star, 1) x precision of the
    selection, averaged over prompts. `df` has prompt_id, completion, selected (the verifier accepted it)
    and gold (it is truly correct). High when the loop both explores (many distinct correct answers) and
    exploits (what the verifier selects is right)."""
    vals = []
    for _, g in df.groupby("prompt_id"):
        sel = g[g["selected"]]
        if len(sel) == 0:
            vals.append(0.0)
            continue
        distinct_right = sel.loc[sel["gold"], "completion"].nunique()
        vals.append(min(distinct_right / n_star, 1.0) * float(sel["gold"].mean()))
    return float(np.mean(vals)) if vals else 0.0


def iteration_health(df: pd.DataFrame, *, gold: pd.Series | None = None, n_star: int = 2) -> dict:
    """Exploration and exploitation metrics of one iteration's verdicts.

    `df`: the verdicts table (prompt_id, completion, correct, score). `gold`: true correctness where labels
    exist (e.g. the task's reference check) when the configured verifier is something else; by default the
    verdicts are taken as the truth.
    """
    gold = df["correct"] if gold is None else gold.astype(bool)
    k = int(df.groupby("prompt_id").size().min()) if len(df) else 0
    per_prompt = df.assign(_gold=gold.to_numpy()).groupby("prompt_id")
    n_c = per_prompt["_gold"].agg(["size", "sum"])
    right = df[gold.to_numpy()]
    out = {
        "samples_per_prompt": k,
        "pass@1": float(np.mean([pass_at_k(n, c, 1) for n, c in n_c.itertuples(index=False)])) if k else 0.0,
        f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for n, c in n_c.itertuples(index=False)])) if k else 0.0,
        "prompts_with_correct": float((n_c["sum"] > 0).mean()) if len(n_c) else 0.0,
        "distinct_correct_per_prompt": float(right.groupby("prompt_id")["completion"].nunique()
                                             .reindex(n_c.index, fill_value=0).mean()) if len(n_c) else 0.0,
        "distinct_3gram_ratio_correct": distinct_ngram_ratio(right["completion"].unique()),
        "separation_auc": separation_auc(df["score"], gold),
        "balance_score": balance_score(df.assign(selected=df["correct"], gold=gold.to_numpy()), n_star),
    }
    selected = df["correct"].to_numpy()
    g = gold.to_numpy()
    out["verifier_false_positive_rate"] = float((selected & ~g).sum() / max(1, (~g).sum()))
    out["verifier_false_negative_rate"] = float((~selected & g).sum() / max(1, g.sum()))
    return out


def mcnemar(champion: Iterable[bool], challenger: Iterable[bool]) -> dict:
    """Exact McNemar test on paired per-item correctness (same items, two models).

    b = items only the champion gets right, c = items only the challenger gets right. Under H0 (equal
    accuracy) the discordant pairs split 50/50, so the two-sided p-value is a binomial tail. Exact rather
    than chi-squared because the discordant count is small on small held-out sets.
    """
    a = np.asarray(list(champion), dtype=bool)
    b_ = np.asarray(list(challenger), dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"paired test needs the same items: {a.shape[0]} vs {b_.shape[0]} results")
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    n = b + c
    if n == 0:
        p = 1.0
    else:
        tail = sum(math.comb(n, i) for i in range(0, min(b, c) + 1)) / 2**n
        p = min(1.0, 2 * tail)
    return {"champion_only": b, "challenger_only": c, "p_value": p,
            "delta": float(b_.mean() - a.mean()) if len(a) else 0.0}


def gold_labels(task, df: pd.DataFrame) -> pd.Series:
    """True correctness by the task's own reference check, for judging another verifier against it."""
    problems = df[["prompt_id", "prompt", "reference", "difficulty"]].to_dict("records")
    return pd.Series([bool(task.verify(p, c).correct) for p, c in zip(problems, df["completion"])], index=df.index)


# --- uncertainty on accuracies ---------------------------------------------------------------------------
# 200 held-out items per difficulty give about +/- 7 points at 95 %: the report shows the interval beside
# every accuracy so that a 3-point move is not read as progress.

def wilson(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion `correct`/`n` (scipy's); None for n = 0."""
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(correct), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def paired_delta_interval(both: int, challenger_only: int, champion_only: int, neither: int,
                          confidence: float = 0.95) -> tuple[float, float] | None:
    """Interval for the accuracy difference challenger - champion on the same items (paired): Newcombe's
    hybrid score interval (method 10, Newcombe 1998), built from both accuracies' Wilson intervals and the
    correlation of the paired outcomes; it stays inside [-1, 1] and is sound at small counts, where the
    Wald interval is not. None for no items."""
    n = both + challenger_only + champion_only + neither
    if n == 0:
        return None
    p1, p2 = (both + challenger_only) / n, (both + champion_only) / n
    (l1, u1), (l2, u2) = wilson(both + challenger_only, n, confidence), wilson(both + champion_only, n, confidence)
    den = (both + challenger_only) * (champion_only + neither) * (both + champion_only) * (challenger_only + neither)
    phi = (both * neither - challenger_only * champion_only) / math.sqrt(den) if den else 0.0
    d = p1 - p2
    lo = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, lo), min(1.0, hi)


def accuracy_intervals(ev: dict, counts: dict[str, int], promote: dict | None = None) -> dict:
    """Wilson intervals of an evaluation's accuracies (overall, per difficulty, beyond the seed set) from the
    items per difficulty (`counts`), and the paired interval of the promotion's accuracy delta."""
    n = sum(counts.values())
    out: dict = {"accuracy": wilson(round(ev["accuracy"] * n), n),
                 "accuracy_by_difficulty": {d: wilson(round(acc * counts.get(d, 0)), counts.get(d, 0))
                                            for d, acc in ev.get("accuracy_by_difficulty", {}).items()}}
    if ev.get("accuracy_beyond_seed") is not None and ev.get("seed_max_difficulty") is not None:
        nb = sum(c for d, c in counts.items() if float(d) > ev["seed_max_difficulty"])
        out["accuracy_beyond_seed"] = wilson(round(ev["accuracy_beyond_seed"] * nb), nb)
    if promote and {"champion_only", "challenger_only", "challenger_accuracy"} <= set(promote):
        b, c = promote["challenger_only"], promote["champion_only"]
        both = round(promote["challenger_accuracy"] * n) - b
        out["promote_delta"] = paired_delta_interval(both, b, c, n - both - b - c)
    return out
