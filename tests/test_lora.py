"""LoRA in the train step (`train.lora`): only the adapter trains, the step writes a plain merged checkpoint
that generates what the adapted model generates, dpo/spin use the adapter-disabled model as reference, and
target modules the model lacks stop the step before training with one message."""

from __future__ import annotations

import json

import pytest
import torch

from flywheel.io import read_table, write_table
from flywheel.steps.train import train_model
from flywheel.train import preference, runner, sft

from conftest import tiny_config

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def _config(**train):
    return tiny_config(train={"max_steps": 6, "batch_size": 16, "learning_rate": 1e-2, "save_steps": 0,
                              "lora": LORA, **train})


@pytest.fixture(scope="module")
def rows(prepared, tmp_path_factory):
    path = tmp_path_factory.mktemp("rows") / "curated.parquet"
    write_table(read_table(prepared["seed"]).assign(source="seed", iteration=1, score=1.0), path)
    return path


@pytest.fixture(scope="module")
def pairs(prepared, tmp_path_factory):
    """(prompt, chosen = the labelled answer, rejected = a wrong one) for every seed problem."""
    seed = read_table(prepared["seed"])
    path = tmp_path_factory.mktemp("pairs") / "pairs.parquet"
    write_table(seed.assign(chosen=seed["completion"], rejected=[c[::-1] + "1" for c in seed["completion"]]), path)
    return path


def _trainer(make, model_dir, data, cfg, tmp_path):
    from transformers import AutoConfig

    t = cfg.train
    args = runner.training_arguments(t, str(tmp_path), AutoConfig.from_pretrained(model_dir).max_position_embeddings,
                                     1, None, None, False)
    return make(str(model_dir), read_table(data), args, t, cfg.model)


@pytest.mark.parametrize("recipe", ["sft", "dpo"])
def test_lora_trains_every_adapter_weight_and_leaves_the_base_byte_identical(prepared, rows, pairs, recipe, tmp_path):
    cfg = _config(recipe=recipe)
    if recipe == "sft":
        trainer = _trainer(sft.make_trainer, prepared["model"], rows, cfg, tmp_path)
    else:
        trainer = _trainer(preference.make_trainer, prepared["model"], pairs, cfg, tmp_path)
        assert trainer.ref_model is None  # the reference is the adapter-disabled policy, not a second copy
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    adapter = [n for n in after if "lora_" in n]
    assert adapter and all(after[n].requires_grad for n in adapter)
    # every linear layer of the tiny Llama got an adapter (all-linear): 2 layers x 7 projections x (A, B)
    assert len(adapter) == 2 * 7 * 2
    changed = [n for n in adapter if not torch.equal(before[n], after[n])]
    assert changed == adapter
    base = [n for n in after if "lora_" not in n]
    assert base and all(torch.equal(before[n], after[n]) for n in base)
    assert not any(after[n].requires_grad for n in base)


@pytest.fixture(scope="module")
def lora_step(prepared, tmp_path_factory):
    """A LoRA run that teaches something the base never answers (the same answer, 99, to every prompt), so
    that the adapter's effect shows in greedy generations."""
    d = tmp_path_factory.mktemp("lora")
    seed = read_table(prepared["seed"])
    write_table(seed.assign(completion="99", source="seed", iteration=1, score=1.0), d / "rows.parquet")
    return train_model(prepared["model"], d / "rows.parquet", d / "model", _config(max_steps=30, learning_rate=3e-2)), d / "model"


def test_the_step_writes_a_plain_merged_model_that_generates_what_the_adapted_model_generates(prepared, lora_step):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from flywheel.model import load_model

    metrics, out = lora_step
    assert metrics["lora"]["r"] == 4 and 0 < metrics["lora"]["trainable_parameters"] < 5000
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert type(merged) is LlamaForCausalLM and not any("lora_" in n for n, _ in merged.named_parameters())
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4
    assert merged.dtype == torch.float32  # the base's dtype

    merged, tok = load_model(out)
    base, _ = load_model(prepared["model"])
    adapted = PeftModel.from_pretrained(base, out / "adapter").eval()
    prompts = list(read_table(prepared["eval"])["prompt"][:16])
    enc = tok(prompts, return_tensors="pt", padding=True)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        from_merged = merged.generate(**enc, **kw)
        from_adapter = adapted.generate(**enc, **kw)
        with adapted.disable_adapter():
            from_base = adapted.generate(**enc, **kw)
    assert torch.equal(from_merged, from_adapter)
    assert not torch.equal(from_merged, from_base)  # the adapter changed what the model answers


def test_the_step_keeps_the_trainers_log_history(lora_step):
    metrics, _ = lora_step
    logs = metrics["log_history"]
    assert [h["step"] for h in logs] == sorted({h["step"] for h in logs}) and logs[-1]["step"] == metrics["steps"]
    assert all({"loss", "grad_norm", "learning_rate"} <= set(h) for h in logs)
    assert logs[-1]["loss"] == pytest.approx(metrics["loss"], rel=1e-3)


def test_dpo_with_lora_through_the_step_logs_reward_margins(prepared, pairs, tmp_path):
    metrics = train_model(prepared["model"], pairs, tmp_path / "model", _config(recipe="dpo", max_steps=3))
    assert metrics["steps"] == 3 and (tmp_path / "model" / "adapter" / "adapter_config.json").is_file()
    assert all("rewards/margins" in h and "rewards/accuracies" in h for h in metrics["log_history"])


def test_lora_target_modules_the_model_lacks_stop_the_step_before_training(prepared, rows, tmp_path, monkeypatch):
    def no_training(spec):
        raise AssertionError("training started")

    monkeypatch.setattr(runner, "run", no_training)
    cfg = _config(lora={**LORA, "target_modules": ["q_proj", "query_key_value", "c_attn"]})
    with pytest.raises(ValueError) as err:
        train_model(prepared["model"], rows, tmp_path / "model", cfg)
    msg = str(err.value)
    assert msg.startswith("train.lora.target_modules: 'query_key_value', 'c_attn' not in the model at ")
    assert "its linear modules are down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" in msg
    assert not (tmp_path / "model").exists()
    # a regular expression (peft's meaning of a single string) that matches nothing is named too
    with pytest.raises(ValueError, match=r"target_modules: '\.\*attn_q' not in the model"):
        train_model(prepared["model"], rows, tmp_path / "model", _config(lora={**LORA, "target_modules": ".*attn_q"}))
