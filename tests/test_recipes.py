"""Recipes dpo and spin: curate builds the right pairs, and TRL's DPOTrainer moves the model the right way."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from flywheel.config import ConfigError
from flywheel.io import read_table, write_table
from flywheel.model import load_model
from flywheel.schema import DROPPED_COLUMNS, PAIR_COLUMNS
from flywheel.steps.curate import curate_samples
from flywheel.steps.data import sample_prompts
from flywheel.steps.generate import generate_samples
from flywheel.steps.pairs import choose_pairs
from flywheel.steps.train import train_model
from flywheel.steps.verify import verify_samples

from conftest import tiny_config

OK = {"correct": True, "score": 1.0, "reason": "correct"}
BAD = {"correct": False, "score": 0.0, "reason": "wrong"}


def _verdicts(rows):
    base = {"prompt_tokens": 4, "completion_tokens": 3, "finished": True, "model": "m", "difficulty": 1,
            "reference": "ref"}
    out = []
    for r in rows:
        pid, sid, completion, verdict = r
        out.append({**base, "prompt_id": pid, "prompt": pid.upper() + "=", "sample_id": sid,
                    "completion": completion, **verdict})
    return pd.DataFrame(out)


def _curate(tmp_path, rows, cfg, seed, name="1", iteration=1, previous=None):
    write_table(_verdicts(rows), tmp_path / f"v{name}.parquet")
    m = curate_samples(tmp_path / f"v{name}.parquet", seed, tmp_path / f"c{name}.parquet",
                       tmp_path / f"d{name}.parquet", cfg, iteration=iteration, previous_path=previous)
    return m, read_table(tmp_path / f"c{name}.parquet", PAIR_COLUMNS), read_table(tmp_path / f"d{name}.parquet",
                                                                                   DROPPED_COLUMNS)


def test_dpo_pairs_prefer_verified_correct_and_keep_every_unused_sample_with_its_reason(tmp_path, prepared):
    cfg = tiny_config(train={"recipe": "dpo"}, curate={"pairs_per_prompt": 2})
    rows = [
        ("a", 0, "r", OK), ("a", 1, "x", BAD), ("a", 2, "y", BAD), ("a", 3, "r", OK),   # a/3 duplicates a/0
        ("b", 0, "r1", OK), ("b", 1, "r2", OK),                                          # nothing to reject
        ("c", 0, "w1", BAD), ("c", 1, "w2", BAD),                                        # nothing to prefer
        ("d", 0, "r1", OK), ("d", 1, "r2", OK), ("d", 2, "w1", BAD), ("d", 3, "w2", BAD),
        ("e", 0, "r1", OK), ("e", 1, "r2", OK), ("e", 2, "r3", OK), ("e", 3, "w", BAD),
    ]
    m, pairs, dropped = _curate(tmp_path, rows, cfg, prepared["seed"])
    got = sorted(zip(pairs["prompt_id"], pairs["chosen"], pairs["rejected"]))
    # d: two pairs that use all four samples, not (r1, w1) and (r1, w2); e: two pairs, r3 left over the cap
    assert got == [("a", "r", "x"), ("a", "r", "y"), ("d", "r1", "w1"), ("d", "r2", "w2"),
                   ("e", "r1", "w"), ("e", "r2", "w")]
    assert (pairs["chosen_score"] > pairs["rejected_score"]).all() and set(pairs["iteration"]) == {1}
    reasons = dict(zip(dropped["prompt_id"] + "/" + dropped["sample_id"].astype(str), dropped["drop_reason"]))
    assert reasons == {"a/3": "exact duplicate within iteration",
                       "b/0": "no verified-wrong sample of this prompt to reject",
                       "b/1": "no verified-wrong sample of this prompt to reject",
                       "c/0": "no verified-correct sample of this prompt to prefer",
                       "c/1": "no verified-correct sample of this prompt to prefer",
                       "e/2": "over the cap of 2 pairs per prompt"}
    assert dropped.loc[dropped["sample_id"].eq(3) & dropped["prompt_id"].eq("a"), "duplicate_of"].item() == "a/0"
    assert m["kept"] == 6 and m["dropped"] == 6 and m["prompts_paired"] == 3 and m["pairs"] is True


def test_dpo_margin_by_score():
    # graded verifier scores: the largest margins first; 0.75 vs 0.5 is below a margin of 0.5
    assert choose_pairs([(0, 1.0), (1, 0.75)], [(2, 0.5), (3, 0.0)], n=4, min_margin=0.5) == [(0, 3), (1, 3), (0, 2)]
    assert choose_pairs([(1, 0.75)], [(2, 0.5)], n=4, min_margin=0.5) == []


def test_dpo_pairs_accumulate_without_repeating_earlier_pairs(tmp_path, prepared):
    cfg = tiny_config(train={"recipe": "dpo"}, curate={"pairs_per_prompt": 1, "data_policy": "accumulate"})
    _curate(tmp_path, [("a", 0, "r", OK), ("a", 1, "x", BAD)], cfg, prepared["seed"], "1")
    m, pairs, dropped = _curate(tmp_path, [("a", 0, "r", OK), ("a", 1, "x", BAD), ("b", 0, "s", OK),
                                           ("b", 1, "z", BAD)], cfg, prepared["seed"], "2", iteration=2,
                                previous=tmp_path / "c1.parquet")
    assert sorted(zip(pairs["chosen"], pairs["rejected"], pairs["iteration"])) == [("r", "x", 1), ("s", "z", 2)]
    assert set(dropped["drop_reason"]) == {"every pair it forms repeats an earlier iteration's pair"}
    assert (m["kept_carried"], m["kept_new"]) == (1, 1)


def test_spin_pairs_seed_answer_over_own_generation(tmp_path, prepared):
    cfg = tiny_config(train={"recipe": "spin"}, task={"params": {"width": 3, "seed_digits": 1, "seed_size": 200},
                                                      "prompt_source": "seed"})
    seed = read_table(prepared["seed"]).drop_duplicates("prompt_id")
    s0, s1 = seed.iloc[0], seed.iloc[1]
    rows = [(s0["prompt_id"], 0, "999", BAD), (s0["prompt_id"], 1, s0["completion"], OK),
            (s1["prompt_id"], 0, "123", BAD), ("not-seed", 0, "1", BAD)]
    df = _verdicts(rows)
    df.loc[df["prompt_id"] != "not-seed", "prompt"] = [s0["prompt"], s0["prompt"], s1["prompt"]]
    write_table(df, tmp_path / "v.parquet")
    m = curate_samples(tmp_path / "v.parquet", prepared["seed"], tmp_path / "c.parquet", tmp_path / "d.parquet",
                       cfg, iteration=1)
    pairs, dropped = read_table(tmp_path / "c.parquet", PAIR_COLUMNS), read_table(tmp_path / "d.parquet")
    assert sorted(zip(pairs["chosen"], pairs["rejected"])) == sorted([(s0["completion"], "999"),
                                                                      (s1["completion"], "123")])
    assert sorted(dropped["drop_reason"].str.split(" \\(").str[0]) == ["identical to the seed answer",
                                                                       "prompt not in the seed set"]
    assert m["kept"] == 2


def test_spin_needs_prompts_from_the_seed_set():
    with pytest.raises(ConfigError, match="task.prompt_source: seed"):
        tiny_config(train={"recipe": "spin"})


def test_seed_prompts_come_from_the_seed_set(tmp_path, prepared):
    cfg = tiny_config(task={"params": {"width": 3, "seed_digits": 1, "seed_size": 200}, "prompt_source": "seed"})
    sample_prompts(cfg, 1, tmp_path / "p1.parquet")
    sample_prompts(cfg, 2, tmp_path / "p2.parquet")
    p1, p2 = read_table(tmp_path / "p1.parquet"), read_table(tmp_path / "p2.parquet")
    seed = read_table(prepared["seed"])
    assert set(p1["prompt_id"]) <= set(seed["prompt_id"]) and p1["prompt_id"].is_unique
    assert len(p1) == cfg.generate.prompts_per_iteration and set(p1["prompt_id"]) != set(p2["prompt_id"])


# --- the trainer moves the model the right way -------------------------------------------------------------

@torch.inference_mode()
def completion_logp(model_dir, prompts, completions) -> torch.Tensor:
    """log p(completion + EOS | prompt) of each pair, summed over the completion's tokens."""
    model, tok = load_model(model_dir)
    out = []
    for p, c in zip(prompts, completions):
        prompt_ids = tok(p)["input_ids"]
        ids = torch.tensor([prompt_ids + tok(c)["input_ids"] + [tok.eos_token_id]])
        logps = torch.log_softmax(model(ids).logits[0, :-1], -1).gather(1, ids[0, 1:, None])[:, 0]
        out.append(logps[len(prompt_ids) - 1:].sum())
    return torch.stack(out)


