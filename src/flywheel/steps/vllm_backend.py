"""Optional vLLM backend for generate: NOT wired in and NOT tested (no GPU on the development machines).

A hook for the GPU path, kept out of `generate_samples` until it can be measured:
`pip install 'llm-flywheel[vllm]'` on a CUDA image, then `decode_vllm` returns exactly what
`flywheel.steps.generate.decode_batched` returns. It keeps the sharding property: each (prompt, sample)
is its own request with its own `SamplingParams(seed=...)`, the same per-row key as the transformers
path, so 1 and N shards give the same rows (though not the same rows as the transformers backend: the
two draw with different generators). To wire it: a `generate.backend: transformers | vllm` field (the
generate section is the loop's), chosen when vLLM imports and `torch.cuda.is_available()`; then measure
samples/s against the transformers backend on the same prompts (bench/generate.py) and record both in
docs/.
"""

from __future__ import annotations


def vllm_available() -> bool:
    import importlib.util

    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def decode_vllm(model_dir: str, prompts: list[str], keys: list[str], *, samples: int, temperature: float,
                top_p: float, max_new_tokens: int, seed: int):
    """For each prompt, `samples` (text, completion_tokens, finished) tuples, like decode_batched."""
    from vllm import LLM, SamplingParams

    from flywheel.steps.sampling import row_keys

    llm = LLM(model=str(model_dir), seed=seed)
    seeds = row_keys(seed, keys, samples)
    requests = [p for p in prompts for _ in range(samples)]
    params = [SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=s, n=1)
              for s in seeds]
    outs = llm.generate(requests, params)
    tuples = [(o.outputs[0].text, len(o.outputs[0].token_ids), o.outputs[0].finish_reason == "stop") for o in outs]
    return [tuples[i * samples:(i + 1) * samples] for i in range(len(prompts))]
