"""generate -> verify of one iteration, in one pod each or fanned out over `cluster.shards` pods.

    shards = 1:  generate ─> verify                                  (the plain DAG)
    shards = n:  ParallelFor k in 0..n-1: generate(shard k) ─> verify ─┐
                                                        merge_shards <─┘ (dsl.Collected)

Sampling is seeded per prompt, so both shapes give the same rows (tests/test_shards.py). kfp.local runs
the ParallelFor too (two shards at a time).
"""

from __future__ import annotations

from types import SimpleNamespace

from kfp import dsl


def generate_and_verify(c: SimpleNamespace, shards: int, *, configs, iteration: int, model, prompts,
                        plan) -> SimpleNamespace:
    """Tasks for one iteration's generate -> verify; returns its `verdicts`, `generation` and `verification` metrics.

    `configs`: the configure task's outputs (each step's config slice); `plan`: the prompts step's metrics
    (its sampling plan)."""
    if shards == 1:
        gen = c.generate(config=configs["generate"], iteration=iteration, model=model, prompts=prompts, plan=plan)
        gen.set_display_name(f"generate {iteration}")
        ver = c.verify(config=configs["verify"], samples=gen.outputs["samples"]).set_display_name(f"verify {iteration}")
        return SimpleNamespace(verdicts=ver.outputs["verdicts"], generation=gen.outputs["metrics"],
                               verification=ver.outputs["metrics"])
    with dsl.ParallelFor(items=list(range(shards)), name=f"shards-{iteration}") as shard:
        gen = c.generate(config=configs["generate"], iteration=iteration, model=model, prompts=prompts, plan=plan, shard=shard,
                         shards=shards)
        gen.set_display_name(f"generate {iteration}")
        ver = c.verify(config=configs["verify"], samples=gen.outputs["samples"]).set_display_name(f"verify {iteration}")
    merged = c.merge_shards(prompts=prompts, verdicts=dsl.Collected(ver.outputs["verdicts"]),
                            generation=dsl.Collected(gen.outputs["metrics"]),
                            verification=dsl.Collected(ver.outputs["metrics"]))
    merged.set_display_name(f"merge shards {iteration}")
    return SimpleNamespace(verdicts=merged.outputs["merged"], generation=merged.outputs["generation_metrics"],
                           verification=merged.outputs["verification_metrics"])
