"""generate.backend: which decoding engine the generate step uses, and the rows the vLLM path builds.

The selection tests run for real: this machine has no vLLM and no GPU, which is exactly the case they
check. vLLM itself never runs here (it needs a CUDA GPU and a CUDA torch); what is verified how is in
docs/deploy.md, "Generation backends"."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pandas as pd
import pytest

from flywheel.cli import main
from flywheel.io import read_table, write_table
from flywheel.schema import SAMPLE_COLUMNS
from flywheel.steps import vllm_backend
from flywheel.steps.generate import generate_samples
from flywheel.steps.vllm_backend import decode_vllm, select_backend
from flywheel.tasks.arithmetic import Arithmetic

from conftest import tiny_config

no_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")


@no_vllm
def test_auto_without_vllm_falls_back_to_transformers_and_says_why(tmp_path, capsys):
    backend, why = select_backend("auto", tmp_path)
    assert backend == "transformers" and "vllm is not installed" in why
    assert "generate.backend: auto -> transformers (vllm is not installed)" in capsys.readouterr().err


def test_transformers_is_taken_as_asked(tmp_path, capsys):
    assert select_backend("transformers", tmp_path)[0] == "transformers"
    assert capsys.readouterr().err == ""


@no_vllm
def test_explicit_vllm_without_vllm_is_one_clear_error(tmp_path, capsys, prepared):
    """Through the CLI, as a DVC stage calls it: exit 2, one line naming the field and the fix, no traceback."""
    config = tmp_path / "run.yaml"
    config.write_text("generate: {backend: vllm, prompts_per_iteration: 4}\n")
    write_table(pd.DataFrame(Arithmetic(width=3, seed_digits=1).prompts(1, 4, seed=0)), tmp_path / "prompts.parquet")
    rc = main(["generate", str(config), "--model", str(prepared["model"]), "--prompts",
               str(tmp_path / "prompts.parquet"), "--out", str(tmp_path / "samples.parquet")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "generate.backend is 'vllm' but vllm is not installed" in err[0]
    assert "pip install 'llm-flywheel[vllm]'" in err[0] and "generate.backend: transformers" in err[0]
    assert not (tmp_path / "samples.parquet").exists()


class FakeLLM:
    """Stands in for `vllm.LLM` with RequestOutput-shaped answers: each request's completion is the last
    digit of its seed, then EOS (finish 'stop'); every third request runs out of tokens (finish 'length')."""

    def __init__(self, tokenizer):
        self.tok, self.calls = tokenizer, []

    def generate(self, prompts, params):
        self.calls.append(params)
        outs = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            if i % 3 == 2:
                text, ids, reason = "9" * p.max_tokens, [self.tok.convert_tokens_to_ids("9")] * p.max_tokens, "length"
            else:
                text = str(p.seed % 10)
                ids, reason = [self.tok.convert_tokens_to_ids(text), self.tok.eos_token_id], "stop"
            outs.append(SimpleNamespace(prompt_token_ids=self.tok(prompt)["input_ids"],
                                        outputs=[SimpleNamespace(text=text, token_ids=ids, finish_reason=reason)]))
        return outs


def _fake_vllm(monkeypatch, fake):
    """Route every decoding step's `open_decoder` to the fake `LLM` (what a GPU with vLLM would select)."""
    monkeypatch.setattr(vllm_backend, "select_backend", lambda requested, model_dir: ("vllm", "test"))
    monkeypatch.setattr(vllm_backend, "load_vllm", lambda model_dir, seed: fake)
    real = vllm_backend.decode_vllm
    monkeypatch.setattr(vllm_backend, "decode_vllm", lambda llm, prompts, keys, **kw: real(
        llm, prompts, keys, sampling_params=lambda **p: SimpleNamespace(**p), **kw))


