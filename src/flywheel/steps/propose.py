"""propose: the current model writes new problems; those it solves sometimes but not always join the next
iteration's prompt pool.

Self-Instruct (Wang et al. 2022, arXiv 2212.10560) grows a task pool from the model's own writing, shown a
few pool examples per prompt, and drops what repeats the pool; SELF-GUIDE (Zhao et al. 2024, arXiv
2407.11186) does it for one task from a handful of examples; STP (Dong and Ma 2025, arXiv 2502.00212) keeps
the conjectures its prover proves sometimes but not always, because a problem at the edge of what the model
can do is one it learns from. Here, per iteration:

  1. write: `propose.proposals` prompts (the task's `propose_prompt`), each showing `propose.examples`
     problems of one difficulty from the iteration's prompt pool, sampled at `propose.temperature`;
  2. filter (`filter_proposals`): duplicate (of another proposal or a pool prompt, exact or normalised text),
     in-eval (an evaluation prompt: contamination), invalid (the task's `parse_proposal` says why);
  3. estimate (`keep_in_window`): `propose.samples` answers per surviving problem from the same model, scored
     by the configured verifier; keep those whose pass rate is within `propose.pass_rate_window`.

The kept problems are problem rows, read by the next iteration's `sample_prompts`; every dropped proposal
is written with its reason.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from flywheel.config import Config
from flywheel.gates import check_gate, expectations, rule
from flywheel.io import read_json, read_table, write_table
from flywheel.text import words
from flywheel.schema import DROPPED_PROPOSAL_COLUMNS, PROBLEM_COLUMNS, PROPOSAL_COLUMNS, SAMPLE_COLUMNS
from flywheel.steps import step
from flywheel.steps.data import task_of
from flywheel.tasks import check_can_propose

REASONS = ("duplicate", "in-eval", "invalid", "too-hard", "too-easy")


def normalize(text: str) -> str:
    """Case and whitespace do not make a problem new (the gates' word normalisation)."""
    return " ".join(words(text))


def proposal_prompts(task, pool: pd.DataFrame, n: int, examples: int, seed: int) -> list[str]:
    """`n` proposal prompts, each showing `examples` pool problems of one difficulty (drawn in proportion to
    the pool's rows, so a pool weighted toward its hardest level is shown that level most)."""
    rng = random.Random(seed)
    rows = pool.to_dict("records")
    by_difficulty: dict[int, list[dict]] = {}
    for r in rows:
        by_difficulty.setdefault(int(r["difficulty"]), []).append(r)
    out = []
    for _ in range(n):
        level = by_difficulty[int(rng.choice(rows)["difficulty"])]
        out.append(task.propose_prompt(rng.sample(level, min(examples, len(level)))))
    return out


def filter_proposals(task, texts: list[str], pool_prompts: list[str], eval_prompts: list[str]
                     ) -> tuple[list[dict], list[dict]]:
    """Parse and deduplicate the model's proposals, in order. Returns (candidates, dropped): candidates are
    problem rows plus 'proposal' (the model's text); each dropped row says why: invalid (the task's reason),
    in-eval (its text or prompt is an evaluation prompt), duplicate (of an earlier proposal or a pool prompt,
    after normalising case and whitespace; `duplicate_of` names which)."""
    seen = {normalize(p): f"pool: {p}" for p in pool_prompts}
    evals = {normalize(p) for p in eval_prompts}
    candidates, dropped = [], []
    for i, text in enumerate(texts):
        hit = None
        try:
            parsed = task.parse_proposal(text)
        except ValueError as err:  # the task's reason the text is not a problem (other errors are bugs: raised)
            row, reason, detail = {c: "" for c in PROBLEM_COLUMNS} | {"difficulty": -1}, "invalid", str(err)
        else:
            row = {c: parsed[c] for c in PROBLEM_COLUMNS}
            # the id too: two texts the task reads as the same problem are one problem
            keys = [normalize(text), normalize(row["prompt"]), f"id: {row['prompt_id']}"]  # a list: a fixed order
            hit = next((seen[k] for k in keys if k in seen), None)
            if evals.intersection(keys):
                reason, detail = "in-eval", "an evaluation prompt (contamination)"
            elif hit is not None:
                reason, detail = "duplicate", f"same problem as {hit}"
            else:
                seen.update({k: f"proposal {i}" for k in keys})
                candidates.append({**row, "proposal": text})
                continue
        dropped.append({**row, "proposal": text, "pass_rate": float("nan"), "drop_reason": reason,
                        "detail": detail, "duplicate_of": hit if reason == "duplicate" else ""})
    return candidates, dropped


def keep_in_window(candidates: list[dict], pass_rates: list[float], window: tuple[float, float]
                   ) -> tuple[list[dict], list[dict]]:
    """Keep the candidates whose pass rate is within [lo, hi]; the others are dropped as too-hard / too-easy."""
    lo, hi = window
    kept, dropped = [], []
    for row, rate in zip(candidates, pass_rates):
        row = {**row, "pass_rate": rate}
        if rate < lo:
            dropped.append({**row, "drop_reason": "too-hard", "detail": f"pass rate {rate:.3f} < {lo}", "duplicate_of": ""})
        elif rate > hi:
            dropped.append({**row, "drop_reason": "too-easy", "detail": f"pass rate {rate:.3f} > {hi}", "duplicate_of": ""})
        else:
            kept.append(row)
    return kept, dropped


@step
def propose_problems(model_dir: str | Path, prompts_path: str | Path, eval_path: str | Path, out_path: str | Path,
                     dropped_path: str | Path, cfg: Config, iteration: int,
                     plan_path: str | Path | None = None) -> dict:
    """Write `propose.proposals` problems with the model at `model_dir`, from examples of the iteration's
    prompts (`prompts_path`); keep those it solves sometimes but not always (`out_path`, problem rows for the
    next iteration's prompts step); every other one goes to `dropped_path` with its reason. The pass rate is
    sampled at the temperature of the iteration's plan (`plan_path`: the prompts step's metrics), as generate's."""
    from flywheel.model import load_model
    from flywheel.steps.generate import rendered_prompts
    from flywheel.steps.verify import verifier_of
    from flywheel.steps.vllm_backend import open_decoder

    p, g = cfg.propose, cfg.generate
    temperature = read_json(plan_path, "prompt plan")["plan"]["temperature"] if plan_path else g.temperature
    task = task_of(cfg)
    check_can_propose(task, cfg.task.name)
    pool = read_table(prompts_path, PROBLEM_COLUMNS, what="prompts")
    evals = read_table(eval_path, PROBLEM_COLUMNS, what="evaluation set")
    seed = cfg.seed + 1000 * iteration + 7  # apart from generate's seed (cfg.seed + iteration)
    decoder = open_decoder(g.backend, model_dir, seed=seed, load=lambda: load_model(model_dir, cfg.model))
    prompts = proposal_prompts(task, pool, p.proposals, p.examples, seed)
    # Both decodes ask the model as generate does: through its chat template when it has one.
    rendered, special = rendered_prompts(model_dir, prompts, cfg)
    texts = [s[0][0] for s in decoder.decode(rendered, samples=1, temperature=p.temperature, top_p=g.top_p,
                                             max_new_tokens=p.max_new_tokens, batch_size=g.batch_size, seed=seed,
                                             desc="propose", add_special_tokens=special)]
    candidates, dropped = filter_proposals(task, texts, pool["prompt"].tolist(), evals["prompt"].tolist())
    rates: list[float] = []
    if candidates:
        answers = decoder.decode(rendered_prompts(model_dir, [c["prompt"] for c in candidates], cfg)[0],
                                 samples=p.samples, temperature=temperature, top_p=g.top_p,
                                 max_new_tokens=g.max_new_tokens, batch_size=g.batch_size, seed=seed + 1,
                                 desc="propose: pass rate", keys=[c["prompt_id"] for c in candidates],
                                 add_special_tokens=special)
        samples = pd.DataFrame([{**{k: c[k] for k in PROBLEM_COLUMNS}, "sample_id": s, "completion": text,
                                 "prompt_tokens": 0, "completion_tokens": n, "finished": fin, "model": str(model_dir)}
                                for c, outs in zip(candidates, answers) for s, (text, n, fin) in enumerate(outs)],
                               columns=list(SAMPLE_COLUMNS))
        correct = [bool(v.correct) for v in verifier_of(cfg)(samples)]  # K rows per candidate, in order
        rates = [sum(correct[j:j + p.samples]) / p.samples for j in range(0, len(correct), p.samples)]
    kept, too = keep_in_window(candidates, rates, p.pass_rate_window)
    dropped += too
    kept_df = pd.DataFrame(kept, columns=list(PROPOSAL_COLUMNS)).assign(iteration=iteration)
    dropped_df = pd.DataFrame(dropped, columns=list(DROPPED_PROPOSAL_COLUMNS)).assign(iteration=iteration)
    write_table(kept_df.astype({"difficulty": int}), out_path)
    write_table(dropped_df.astype({"difficulty": int}), dropped_path)
    reasons = dropped_df["drop_reason"].value_counts()
    valid = len(texts) - int(reasons.get("invalid", 0))
    metrics = {"proposed": len(texts), "valid": valid, "valid_share": round(valid / max(len(texts), 1), 4),
            "candidates": len(candidates), "kept": len(kept_df),
            "dropped_by_reason": {r: int(reasons.get(r, 0)) for r in REASONS},
            "kept_by_difficulty": {str(k): int(v) for k, v in kept_df.groupby("difficulty").size().items()},
            "candidate_pass_rate": round(sum(rates) / len(rates), 4) if rates else None,
            "examples": texts[:5], "backend": decoder.backend, "backend_reason": decoder.reason,
            "temperature": temperature}
    metrics["gate"] = check_gate("proposals", out_path, proposals_suite, cfg,
                                 inputs={"model": model_dir, "prompts": prompts_path})
    return metrics


def proposals_suite(cfg: Config) -> list:
    """The rules the kept proposals must meet before they join the next iteration's prompts (docs/data.md)."""
    E, g = expectations(), cfg.gates
    lo, hi = cfg.propose.pass_rate_window
    return [
        rule("proposals.schema", E.ExpectTableColumnsToMatchSet(column_set=list(PROPOSAL_COLUMNS), exact_match=False),
             "all proposal columns", "every column of docs/architecture.md, 'Artifacts'"),
        rule("proposals.prompt_length", E.ExpectColumnValueLengthsToBeBetween(
            column="prompt", min_value=1, max_value=g.max_prompt_chars),
             "proposed prompts are non-empty and not too long", f"1..{g.max_prompt_chars} chars (gates.max_prompt_chars)"),
        rule("proposals.unique_prompts", E.ExpectColumnValuesToBeUnique(column="prompt"),
             "no proposal twice", "unique prompt"),
        rule("proposals.unique_ids", E.ExpectColumnValuesToBeUnique(column="prompt_id"),
             "one id per proposal", "unique prompt_id"),
        rule("proposals.pass_rate", E.ExpectColumnValuesToBeBetween(column="pass_rate", min_value=lo, max_value=hi),
             "kept proposals are solved sometimes but not always", f"pass_rate in [{lo}, {hi}] (propose.pass_rate_window)"),
    ]
