"""Benchmark: the generate step on its two backends, transformers and vLLM, on the same prompts (GPU only).

    pip install 'llm-flywheel[vllm]'                                  # on a CUDA machine
    python bench/generate_vllm.py                                     # embedded demo shape, random init
    python bench/generate_vllm.py --model Qwen/Qwen2.5-0.5B --prompts 1024 --samples 8

Runs `generate_samples` twice on one prompts table, `generate.backend: transformers` then `vllm`, with the
same sampling settings (temperature, K samples per prompt, max new tokens, seed), and prints samples/s and
tokens/s of each side by side: decoding alone (the step's `seconds`) and the whole step (load + decode +
write + gate). It also checks what the rows must share (prompt ids, sample ids, columns) and compares the
token counts per row (the two backends draw with different generators, so the texts differ). Without a
CUDA GPU or without vLLM it exits at once (status 2) saying which is missing: nothing is measured on CPU.
Record the printed table in docs/deploy.md ("Generation backends").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="model folder or hub id, or 'embedded' (demo shape, random init)")
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=8, help="K samples per prompt")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--batch-size", type=int, default=512, help="the transformers backend's decode batch")
    args = ap.parse_args()

    from flywheel.steps.vllm_backend import cuda_available, vllm_importable

    missing = [m for m, ok in (("vllm is not installed (pip install 'llm-flywheel[vllm]')", vllm_importable()),
                               ("no CUDA GPU is visible", cuda_available())) if not ok]
    if missing:
        print(f"bench/generate_vllm.py: nothing measured: {'; '.join(missing)}. It compares the two backends "
              f"on a GPU only.", file=sys.stderr)
        raise SystemExit(2)

    from flywheel.config import parse_config
    from flywheel.io import read_table, write_table
    from flywheel.model import save_embedded_base
    from flywheel.steps.generate import generate_samples
    from flywheel.tasks.arithmetic import Arithmetic

    section = {"temperature": args.temperature, "samples_per_prompt": args.samples, "max_new_tokens": args.new_tokens,
               "batch_size": args.batch_size, "prompts_per_iteration": args.prompts}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model
        if model_dir == "embedded":
            model_dir = save_embedded_base(parse_config({}), tmp / "model")
        rows = Arithmetic(width=5, seed_digits=5).prompts(1, args.prompts, seed=0)
        write_table(pd.DataFrame(rows), tmp / "prompts.parquet")
        results = {}
        for backend in ("transformers", "vllm"):
            cfg = parse_config({"generate": {**section, "backend": backend}})
            t0 = time.perf_counter()
            m = generate_samples(model_dir, tmp / "prompts.parquet", tmp / f"{backend}.parquet", cfg, iteration=1)
            results[backend] = (m, time.perf_counter() - t0, read_table(tmp / f"{backend}.parquet"))

    print(f"model {args.model}; {args.prompts} prompts x {args.samples} samples, <= {args.new_tokens} new tokens, "
          f"temperature {args.temperature}\n")
    print(f"{'backend':14}{'samples':>9}{'decode s':>10}{'samples/s':>11}{'tok/s':>10}{'step s':>9}{'samples/s':>11}")
    for backend, (m, wall, _) in results.items():
        print(f"{backend:14}{m['samples']:>9}{m['seconds']:>10.2f}{m['samples'] / m['seconds']:>11,.0f}"
              f"{m['tokens_per_second']:>10,.0f}{wall:>9.1f}{m['samples'] / wall:>11,.1f}")
    (_, _, a), (_, _, b) = results["transformers"], results["vllm"]
    same_rows = a[["prompt_id", "sample_id"]].equals(b[["prompt_id", "sample_id"]]) and list(a.columns) == list(b.columns)
    print(f"\nsame rows and columns: {same_rows}; mean completion tokens: transformers "
          f"{a['completion_tokens'].mean():.2f}, vllm {b['completion_tokens'].mean():.2f}; finished: "
          f"{a['finished'].mean():.1%} vs {b['finished'].mean():.1%}")
    vt = results["vllm"][0]["seconds"]
    print(f"vllm / transformers, decoding: {results['transformers'][0]['seconds'] / vt:.1f}x")
    if not same_rows:
        raise SystemExit("the two backends' rows differ in prompt ids, sample ids or columns")


if __name__ == "__main__":
    main()