def test_vllm_rows_have_the_transformers_schema(prepared, tmp_path, monkeypatch):
    """Checks OUR mapping of vLLM outputs to sample rows only (columns, dtypes, prompt and sample ids, token
    counts, per-row seeds), with a fake `LLM`; it says nothing about vLLM itself, which never runs here."""
    cfg = tiny_config(generate__backend="transformers", gates={"enabled": False})
    problems = pd.DataFrame(Arithmetic(width=3, seed_digits=1).prompts(1, 6, seed=0))
    write_table(problems, tmp_path / "prompts.parquet")
    generate_samples(prepared["model"], tmp_path / "prompts.parquet", tmp_path / "hf.parquet", cfg, iteration=1)

    from transformers import AutoTokenizer

    fake = FakeLLM(AutoTokenizer.from_pretrained(prepared["model"]))
    _fake_vllm(monkeypatch, fake)
    m = generate_samples(prepared["model"], tmp_path / "prompts.parquet", tmp_path / "vllm.parquet", cfg, iteration=1)

    hf, vl = read_table(tmp_path / "hf.parquet", SAMPLE_COLUMNS), read_table(tmp_path / "vllm.parquet", SAMPLE_COLUMNS)
    assert list(vl.columns) == list(hf.columns) and (vl.dtypes == hf.dtypes).all()
    assert vl[["prompt_id", "sample_id", "prompt", "prompt_tokens"]].equals(hf[["prompt_id", "sample_id", "prompt",
                                                                                 "prompt_tokens"]])
    stopped = vl["finished"]
    assert (vl.loc[stopped, "completion_tokens"] == 2).all()  # a digit and EOS, as decode_batched counts it
    assert (vl.loc[~stopped, "completion_tokens"] == cfg.generate.max_new_tokens).all()
    assert m["backend"] == "vllm" and m["samples"] == len(hf)
    # one request per (prompt, sample), each with its own seed: the per-row key the transformers path uses
    (params,) = fake.calls
    assert len(params) == len(hf) and len({p.seed for p in params}) == len(params)
    assert all(p.n == 1 and p.temperature == cfg.generate.temperature for p in params)


def test_vllm_requests_are_seeded_per_row_so_shards_get_the_same_rows(prepared):
    """Each (prompt, sample) request carries the seed of its own key (seed, prompt id, sample index), so
    decoding every 2nd prompt (a shard) sends the same seeds for those prompts as decoding them all. Checks
    what we send to vLLM (with the fake `LLM`); that vLLM honours a per-request seed is its documented
    behaviour, not run here."""
    from transformers import AutoTokenizer

    fake = FakeLLM(AutoTokenizer.from_pretrained(prepared["model"]))
    problems = Arithmetic(width=3, seed_digits=1).prompts(1, 6, seed=0)
    prompts, keys = [p["prompt"] for p in problems], [str(p["prompt_id"]) for p in problems]
    kw = dict(samples=3, temperature=0.8, top_p=1.0, max_new_tokens=6, seed=7,
              sampling_params=lambda **p: SimpleNamespace(**p))
    whole, _ = decode_vllm(fake, prompts, keys, **kw)
    shard, _ = decode_vllm(fake, prompts[1::2], keys[1::2], **kw)
    assert shard == whole[1::2]
    seeds = [p.seed for p in fake.calls[0]]
    assert [p.seed for p in fake.calls[1]] == [s for i in range(1, 6, 2) for s in seeds[3 * i:3 * i + 3]]


def test_evaluate_decodes_through_the_backend_generate_selects(prepared, tmp_path, monkeypatch):
    """evaluate (greedy) sends its prompts to the engine generate.backend selects (as propose does), and says which
    in their metrics; with the fake `LLM` (our wiring only) and, for real, with transformers."""
    from transformers import AutoTokenizer

    from flywheel.steps.evaluate import evaluate_model

    cfg = tiny_config(gates={"enabled": False})
    hf = evaluate_model(prepared["model"], prepared["eval"], tmp_path / "hf.parquet", cfg, iteration=0)
    assert hf["backend"] == "transformers" and hf["items"] > 0
    fake = FakeLLM(AutoTokenizer.from_pretrained(prepared["model"]))
    _fake_vllm(monkeypatch, fake)
    m = evaluate_model(prepared["model"], prepared["eval"], tmp_path / "vllm.parquet", cfg, iteration=0)
    (params,) = fake.calls
    assert m["backend"] == "vllm" and len(params) == m["items"] == hf["items"]
    assert all(p.temperature == 0.0 for p in params)  # evaluate is greedy on either engine
    texts = read_table(tmp_path / "vllm.parquet", ("completion",))["completion"]
    assert set(texts) <= {str(d) for d in range(10)} | {"9" * cfg.generate.max_new_tokens}  # the fake's answers