def _own_samples(cfg, model, d):
    sample_prompts(cfg, 1, d / "prompts.parquet")
    generate_samples(model, d / "prompts.parquet", d / "samples.parquet", cfg, iteration=1)
    verify_samples(d / "samples.parquet", d / "verdicts.parquet", cfg)
    return read_table(d / "verdicts.parquet")


def test_dpo_raises_the_chosen_over_rejected_margin_on_its_pairs(prepared, tmp_path):
    cfg = tiny_config(train={"recipe": "dpo", "max_steps": 15, "batch_size": 8, "learning_rate": 2e-3,
                             "save_steps": 0})
    # The tiny model is almost never right, so the correct side is the task's reference answer and the
    # wrong side is the model's own wrong sample of the same prompt: a verified-correct vs verified-wrong pair.
    v = _own_samples(cfg, prepared["model"], tmp_path)
    wrong = v[~v["correct"]].drop_duplicates(["prompt_id", "completion"]).head(48)
    pairs = wrong.assign(chosen=wrong["reference"], rejected=wrong["completion"], source="self", iteration=1,
                         chosen_score=1.0, rejected_score=wrong["score"])[list(PAIR_COLUMNS)]
    write_table(pairs, tmp_path / "pairs.parquet")
    before = completion_logp(prepared["model"], pairs["prompt"], pairs["chosen"]) - \
        completion_logp(prepared["model"], pairs["prompt"], pairs["rejected"])
    m = train_model(prepared["model"], tmp_path / "pairs.parquet", tmp_path / "model1", cfg)
    after = completion_logp(tmp_path / "model1", pairs["prompt"], pairs["chosen"]) - \
        completion_logp(tmp_path / "model1", pairs["prompt"], pairs["rejected"])
    assert m["recipe"] == "dpo" and m["loss"] < m["loss_first"] and m["reward_margin"] > 0
    assert after.mean() > before.mean() + 1.0  # nats
    assert (after > before).float().mean() > 0.75


