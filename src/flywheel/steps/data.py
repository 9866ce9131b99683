"""prepare: the task's labelled seed set, its held-out evaluation sets, and the prompts of an iteration."""

from __future__ import annotations

import zlib
from pathlib import Path

import pandas as pd

from flywheel.config import Config
from flywheel.steps import step
from flywheel.io import read_json, read_summary, read_table, write_table
from flywheel.schema import PROBLEM_COLUMNS, PROPOSAL_COLUMNS, SEED_COLUMNS
from flywheel.tasks import load_task


def task_of(cfg: Config):
    return load_task(cfg.task.name, cfg.task.params)


@step
def make_datasets(cfg: Config, seed_path: str | Path, eval_path: str | Path) -> dict:
    """Write the labelled seed set and the held-out evaluation sets as Parquet."""
    task = task_of(cfg)
    inputs = {}
    if cfg.data.seed_set.path:  # named by DVC coordinates: read with dvc.api, revision and hash recorded
        seed, inputs["seed_set"] = _dvc_table(cfg.data.seed_set, SEED_COLUMNS, "data.seed_set")
    else:
        seed = pd.DataFrame(task.seed_set(cfg.seed), columns=list(SEED_COLUMNS))
    if cfg.data.eval_set.path:
        evals, inputs["eval_set"] = _dvc_table(cfg.data.eval_set, PROBLEM_COLUMNS, "data.eval_set")
    else:
        evals = pd.DataFrame(task.eval_sets(cfg.evaluate.per_difficulty, cfg.seed), columns=list(PROBLEM_COLUMNS))
    overlap = set(seed["prompt"]) & set(evals["prompt"])
    if overlap:
        raise ValueError(f"task {cfg.task.name!r}: {len(overlap)} seed prompts are also held-out prompts, "
                         f"e.g. {sorted(overlap)[0]!r}; the task must keep them apart")
    write_table(seed, seed_path)
    write_table(evals, eval_path)
    metrics = {"seed_rows": len(seed), "eval_rows": len(evals),
               "seed_difficulties": sorted(int(d) for d in seed["difficulty"].unique()),
               "eval_difficulties": sorted(int(d) for d in evals["difficulty"].unique())}
    if getattr(task, "inputs", None):  # the task's own data file, read from a DVC repository
        inputs["task_data"] = task.inputs
    if inputs:
        metrics["inputs"] = inputs
    return metrics


def _dvc_table(src, columns, key: str):
    from flywheel.versions import read_dvc_table

    df, record = read_dvc_table(src.repo, src.path, src.rev, src.remote)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{key}: {src.path} at {src.repo or '.'}@{src.rev or 'HEAD'} lacks column(s) "
                         f"{', '.join(missing)}; it needs {', '.join(columns)}")
    return df[list(columns)].astype({"prompt_id": str, "prompt": str, "difficulty": int}), record


@step
def sample_prompts(cfg: Config, iteration: int, out_path: str | Path,
                   previous_summary: str | Path | None = None, proposed_path: str | Path | None = None) -> dict:
    """Write the prompts of `iteration` (a fresh draw each iteration, never a held-out problem) and plan
    its sampling (`generate.adaptive`, `generate.curriculum: frontier` read the last iteration's health).

    `task.prompt_source: seed` draws them from the labelled seed set instead (SPIN pairs each prompt's seed
    answer with the model's own): the task rebuilds its seed set from the seed, so the prompt ids match the
    seed-set artifact that curate reads, and no pipeline input is needed.

    `proposed_path`: the problems the previous iteration's propose step kept; they join this iteration's
    prompts (after the task's draw, minus any prompt the draw already has).

    `generate.grow_threshold` > 0: the hardest difficulty drawn (`top`) rises by one over the last
    iteration's once the held-out accuracy at it reaches the threshold (the first iteration starts from
    the seed set's hardest level), else it stays; the task's `prompts` receives it.
    """
    from flywheel.adapt import choose_sampling, frontier_weights, reweight

    last = read_summary(previous_summary, "previous summary")["iterations"][-1] if previous_summary else None
    n, task = cfg.generate.prompts_per_iteration, task_of(cfg)
    if cfg.task.prompt_source == "seed":
        seed = pd.DataFrame(task.seed_set(cfg.seed), columns=list(SEED_COLUMNS)).drop_duplicates("prompt_id")
        draw = seed.sample(n=min(n, len(seed)), random_state=zlib.crc32(f"prompts-{cfg.seed}-{iteration}".encode()))
        df = draw[list(PROBLEM_COLUMNS)].reset_index(drop=True)
    else:
        frontier = cfg.generate.curriculum == "frontier" and last is not None and "verify" in last
        top = {}
        if cfg.generate.grow_threshold > 0:
            top = grow_difficulty(cfg.generate.grow_threshold, last, max(r["difficulty"] for r in task.seed_set(cfg.seed)))
        rows = task.prompts(iteration, 4 * n if frontier else n, cfg.seed, **({"top": top["top"]} if top else {}))
        if frontier:
            rows = reweight(rows, frontier_weights(last["verify"]["pass_rate_by_difficulty"]), n, cfg.seed + iteration)
        df = pd.DataFrame(rows, columns=list(PROBLEM_COLUMNS))
    proposed = 0
    if proposed_path:
        kept = read_table(proposed_path, PROPOSAL_COLUMNS, what="kept proposals")[list(PROBLEM_COLUMNS)]
        kept = kept[~kept["prompt"].isin(df["prompt"]) & ~kept["prompt_id"].isin(df["prompt_id"])]
        df, proposed = pd.concat([df, kept], ignore_index=True), len(kept)
    write_table(df, out_path)
    plan = choose_sampling(cfg, last)
    if cfg.task.prompt_source == "task" and cfg.generate.grow_threshold > 0:
        plan.update(top_difficulty=top["top"], top_reason=top["reason"])  # via generate's metrics, to the summary
    return {"prompts": len(df), "proposed": proposed,
            "by_difficulty": {str(k): int(v) for k, v in df.groupby("difficulty").size().items()}, "plan": plan}


def grow_difficulty(threshold: float, last: dict | None, seed_top: int) -> dict:
    """The hardest prompt difficulty of the next iteration, one above the last iteration's once its held-out
    accuracy there reaches `threshold` (a digit at a time for arithmetic), and why.

    The last top is the one recorded in the last iteration's plan (`generate.plan.top_difficulty`); before
    any (iteration 1) it is the seed set's hardest level, which the warm start trained on."""
    prev = (last or {}).get("generate", {}).get("plan", {}).get("top_difficulty", seed_top)
    by_difficulty = (last or {}).get("evaluate", {}).get("accuracy_by_difficulty", {})
    acc = by_difficulty.get(str(prev))
    if acc is None:
        return {"top": prev, "reason": f"no held-out accuracy at difficulty {prev} yet: stay"}
    if acc >= threshold and str(prev + 1) not in by_difficulty:
        return {"top": prev, "reason": f"accuracy {acc:.3f} at difficulty {prev}, the hardest evaluated: stay"}
    if acc >= threshold:
        return {"top": prev + 1, "reason": f"accuracy {acc:.3f} at difficulty {prev} >= {threshold}: one up"}
    return {"top": prev, "reason": f"accuracy {acc:.3f} at difficulty {prev} < {threshold}: stay"}
