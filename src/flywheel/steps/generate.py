"""generate: sample K candidate answers per prompt from the current model.

Batched decoding with the KV cache: prompts are sorted by length (less padding), repeated K times, and
decoded `batch_size` sequences at a time. On the reference CPU this is 15-20x the throughput of a
one-prompt-at-a-time loop (bench/generate.py measures it).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from flywheel.config import Config
from flywheel.gates import check_gate, expectations, rule
from flywheel.steps import step
from flywheel.steps.vllm_backend import open_decoder
from flywheel.io import read_json, read_table, write_table
from flywheel.schema import PROBLEM_COLUMNS, SAMPLE_COLUMNS


def stop_token_ids(model, tok) -> list[int]:
    """The token ids that end a completion: the model's `generation_config.eos_token_id` (an int or a
    list: Llama 3 instruct models stop on <|eot_id|> and <|end_of_text|>) and the tokenizer's EOS."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = eos if isinstance(eos, list) else [eos]
    return sorted({int(i) for i in [*ids, tok.eos_token_id] if i is not None})


@torch.inference_mode()
def decode_batched(model, tok, prompts: list[str], *, samples: int, temperature: float, top_p: float,
                   max_new_tokens: int, batch_size: int, seed: int, desc: str = "generate",
                   keys: list[str] | None = None, add_special_tokens: bool = True):
    """Return, for each prompt, `samples` (text, completion_tokens, finished) tuples.

    `prompts` are the texts the model is given, already rendered (`flywheel.chat.render_prompts`);
    `add_special_tokens=False` for chat-rendered text (the template wrote the BOS). A completion ends at the
    first stop token (`stop_token_ids`) and is decoded without special tokens.

    Sampling is seeded per row by (seed, keys[i], sample index) (flywheel.steps.sampling): a prompt's
    samples do not depend on the batch size or on which other prompts are decoded with it."""
    from flywheel.steps.sampling import row_keys, seeded_sampling

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    seq_keys = row_keys(seed, keys if keys is not None else [str(i) for i in range(len(prompts))], samples)
    seqs = [(i, s) for i in order for s in range(samples)]  # K copies of each prompt, next to each other
    out: list[list] = [[None] * samples for _ in prompts]
    greedy = temperature == 0
    stop = stop_token_ids(model, tok)
    with tqdm(total=len(seqs), desc=desc, unit="seq", mininterval=2.0) as bar:
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start:start + batch_size]
            enc = tok([prompts[i] for i, _ in chunk], return_tensors="pt", padding=True,
                      add_special_tokens=add_special_tokens).to(model.device)
            sampler = None if greedy else seeded_sampling([seq_keys[i * samples + s] for i, s in chunk],
                                                          enc["input_ids"].shape[1], temperature, top_p)
            gen = model.generate(  # greedy; with `sampler`, the argmax of seeded-noised logits is a sample
                **enc, max_new_tokens=max_new_tokens, do_sample=False, logits_processor=sampler,
                pad_token_id=tok.pad_token_id, eos_token_id=stop,
            )
            new = gen[:, enc["input_ids"].shape[1]:].tolist()
            for (i, s), ids in zip(chunk, new):
                end = next((j for j, t in enumerate(ids) if t in stop), None)
                finished = end is not None
                # The stop token (counted, not text) and the padding after it are cut; skip_special_tokens
                # drops a template's markers, should the model write one.
                text = tok.decode(ids[:end] if finished else ids, skip_special_tokens=True)
                out[i][s] = (text, end + 1 if finished else len(ids), finished)
            bar.update(len(chunk))
    return out


def rendered_prompts(model_dir: str | Path, prompts: list[str], cfg: Config) -> tuple[list[str], bool]:
    """The prompts as the model at `model_dir` is given them (`flywheel.chat.render_prompts`, with the
    tokenizer alone: no weights), and whether to add the tokenizer's special tokens when encoding them."""
    from transformers import AutoTokenizer

    from flywheel.chat import add_special_tokens, render_prompts
    from flywheel.model import resolve_base

    source, kwargs = resolve_base(model_dir)
    tok = AutoTokenizer.from_pretrained(source, **kwargs)
    return render_prompts(tok, prompts, cfg.model), add_special_tokens(tok, cfg.model)


