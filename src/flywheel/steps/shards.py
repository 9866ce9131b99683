"""merge_shards: join the verdicts of `cluster.shards` generate -> verify pods into one table.

Shard k of n generates and verifies every n-th prompt from the k-th on (generate_samples(shard=k,
shards=n)); sampling is seeded per prompt (flywheel.steps.sampling), so the merged table has exactly the
rows a single pod would have produced, in the same order (prompt order of the iteration's prompts,
then sample_id). The generate and verify metrics are merged too, so the report reads the same.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from flywheel.io import ArtifactError, read_json, read_table, write_json, write_table
from flywheel.schema import PROBLEM_COLUMNS, VERDICT_COLUMNS
from flywheel.steps import step
from flywheel.steps.verify import pass_metrics


@step
def merge_shards(prompts_path: str | Path, verdict_paths: list[str | Path], generate_metric_paths: list[str | Path],
                 verify_metric_paths: list[str | Path], out_path: str | Path, generate_metrics_out: str | Path,
                 verify_metrics_out: str | Path) -> dict:
    """Concatenate shard verdicts in prompt order; write merged generate and verify metrics as JSON."""
    prompts = read_table(prompts_path, PROBLEM_COLUMNS, what="prompts")
    parts = [read_table(p, VERDICT_COLUMNS, what=f"verdicts of shard {k}") for k, p in enumerate(verdict_paths)]
    df = pd.concat(parts, ignore_index=True)
    position = {pid: i for i, pid in enumerate(prompts["prompt_id"])}
    missing = sorted(set(position) - set(df["prompt_id"]))
    if missing:
        raise ArtifactError(f"{len(missing)} prompt(s) have no samples in any of the {len(parts)} shards, e.g. "
                            f"{missing[0]!r}: a shard's generate step did not cover its slice of {prompts_path}")
    if df.duplicated(["prompt_id", "sample_id"]).any():
        raise ArtifactError("the shards overlap: a (prompt_id, sample_id) appears twice; every shard must be "
                            "generated with the same `shards` count and a different shard index")
    df = (df.assign(_pos=df["prompt_id"].map(position)).sort_values(["_pos", "sample_id"], kind="stable")
          .drop(columns="_pos").reset_index(drop=True))
    write_table(df, out_path)

    gens = [read_json(p, "generate metrics") for p in generate_metric_paths]
    vers = [read_json(p, "verify metrics") for p in verify_metric_paths]
    # Shards run side by side: wall time is the slowest shard's; throughput is all tokens over that.
    wall = max(g["seconds"] for g in gens)
    new_tokens = sum(g["new_tokens"] for g in gens)
    write_json({"prompts": sum(g["prompts"] for g in gens), "samples": sum(g["samples"] for g in gens),
                "new_tokens": new_tokens, "unfinished": sum(g["unfinished"] for g in gens),
                "seconds": wall, "tokens_per_second": round(new_tokens / wall, 1) if wall else None,
                "shards": len(gens), "seconds_by_shard": [g["seconds"] for g in gens],
                "backend": "+".join(sorted({g["backend"] for g in gens})),  # shards on mixed nodes may differ
                "duration_s": max(g.get("duration_s", 0.0) for g in gens)}, generate_metrics_out)
    write_json({"samples": len(df), "correct": int(df["correct"].sum()), **pass_metrics(df), "shards": len(vers),
                "duration_s": max(v.get("duration_s", 0.0) for v in vers)}, verify_metrics_out)
    return {"shards": len(parts), "samples": len(df), "prompts": len(position)}