def test_spin_lowers_the_likelihood_of_its_own_generations_relative_to_the_seed_answers(prepared, tmp_path):
    cfg = tiny_config(train={"recipe": "spin", "max_steps": 15, "batch_size": 8, "learning_rate": 2e-3,
                             "save_steps": 0},
                      task={"params": {"width": 3, "seed_digits": 1, "seed_size": 200}, "prompt_source": "seed"})
    _own_samples(cfg, prepared["model"], tmp_path)
    m = curate_samples(tmp_path / "verdicts.parquet", prepared["seed"], tmp_path / "pairs.parquet",
                       tmp_path / "dropped.parquet", cfg, iteration=1)
    pairs = read_table(tmp_path / "pairs.parquet", PAIR_COLUMNS)
    assert m["kept"] == len(pairs) > 10

    def own_minus_seed(model_dir):
        return (completion_logp(model_dir, pairs["prompt"], pairs["rejected"])
                - completion_logp(model_dir, pairs["prompt"], pairs["chosen"]))

    before = own_minus_seed(prepared["model"])
    train_model(prepared["model"], tmp_path / "pairs.parquet", tmp_path / "model1", cfg)
    after = own_minus_seed(tmp_path / "model1")
    assert after.mean() < before.mean() - 0.5  # nats
    # and in absolute terms: the opponent's (previous iteration's) own generations became less likely
    own_before = completion_logp(prepared["model"], pairs["prompt"], pairs["rejected"])
    own_after = completion_logp(tmp_path / "model1", pairs["prompt"], pairs["rejected"])
    assert own_after.mean() < own_before.mean()