@step
def generate_samples(model_dir: str | Path, prompts_path: str | Path, out_path: str | Path, cfg: Config,
                     iteration: int = 0, plan_path: str | Path | None = None, shard: int = 0,
                     shards: int = 1) -> dict:
    """Sample `generate.samples_per_prompt` completions for every prompt; one row per sample.

    `plan_path`: the prompts step's metrics, whose `plan` (temperature, samples per prompt) overrides the
    config's (adaptive mode). With `shards` > 1, only every `shards`-th prompt from the `shard`-th on
    (merge_shards joins them)."""
    from flywheel.model import load_model

    g = cfg.generate
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    plan = read_json(plan_path, "prompt plan")["plan"] if plan_path else {
        "temperature": g.temperature, "samples_per_prompt": g.samples_per_prompt, "reason": "configured"}
    problems = read_table(prompts_path, PROBLEM_COLUMNS, what="prompts").iloc[shard::shards]
    # The text the model is given: rendered here, before the backend is chosen, so that transformers and
    # vLLM decode the same text (the chat template, or the raw prompt: flywheel.chat).
    texts, special = rendered_prompts(model_dir, problems["prompt"].tolist(), cfg)
    # --- decoding backend (generate.backend; flywheel/steps/vllm_backend.py) ---
    decoder = open_decoder(g.backend, model_dir, seed=cfg.seed + iteration,
                           load=lambda: load_model(model_dir, cfg.model))
    backend, backend_why = decoder.backend, decoder.reason
    t0 = time.perf_counter()
    results = decoder.decode(texts, keys=problems["prompt_id"].astype(str).tolist(), add_special_tokens=special,
                             samples=plan["samples_per_prompt"], temperature=plan["temperature"], top_p=g.top_p,
                             max_new_tokens=g.max_new_tokens, batch_size=g.batch_size, seed=cfg.seed + iteration)
    seconds = time.perf_counter() - t0
    prompt_tokens = decoder.prompt_tokens
    # --- end of decoding backend ---
    rows = []
    for p, (problem, samples) in enumerate(zip(problems.to_dict("records"), results)):
        for s, (text, n_tok, finished) in enumerate(samples):
            rows.append({**{c: problem[c] for c in PROBLEM_COLUMNS}, "sample_id": s, "completion": text,
                         "prompt_tokens": prompt_tokens[p], "completion_tokens": n_tok,
                         "finished": finished, "model": str(model_dir)})
    df = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    write_table(df, out_path)
    new_tokens = int(df["completion_tokens"].sum())
    metrics = {"prompts": len(problems), "samples": len(df), "new_tokens": new_tokens,
               "seconds": round(seconds, 2), "tokens_per_second": round(new_tokens / seconds, 1),
               "unfinished": int((~df["finished"]).sum()), "plan": plan,
               "backend": backend, "backend_reason": backend_why}
    metrics["gate"] = check_gate("samples", out_path, samples_suite, cfg, samples_per_prompt=plan["samples_per_prompt"],
                                 inputs={"model": model_dir, "prompts": prompts_path})
    return metrics


def samples_suite(cfg: Config, samples_per_prompt: int = 0) -> list:
    """The rules every generated-samples table must meet (docs/data.md, 'samples'); K is the plan's
    (`samples_per_prompt`; the config's when no plan is given, e.g. listing the rules)."""
    E, g = expectations(), cfg.gates
    k = samples_per_prompt or cfg.generate.samples_per_prompt
    return [
        rule("samples.schema", E.ExpectTableColumnsToMatchSet(column_set=list(SAMPLE_COLUMNS), exact_match=False),
             "all sample columns", "every column of docs/architecture.md, 'Artifacts'"),
        rule("samples.prompt_type", E.ExpectColumnValuesToBeOfType(column="prompt", type_="str"),
             "prompts are text", "type str"),
        rule("samples.completion_type", E.ExpectColumnValuesToBeOfType(column="completion", type_="str"),
             "completions are text", "type str"),
        rule("samples.no_null_completion", E.ExpectColumnValuesToNotBeNull(column="completion"),
             "every sample has a completion", "0 nulls"),
        rule("samples.prompt_length", E.ExpectColumnValueLengthsToBeBetween(
            column="prompt", min_value=1, max_value=g.max_prompt_chars),
             "prompts are non-empty and not too long", f"1..{g.max_prompt_chars} chars (gates.max_prompt_chars)"),
        rule("samples.completion_length", E.ExpectColumnValueLengthsToBeBetween(
            column="completion", max_value=g.max_completion_chars),
             "completions are not too long", f"<= {g.max_completion_chars} chars (gates.max_completion_chars)"),
        rule("samples.empty_completions", E.ExpectColumnValueLengthsToBeBetween(
            column="completion", min_value=1, mostly=1 - g.max_empty_completion_share),
             "few empty completions", f"<= {g.max_empty_completion_share:.0%} of samples "
                                      f"(gates.max_empty_completion_share)"),
        rule("samples.completion_tokens", E.ExpectColumnValuesToBeBetween(
            column="completion_tokens", min_value=0, max_value=cfg.generate.max_new_tokens),
             "completion lengths within the sampling budget", f"0..{cfg.generate.max_new_tokens} tokens "
                                                               f"(generate.max_new_tokens)"),
        rule("samples.sample_ids", E.ExpectColumnValuesToBeBetween(column="sample_id", min_value=0, max_value=k - 1),
             "K samples per prompt", f"sample_id in 0..{k - 1} (the plan's samples per prompt)"),
    ]
