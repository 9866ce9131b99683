"""Every step on real small data: the tiny model, the arithmetic task."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from flywheel.io import read_table
from flywheel.model import load_model
from flywheel.schema import CURATED_COLUMNS, DROPPED_COLUMNS, SAMPLE_COLUMNS, VERDICT_COLUMNS
from flywheel.steps.curate import curate_samples
from flywheel.steps.data import sample_prompts
from flywheel.steps.evaluate import evaluate_model
from flywheel.steps.generate import decode_batched, generate_samples
from flywheel.steps.train import train_model
from flywheel.steps.verify import verify_samples

from conftest import tiny_config


@pytest.fixture(scope="module")
def iteration1(cfg, prepared, tmp_path_factory):
    d = tmp_path_factory.mktemp("it1")
    sample_prompts(cfg, 1, d / "prompts.parquet")
    gen = generate_samples(prepared["model"], d / "prompts.parquet", d / "samples.parquet", cfg, iteration=1,
                           metrics_path=d / "generate.json")
    ver = verify_samples(d / "samples.parquet", d / "verdicts.parquet", cfg)
    return {"dir": d, "generate": gen, "verify": ver}


def test_init_model_is_a_hugging_face_checkpoint_that_learned(prepared):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = prepared["init_metrics"]
    assert m["warm_start"]["loss"] < m["warm_start"]["loss_first"] / 2
    model = AutoModelForCausalLM.from_pretrained(prepared["model"])
    tok = AutoTokenizer.from_pretrained(prepared["model"])
    assert model.config.model_type == "llama"
    assert tok.decode(tok("12+34=")["input_ids"]) == "12+34="  # one token per character, lossless


def test_generate_rows_and_metrics(cfg, iteration1):
    d, g = iteration1["dir"], cfg.generate
    df = read_table(d / "samples.parquet", SAMPLE_COLUMNS)
    assert len(df) == g.prompts_per_iteration * g.samples_per_prompt
    assert df.groupby("prompt_id")["sample_id"].nunique().eq(g.samples_per_prompt).all()
    assert (df["completion_tokens"] <= g.max_new_tokens).all() and (df["prompt_tokens"] > 0).all()
    assert df["model"].nunique() == 1
    written = json.loads((d / "generate.json").read_text())
    assert written["samples"] == len(df) and written["duration_s"] >= 0
    if not torch.cuda.is_available():  # generate.backend: auto falls back to transformers and says why
        assert written["backend"] == "transformers" and "auto -> transformers" in written["backend_reason"]


def test_batched_greedy_equals_one_at_a_time(prepared):
    model, tok = load_model(prepared["model"])
    prompts = read_table(prepared["eval"])["prompt"].tolist()[:12]
    batched = decode_batched(model, tok, prompts, samples=1, temperature=0.0, top_p=1.0, max_new_tokens=6,
                             batch_size=64, seed=0)
    for p, b in zip(prompts, batched):
        enc = tok(p, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        ids = [t for t in out[0, enc["input_ids"].shape[1]:].tolist() if t not in (tok.eos_token_id, tok.pad_token_id)]
        assert b[0][0] == tok.decode(ids)


def test_verify_scores_every_sample(iteration1):
    df = read_table(iteration1["dir"] / "verdicts.parquet", VERDICT_COLUMNS)
    assert df["reason"].str.len().gt(0).all()
    assert (df["correct"] == (df["completion"].str.strip() == df["reference"])).all()
    assert iteration1["verify"]["pass_rate"] == pytest.approx(df["correct"].mean())


def _verdicts(rows):
    base = {"prompt_tokens": 4, "completion_tokens": 3, "finished": True, "model": "m", "difficulty": 1,
            "reference": "ref"}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_curate_filters_dedupes_caps_and_keeps_reasons(tmp_path, prepared):
    cfg = tiny_config(curate={"max_per_prompt": 2, "seed_fraction": 0.25})
    ok = {"correct": True, "score": 1.0, "reason": "correct"}
    bad = {"correct": False, "score": 0.0, "reason": "wrong: expected ref, got x"}
    rows = [
        {"prompt_id": "a", "prompt": "A=", "sample_id": 0, "completion": "ref", **ok},
        {"prompt_id": "a", "prompt": "A=", "sample_id": 1, "completion": "ref", **ok},       # exact duplicate
        {"prompt_id": "a", "prompt": "A=", "sample_id": 2, "completion": "x", **bad},        # rejected
        {"prompt_id": "b", "prompt": "B=", "sample_id": 0, "completion": "r1", **ok},
        {"prompt_id": "b", "prompt": "B=", "sample_id": 1, "completion": "r2", **ok},
        {"prompt_id": "b", "prompt": "B=", "sample_id": 2, "completion": "r3", **ok},        # over the cap
    ]
    from flywheel.io import write_table
    write_table(_verdicts(rows), tmp_path / "v.parquet")
    m = curate_samples(tmp_path / "v.parquet", prepared["seed"], tmp_path / "c.parquet", tmp_path / "d.parquet",
                       cfg, iteration=1)
    cur = read_table(tmp_path / "c.parquet", CURATED_COLUMNS)
    dropped = read_table(tmp_path / "d.parquet", DROPPED_COLUMNS)
    own = cur[cur["source"] == "self"]
    assert sorted(own["completion"]) == ["r1", "r2", "ref"]
    assert (cur["source"] == "seed").sum() == 1  # 25% of 4 rows
    assert len(cur) + len(dropped) == len(rows) + 1
    reasons = dict(zip(dropped["completion"] + "@" + dropped["sample_id"].astype(str), dropped["drop_reason"]))
    assert reasons["ref@1"] == "exact duplicate within iteration"
    assert dropped.loc[dropped["sample_id"].eq(1) & dropped["prompt_id"].eq("a"), "duplicate_of"].item() == "a/0"
    assert reasons["x@2"].startswith("rejected by verifier: wrong")
    assert reasons["r3@2"] == "over the cap of 2 per prompt"
    assert m["kept"] == 4 and m["dropped"] == 3


@pytest.mark.parametrize("policy", ["accumulate", "replace"])
def test_curate_data_policy(tmp_path, prepared, policy):
    from flywheel.io import write_table

    cfg = tiny_config(curate={"seed_fraction": 0.0, "data_policy": policy})
    ok = {"correct": True, "score": 1.0, "reason": "correct"}
    write_table(_verdicts([{"prompt_id": "a", "prompt": "A=", "sample_id": 0, "completion": "1", **ok}]),
                tmp_path / "v1.parquet")
    write_table(_verdicts([{"prompt_id": "b", "prompt": "B=", "sample_id": 0, "completion": "2", **ok},
                           {"prompt_id": "a", "prompt": "A=", "sample_id": 0, "completion": "1", **ok}]),
                tmp_path / "v2.parquet")
    curate_samples(tmp_path / "v1.parquet", prepared["seed"], tmp_path / "c1.parquet", tmp_path / "d1.parquet",
                   cfg, iteration=1)
    m = curate_samples(tmp_path / "v2.parquet", prepared["seed"], tmp_path / "c2.parquet", tmp_path / "d2.parquet",
                       cfg, iteration=2, previous_path=tmp_path / "c1.parquet")
    cur = read_table(tmp_path / "c2.parquet")
    if policy == "accumulate":
        assert sorted(zip(cur["completion"], cur["iteration"])) == [("1", 1), ("2", 2)]
        assert m["dropped_by_reason"] == {"exact duplicate of an earlier iteration's row": 1}
    else:
        assert sorted(cur["completion"]) == ["1", "2"] and set(cur["iteration"]) == {2}


def test_train_lowers_loss_changes_weights_and_saves_a_loadable_checkpoint(cfg, prepared, tmp_path):
    from flywheel.io import write_table

    seed = read_table(prepared["seed"])
    rows = seed.assign(source="seed", iteration=1, score=1.0).head(64)
    write_table(rows, tmp_path / "curated.parquet")
    cfg2 = tiny_config(train={"max_steps": 30, "batch_size": 16, "learning_rate": 3e-3})
    m = train_model(prepared["model"], tmp_path / "curated.parquet", tmp_path / "model1", cfg2)
    assert m["loss"] < m["loss_first"]
    before, _ = load_model(prepared["model"])
    after, tok = load_model(tmp_path / "model1")
    changed = [n for (n, a), (_, b) in zip(before.named_parameters(), after.named_parameters()) if not torch.equal(a, b)]
    assert len(changed) == len(list(after.parameters()))
    assert not list(tmp_path.glob(".model1.*"))  # no temporary folder left behind


def test_train_refuses_empty_data(cfg, prepared, tmp_path):
    from flywheel.io import write_table

    write_table(pd.DataFrame({"prompt": pd.Series([], dtype=str), "completion": pd.Series([], dtype=str)}),
                tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="no training rows"):
        train_model(prepared["model"], tmp_path / "empty.parquet", tmp_path / "m", cfg)


def test_evaluate_reports_accuracy_per_difficulty_and_delta(cfg, prepared, tmp_path):
    cfg_k = tiny_config(evaluate={"per_difficulty": 10, "pass_k": 3})
    m0 = evaluate_model(prepared["model"], prepared["eval"], tmp_path / "r0.parquet", cfg_k, 0,
                        metrics_path=tmp_path / "m0.json", seed_path=prepared["seed"])
    res = read_table(tmp_path / "r0.parquet", ("difficulty", "correct", "completion"))
    assert set(m0["accuracy_by_difficulty"]) == {"1", "2", "3"}
    assert m0["accuracy"] == pytest.approx(res["correct"].mean())
    assert m0["seed_max_difficulty"] == 1
    assert m0["accuracy_beyond_seed"] == pytest.approx(res[res["difficulty"] > 1].groupby("difficulty")["correct"].mean().mean())
    assert m0["pass@3"] == pytest.approx(res["solved_at_k"].mean())
    assert set(m0["pass_at_k_by_difficulty"]) == {"1", "2", "3"}
    m1 = evaluate_model(prepared["model"], prepared["eval"], tmp_path / "r1.parquet", cfg, 1,
                        previous_metrics_path=tmp_path / "m0.json")
    assert m1["delta_accuracy"] == pytest.approx(0.0)  # same model, greedy: same answers


def test_curate_falls_back_to_seed_rows_when_nothing_passed(tmp_path, prepared):
    from flywheel.io import write_table

    bad = {"correct": False, "score": 0.0, "reason": "wrong: expected ref, got x"}
    write_table(_verdicts([{"prompt_id": p, "prompt": p + "=", "sample_id": 0, "completion": "x", **bad}
                           for p in "abc"]), tmp_path / "v.parquet")
    m = curate_samples(tmp_path / "v.parquet", prepared["seed"], tmp_path / "c.parquet", tmp_path / "d.parquet",
                       tiny_config(), iteration=1)
    cur = read_table(tmp_path / "c.parquet")
    assert len(cur) == 3 and set(cur["source"]) == {"seed"} and m["fallback"].startswith("no verified samples")
    assert m["dropped"] == 3


def test_curate_keeps_the_seed_mix_when_own_rows_outgrow_the_seed_set(tmp_path, prepared):
    # Seen on SmolLM2 (64 seed rows, seed_fraction 0.4): by iteration 3 the accumulated own rows needed more
    # seed rows than exist and the curated gate stopped the run. Now the newest own rows are kept up to what
    # the seed set balances, the rest are dropped with the reason, and the share holds.
    from flywheel.io import write_table

    seed = read_table(prepared["seed"]).head(4)
    write_table(seed, tmp_path / "seed.parquet")
    cfg = tiny_config(curate={"seed_fraction": 0.5, "data_policy": "accumulate", "max_per_prompt": 1})
    ok = {"correct": True, "score": 1.0, "reason": "correct"}
    for i, names in ((1, "abc"), (2, "def")):
        write_table(_verdicts([{"prompt_id": p, "prompt": f"{p} plus one =", "sample_id": 0,
                                "completion": f"the answer to {p} is {ord(p)}", **ok} for p in names]),
                    tmp_path / f"v{i}.parquet")
        m = curate_samples(tmp_path / f"v{i}.parquet", tmp_path / "seed.parquet", tmp_path / f"c{i}.parquet",
                           tmp_path / f"d{i}.parquet", cfg, iteration=i,
                           previous_path=tmp_path / "c1.parquet" if i == 2 else None)
    cur, drop = read_table(tmp_path / "c2.parquet"), read_table(tmp_path / "d2.parquet")
    own = cur[cur["source"] == "self"]
    assert len(own) == 4 and (cur["source"] == "seed").sum() == 4  # 4 seed rows balance 4 own at 0.5
    assert set(own[own["iteration"] == 2]["prompt_id"]) == set("def")  # the newest model's rows are all kept
    assert len(drop) == 2 and drop["drop_reason"].str.startswith("over the seed mix").all()
    assert m["gate"]["passed"] and m["kept_carried"] == 1
