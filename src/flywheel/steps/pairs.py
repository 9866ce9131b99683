"""curate for the preference recipes: build (prompt, chosen, rejected) pairs from an iteration's verdicts.

`curate_samples` calls `curate_pairs` when `train.recipe` is `dpo` or `spin`; the curated artifact then holds
pairs (`PAIR_COLUMNS`) instead of rows, and the train step hands them to TRL's `DPOTrainer`.

- dpo (iterative DPO with verifier labels; Xiong et al. 2024, Pang et al. 2024): for each prompt, chosen is
  a sample the verifier accepted (score >= curate.min_score), rejected one it refused, and their scores
  differ by at least curate.min_margin. Up to curate.pairs_per_prompt pairs per prompt, spread over as many
  different samples as possible. A prompt whose samples are all right, or all wrong, teaches nothing here.
- spin (Self-Play Fine-Tuning; Chen et al. 2024): chosen is the prompt's labelled seed answer, rejected the
  model's own generation for it (the iteration's prompts come from the seed set: task.prompt_source: seed).
  The verifier's verdict is not used: SPIN pushes the model's distribution toward the labelled one.
  A generation identical to the seed answer gives a zero gradient and is dropped.

Every sample that ends up in no pair is written to the dropped table with its reason, as in `curate`.
With data_policy 'accumulate', earlier iterations' pairs are carried and exact repeats of them are not
built again.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flywheel.config import Config
from flywheel.gates import check_gate, expectations, rule
from flywheel.io import read_table, write_table
from flywheel.schema import DROPPED_COLUMNS, PAIR_COLUMNS, VERDICT_COLUMNS


def choose_pairs(chosen: list[tuple[int, float]], rejected: list[tuple[int, float]], n: int,
                 min_margin: float, exclude: set[tuple[int, int]] = frozenset()) -> list[tuple[int, int]]:
    """Pick up to `n` (chosen, rejected) index pairs whose score margin is >= `min_margin`.

    Greedy: the largest margin first; among equal margins, the pair whose samples were used least, so that
    n pairs cover as many distinct samples as possible (with binary scores every margin is equal, and this
    is what decides). `exclude` holds pairs that must not be built (repeats of earlier iterations).
    """
    cands = [(c, w, cs - ws) for c, cs in chosen for w, ws in rejected
             if cs - ws >= min_margin and (c, w) not in exclude]
    uses: dict[int, int] = {}
    picked: list[tuple[int, int]] = []
    while cands and len(picked) < n:
        best = max(cands, key=lambda x: (x[2], -max(uses.get(x[0], 0), uses.get(x[1], 0)),
                                         -(uses.get(x[0], 0) + uses.get(x[1], 0))))
        cands.remove(best)
        picked.append(best[:2])
        uses[best[0]] = uses.get(best[0], 0) + 1
        uses[best[1]] = uses.get(best[1], 0) + 1
    return picked


def _pair_key(prompt: str, chosen: str, rejected: str) -> str:
    return f"{prompt}\x00{chosen}\x00{rejected}"


def _dpo_pairs(df: pd.DataFrame, cfg: Config, earlier: set[str]) -> tuple[list[dict], dict[int, str]]:
    """Pairs of verified-correct vs verified-wrong samples of the same prompt; reasons of unused rows."""
    c = cfg.curate
    pairs, reasons = [], {}
    for _, g in df.groupby("prompt_id", sort=True):
        good = [(i, s) for i, s in zip(g.index, g["score"]) if s >= c.min_score]
        bad = [(i, s) for i, s in zip(g.index, g["score"]) if s < c.min_score]
        if not good or not bad:
            why = ("no verified-correct sample of this prompt to prefer" if not good
                   else "no verified-wrong sample of this prompt to reject")
            reasons.update({i: why for i in g.index})
            continue
        text = df["completion"]
        prompt = g["prompt"].iloc[0]
        repeats = {(ci, wi) for ci, _ in good for wi, _ in bad
                   if _pair_key(prompt, text[ci], text[wi]) in earlier}
        picked = choose_pairs(good, bad, c.pairs_per_prompt, c.min_margin, repeats)
        used = {i for p in picked for i in p}
        for ci, wi in picked:
            pairs.append({"prompt_id": g["prompt_id"].iloc[0], "prompt": prompt, "chosen": text[ci],
                          "rejected": text[wi], "difficulty": g["difficulty"].iloc[0],
                          "chosen_score": float(df.at[ci, "score"]), "rejected_score": float(df.at[wi, "score"])})
        good_ids, scores = {i for i, _ in good}, df["score"]
        for i in g.index:
            if i in used:
                continue
            is_good = i in good_ids
            in_margin = [j for j, _ in (bad if is_good else good) if abs(scores[i] - scores[j]) >= c.min_margin]
            if not in_margin:
                reasons[i] = f"margin below {c.min_margin} to every sample on the other side"
            elif all(((i, j) if is_good else (j, i)) in repeats for j in in_margin):
                reasons[i] = "every pair it forms repeats an earlier iteration's pair"
            else:
                reasons[i] = f"over the cap of {c.pairs_per_prompt} pairs per prompt"
    return pairs, reasons


def _spin_pairs(df: pd.DataFrame, seed: pd.DataFrame, cfg: Config,
                earlier: set[str]) -> tuple[list[dict], dict[int, str]]:
    """Pairs of (labelled seed answer, the model's own generation) per seed prompt; reasons of unused rows."""
    answer = dict(zip(seed["prompt_id"], seed["completion"]))
    pairs, reasons = [], {}
    for pid, g in df.groupby("prompt_id", sort=True):
        if pid not in answer:
            reasons.update({i: "prompt not in the seed set (spin needs its labelled answer; "
                               "set task.prompt_source: seed)" for i in g.index})
            continue
        kept = 0
        for i, row in g.iterrows():
            if row["completion"].strip() == answer[pid].strip():
                reasons[i] = "identical to the seed answer (no preference to learn)"
            elif _pair_key(row["prompt"], answer[pid], row["completion"]) in earlier:
                reasons[i] = "repeats an earlier iteration's pair"
            elif kept >= cfg.curate.pairs_per_prompt:
                reasons[i] = f"over the cap of {cfg.curate.pairs_per_prompt} pairs per prompt"
            else:
                kept += 1
                pairs.append({"prompt_id": pid, "prompt": row["prompt"], "chosen": answer[pid],
                              "rejected": row["completion"], "difficulty": row["difficulty"],
                              "chosen_score": 1.0, "rejected_score": float(row["score"])})
    return pairs, reasons


def curate_pairs(verdicts_path: str | Path, seed_path: str | Path, out_path: str | Path,
                 dropped_path: str | Path, cfg: Config, iteration: int,
                 previous_path: str | Path | None = None) -> dict:
    """Write the iteration's preference pairs to `out_path`, unused samples with reasons to `dropped_path`."""
    df = read_table(verdicts_path, VERDICT_COLUMNS, what="verdicts").sort_values(["prompt_id", "sample_id"])
    df = df.reset_index(drop=True)
    seed = read_table(seed_path, ("prompt_id", "prompt", "completion", "difficulty"), what="labelled seed set")
    seed = seed.drop_duplicates("prompt_id")

    carried = pd.DataFrame(columns=list(PAIR_COLUMNS))
    if cfg.curate.data_policy == "accumulate" and previous_path:
        carried = read_table(previous_path, PAIR_COLUMNS, what="previous curated pairs")
    earlier = {_pair_key(*r) for r in carried[["prompt", "chosen", "rejected"]].itertuples(index=False)}

    # The same completion twice adds the same pair twice; keep the first (as curate does for rows).
    key = df["prompt_id"] + "\x00" + df["completion"]
    ids = df["prompt_id"].astype(str) + "/" + df["sample_id"].astype(str)
    first_id = dict(zip(key[::-1], ids[::-1]))
    dup = key.duplicated()
    reasons = {i: "exact duplicate within iteration" for i in df.index[dup]}
    rest = df[~dup]
    if cfg.train.recipe == "spin":
        pairs, why = _spin_pairs(rest, seed, cfg, earlier)
    else:
        pairs, why = _dpo_pairs(rest, cfg, earlier)
    reasons.update(why)

    own = pd.DataFrame(pairs, columns=[c for c in PAIR_COLUMNS if c not in ("source", "iteration")])
    own = own.assign(source="self", iteration=iteration)[list(PAIR_COLUMNS)]
    out = pd.concat([carried, own], ignore_index=True) if len(carried) else own
    out = out.sample(frac=1.0, random_state=cfg.seed + iteration).reset_index(drop=True)

    drops = df.loc[sorted(reasons)].copy()
    drops["drop_reason"] = [reasons[i] for i in drops.index]
    drops["duplicate_of"] = [first_id[key[i]] if dup[i] else "" for i in drops.index]
    write_table(out, out_path)
    write_table(drops[list(DROPPED_COLUMNS)].reset_index(drop=True), dropped_path)
    metrics = {
        "pairs": True, "kept": len(out), "kept_new": len(own), "kept_carried": len(carried), "kept_seed": 0,
        "prompts_paired": int(own["prompt_id"].nunique()), "dropped": len(drops),
        "dropped_by_reason": {str(k): int(v) for k, v in drops["drop_reason"].value_counts().items()},
        "kept_by_difficulty": {str(k): int(v) for k, v in own.groupby("difficulty").size().items()},
        "fallback": None if len(out) else "no preference pairs: the train step passes the model on unchanged",
    }
    metrics["gate"] = check_gate("curated", out_path, pairs_suite, cfg, inputs={"verdicts": verdicts_path})
    return metrics


def pairs_suite(cfg: Config) -> list:
    """The rules the preference pairs (recipes dpo, spin) must meet before train uses them (docs/data.md)."""
    E, g = expectations(), cfg.gates
    return [
        rule("pairs.schema", E.ExpectTableColumnsToMatchSet(column_set=list(PAIR_COLUMNS), exact_match=False),
             "all pair columns", "every column of docs/architecture.md, 'Artifacts'"),
        *(rule(f"pairs.no_null_{c}", E.ExpectColumnValuesToNotBeNull(column=c), f"every pair has a {c} answer",
               "0 nulls") for c in ("chosen", "rejected")),
        *(rule(f"pairs.{c}_length", E.ExpectColumnValueLengthsToBeBetween(column=c, max_value=g.max_completion_chars),
               f"{c} answers are not too long", f"<= {g.max_completion_chars} chars (gates.max_completion_chars)")
          for c in ("chosen", "rejected")),
        rule("pairs.prompt_length", E.ExpectColumnValueLengthsToBeBetween(
            column="prompt", min_value=1, max_value=g.max_prompt_chars),
             "prompts are non-empty and not too long", f"1..{g.max_prompt_chars} chars (gates.max_prompt_chars)"),
        rule("pairs.score_order", E.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="chosen_score", column_B="rejected_score", or_equal=True),
             "the chosen answer scores at least the rejected one", "chosen_score >= rejected_score"),
        rule("pairs.unique", E.ExpectCompoundColumnsToBeUnique(column_list=["prompt", "chosen", "rejected"]),
             "no pair twice", "unique (prompt, chosen, rejected)"),
    ]
