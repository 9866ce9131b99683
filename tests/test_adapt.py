"""Adaptive sampling and the frontier curriculum: decisions from the last iteration's health."""

from collections import Counter

import pytest

from flywheel.adapt import choose_sampling, frontier_weights, reweight
from flywheel.io import read_json, read_table, write_json
from flywheel.steps.data import sample_prompts

from conftest import tiny_config

ADAPTIVE = {"prompts_per_iteration": 40, "samples_per_prompt": 4, "temperature": 0.8, "adaptive": True,
            "temperature_bounds": [0.5, 1.0], "samples_bounds": [2, 8], "max_new_tokens": 6}


def _last(prompts_with_correct, distinct, t=0.8, k=4):
    return {"health": {"prompts_with_correct": prompts_with_correct, "distinct_correct_per_prompt": distinct,
                       "balance_score": 0.4},
            "generate": {"plan": {"temperature": t, "samples_per_prompt": k}}}


@pytest.mark.parametrize("last,temperature,samples,why", [
    (_last(0.3, 1.0), 0.7, 8, "exploitation"),          # rarely right: more, cooler samples
    (_last(0.3, 1.0, t=0.5, k=8), 0.5, 8, "exploitation"),  # ... within the bounds
    (_last(0.9, 1.2), 0.9, 4, "exploration"),           # right but repetitive: hotter
    (_last(0.9, 1.2, t=1.0), 1.0, 4, "exploration"),    # ... capped
    (_last(0.9, 2.0), 0.8, 4, "balanced"),
    (None, 0.8, 4, "configured"),
])
def test_choose_sampling(last, temperature, samples, why):
    plan = choose_sampling(tiny_config(generate=ADAPTIVE), last)
    assert plan["temperature"] == pytest.approx(temperature) and plan["samples_per_prompt"] == samples
    assert plan["reason"].startswith(why)


def test_not_adaptive_keeps_the_config():
    plan = choose_sampling(tiny_config(generate={**ADAPTIVE, "adaptive": False}), _last(0.1, 0.1))
    assert (plan["temperature"], plan["samples_per_prompt"], plan["reason"]) == (0.8, 4, "configured")


def test_frontier_prefers_sometimes_solved_levels():
    w = frontier_weights({"1": 1.0, "2": 0.5, "3": 0.0})
    assert w == {1: 0.05, 2: 0.25, 3: 0.05}
    rows = [{"difficulty": d, "i": i} for d in (1, 2, 3, 4) for i in range(400)]
    picked = Counter(r["difficulty"] for r in reweight(rows, w, 200, seed=0))
    assert picked[2] > 3 * picked[1] and picked[4] > 3 * picked[3]  # 4 is unseen: the new frontier
    assert sum(picked.values()) == 200


def test_sample_prompts_plans_from_the_previous_summary(tmp_path):
    cfg = tiny_config(generate={**ADAPTIVE, "curriculum": "frontier"})
    write_json({"iterations": [{**_last(0.3, 1.0), "verify": {"pass_rate_by_difficulty": {"1": 1.0, "2": 0.5}}}]},
               tmp_path / "summary.json")
    m = sample_prompts(cfg, 2, tmp_path / "p.parquet", previous_summary=tmp_path / "summary.json",
                       metrics_path=tmp_path / "m.json")
    assert read_json(tmp_path / "m.json")["plan"] == m["plan"] and m["plan"]["samples_per_prompt"] == 8
    df = read_table(tmp_path / "p.parquet")
    assert len(df) == 40 and (df["difficulty"] == 2).sum() > (df["difficulty"] == 1).sum()
