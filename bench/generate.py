"""Benchmark: the `generate` step against a plain one-prompt-at-a-time `model.generate` loop.

    python bench/generate.py                    # the embedded demo model shape, random init
    python bench/generate.py --model runs/demo/model --prompts 512
    python bench/generate.py --model smollm2-135m-instruct --prompts 48 --new-tokens 32 --batch-size 48

One run, same model, same prompts, greedy decoding, prints tokens/s of both, their ratio, and the step's
share of this machine's matmul ceiling (measured here, in this run: an fp32 1024^3 matmul; decoding
costs about 2 FLOP per parameter per token). The embedded model gets arithmetic prompts; a chat model
(one with a chat template) gets the one-step word problems of examples/smollm2.yaml, rendered with its
template on both sides. Fails if the greedy outputs differ (a real model in fp32: if more than 10% differ,
since a padded batch changes the last bits of the logits and, rarely, an argmax).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from flywheel.chat import add_special_tokens, render_prompts, uses_chat
from flywheel.config import parse_config
from flywheel.io import read_table, write_table
from flywheel.model import count_parameters, load_model, save_embedded_base
from flywheel.steps.generate import generate_samples, stop_token_ids
from flywheel.tasks.arithmetic import Arithmetic


def matmul_gflops(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


@torch.inference_mode()
def plain_loop(model, tok, prompts: list[str], new_tokens: int, special: bool = True) -> tuple[list[str], int, float]:
    """model.generate one prompt at a time (no padding), stopping at the same tokens as the step."""
    stop = stop_token_ids(model, tok)
    texts, total = [], 0
    t0 = time.perf_counter()
    for p in prompts:
        enc = tok(p, return_tensors="pt", add_special_tokens=special).to(model.device)
        out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=stop)
        ids = out[0, enc["input_ids"].shape[1]:].tolist()
        end = next((j for j, t in enumerate(ids) if t in stop), None)
        total += len(ids) if end is None else end + 1
        texts.append(tok.decode(ids if end is None else ids[:end], skip_special_tokens=True))
    return texts, total, time.perf_counter() - t0


def word_problems(n: int) -> list[dict]:
    """The first `n` training problems of examples/smollm2.yaml, as problem rows."""
    import json

    path = Path(__file__).resolve().parents[1] / "examples" / "data" / "smollm2_train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:n]]
    return [{"prompt_id": r["id"], "prompt": r["question"], "reference": r["answer"].rsplit(" ", 1)[-1],
             "difficulty": r["difficulty"]} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="model folder, a built-in (smollm2-135m-instruct) or 'embedded' "
                                                         "(demo shape, random init)")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=512)
    args = ap.parse_args()

    cfg = parse_config({"generate": {"backend": "transformers", "temperature": 0.0, "samples_per_prompt": 1,
                                     "max_new_tokens": args.new_tokens,
                                     "batch_size": args.batch_size, "prompts_per_iteration": args.prompts}})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model
        if model_dir == "embedded":
            model_dir = save_embedded_base(cfg, tmp / "model")
        model, tok = load_model(model_dir)
        chat = uses_chat(tok, cfg.model)
        # Equal-length prompts (the arithmetic format), so neither side pays for padding; a chat model gets
        # word problems (what it is for), rendered the way the step renders them.
        rows = (word_problems(args.prompts) if chat else
                Arithmetic(width=5, seed_digits=5).prompts(1, args.prompts, seed=0))
        write_table(pd.DataFrame(rows), tmp / "prompts.parquet")
        n_params = count_parameters(model)
        prompts = render_prompts(tok, [r["prompt"] for r in rows], cfg.model)

        ceiling = matmul_gflops()
        base_texts, base_tokens, base_s = plain_loop(model, tok, prompts, args.new_tokens,
                                                     add_special_tokens(tok, cfg.model))
        t0 = time.perf_counter()
        generate_samples(model_dir, tmp / "prompts.parquet", tmp / "samples.parquet", cfg)  # load + decode + write
        step_s = time.perf_counter() - t0
        samples = read_table(tmp / "samples.parquet")
        step_tokens = int(samples["completion_tokens"].sum())

    same_share = sum(a == b for a, b in zip(samples["completion"].tolist(), base_texts)) / len(base_texts)
    base_tps, step_tps = base_tokens / base_s, step_tokens / step_s
    ceiling_tps = ceiling * 1e9 / (2 * n_params)
    print(f"model: {n_params / 1e6:.2f}M parameters ({args.model}, {model.dtype}, {model.device}); {args.prompts} "
          f"{'chat-rendered word problems' if chat else 'arithmetic prompts'} x up to {args.new_tokens} new tokens, "
          f"greedy; batch {args.batch_size}; torch threads: {torch.get_num_threads()}")
    print(f"matmul ceiling: {ceiling:.1f} GFLOP/s fp32 = {ceiling_tps:,.0f} tok/s at 2 FLOP/param/token\n")
    print(f"{'':32}{'tokens':>8}{'seconds':>10}{'tok/s':>12}{'% ceiling':>11}")
    print(f"{'one prompt at a time (baseline)':32}{base_tokens:>8}{base_s:>10.2f}{base_tps:>12,.0f}"
          f"{100 * base_tps / ceiling_tps:>10.1f}%")
    print(f"{'generate step (batched, KV cache)':32}{step_tokens:>8}{step_s:>10.2f}{step_tps:>12,.0f}"
          f"{100 * step_tps / ceiling_tps:>10.1f}%")
    print(f"\nratio: {step_tps / base_tps:.1f}x (goal >= 10x, stretch 20x); greedy outputs identical: "
          f"{same_share:.1%}")
    if same_share < (0.9 if chat else 1.0):
        raise SystemExit("greedy outputs differ between the step and the baseline")


if __name__ == "__main__":
    main()