def test_no_pairs_passes_the_model_on_unchanged(prepared, tmp_path):
    cfg = tiny_config(train={"recipe": "dpo"})
    write_table(pd.DataFrame({c: pd.Series([], dtype=str) for c in PAIR_COLUMNS}), tmp_path / "pairs.parquet")
    m = train_model(prepared["model"], tmp_path / "pairs.parquet", tmp_path / "model1", cfg)
    assert m["skipped"] == "no preference pairs"
    before, after = load_model(prepared["model"])[0], load_model(tmp_path / "model1")[0]
    assert all(torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))


# --- each recipe through the pipeline (kfp.local, a subprocess per task) ----------------------------------

def _recipe_run_config(recipe: str) -> dict:
    from conftest import TINY

    return {**TINY, "train": {"recipe": recipe, "max_steps": 6, "batch_size": 8, "save_steps": 0},
            "task": {"params": {"width": 3, "seed_digits": 1, "seed_size": 200}, "prompt_source": "seed"},
            # temperature 1 and 4 samples, so that a prompt often has a right and a wrong answer (dpo pairs);
            # a longer warm start for dpo, so that the tiny model is right at all
            "generate": {"prompts_per_iteration": 16, "samples_per_prompt": 4, "temperature": 1.0,
                         "max_new_tokens": 6, "batch_size": 64},
            "model": {"embedded": {**TINY["model"]["embedded"], "warmup_steps": 300 if recipe == "dpo" else 100}},
            "evaluate": {"per_difficulty": 4}}


@pytest.mark.slow
def test_dpo_and_spin_each_run_through_the_pipeline_for_two_iterations(tmp_path):
    """Both `flywheel run`s side by side: each is a chain of short single-threaded subprocesses (mostly
    imports), so two chains share 2 cores at little more than the cost of one."""
    import json
    import subprocess
    import sys

    import yaml

    procs = {}
    for recipe in ("dpo", "spin"):
        (tmp_path / f"{recipe}.yaml").write_text(yaml.safe_dump(_recipe_run_config(recipe)))
        procs[recipe] = subprocess.Popen(
            [sys.executable, "-m", "flywheel", "run", str(tmp_path / f"{recipe}.yaml"), "--out",
             str(tmp_path / recipe)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logs = {recipe: p.communicate(timeout=1200)[0] for recipe, p in procs.items()}
    for recipe, p in procs.items():
        assert p.returncode == 0, f"flywheel run ({recipe}) failed:\n{logs[recipe][-5000:]}"

    for recipe in ("dpo", "spin"):
        out = tmp_path / recipe
        its = json.loads((out / "summary.json").read_text())["iterations"]
        assert [it["iteration"] for it in its] == [0, 1, 2]
        for it in its[1:]:
            assert it["curate"]["pairs"] is True and it["train"]["recipe"] == recipe
        trained = [it for it in its[1:] if "skipped" not in it["train"]]
        assert trained and all(it["train"]["steps"] == 6 and it["train"]["reward_margin"] is not None
                               for it in trained), recipe
        if recipe == "spin":
            assert len(trained) == 2  # a seed answer and the model's own answer: pairs every iteration
        # iteration 2 starts from (and is pulled toward) iteration 1's model
        assert its[2]["train"]["init_from"] != its[1]["train"]["init_from"]
        root = next((out / "kfp").iterdir())
        assert len(read_table(root / "curate-2" / "curated", PAIR_COLUMNS)) == its[2]["curate"]["kept"]
        model, _ = load_model(out / "model")
        assert model.config.model_type == "llama"
