"""The decoding engine of every step that decodes (generate, evaluate, propose): transformers (always there)
or vLLM (an optional extra, GPU only).

    pip install 'llm-flywheel[vllm]'          # on a CUDA machine (vllm==0.31.0; or the CUDA image)
    generate: {backend: auto}                 # vLLM when it can run, else transformers (the reason is logged)

`open_decoder` picks one (`select_backend`, which says why), loads it once, and its `decode` returns what
`generate.decode_batched` returns, so each step builds its rows (docs/architecture.md, "Artifacts") the same
way for both; the step's metrics carry `backend` and `backend_reason`.

What vLLM needs of a checkpoint: a Hugging Face folder (or hub id) whose `config.json` names an architecture
in vLLM's model registry, and a tokenizer that `AutoTokenizer.from_pretrained` loads (vLLM loads it that
way). The embedded model qualifies on both counts on paper: `LlamaForCausalLM`, and a character-level
`PreTrainedTokenizerFast` saved with `save_pretrained` (tokenizer.json), which every step already loads with
`AutoTokenizer`; its head size (hidden 128 / 4 heads = 32) is one FlashAttention takes. With `dtype="auto"`
vLLM runs an fp32 checkpoint in fp16 (vLLM's documented rule for "auto"), so its numbers differ slightly from
the transformers backend's fp32. None of this has run here (no GPU, and vLLM pulls a CUDA torch): on a GPU,
`bench/gpu.py` is the first check, and `generate.backend: transformers` the way back.

Reproducibility: every (prompt, sample) is its own request with `SamplingParams(n=1, seed=key)`, the key
from `sampling.row_keys` (seed, prompt id, sample index) that the transformers backend also uses. vLLM then
draws that request's tokens from a generator seeded by that key alone, so a row does not depend on which
other prompts share its batch or its shard. What vLLM guarantees on top (docs.vllm.ai, "Reproducibility"):
identical outputs only on the same hardware and the same vLLM version, and only with deterministic
scheduling (offline `LLM`, `VLLM_ENABLE_V1_MULTIPROCESSING=0`) or with batch invariance
(`VLLM_BATCH_INVARIANT=1`, NVIDIA compute capability >= 8.0, beta); otherwise a different batch mix can
change the logits in the last bits (different kernels and reduction orders) and so, rarely, a sampled
token. The two backends never give the same samples: they draw with different generators.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

FIX = ("pip install 'llm-flywheel[vllm]' on a machine with a CUDA GPU, or set generate.backend: transformers "
       "(or auto)")


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def vllm_unfit(model_dir: str | Path) -> str | None:
    """Why vLLM cannot serve this checkpoint (its architecture is not in vLLM's registry, or AutoTokenizer
    cannot load its tokenizer), or None if it can. Needs vLLM installed."""
    from transformers import AutoConfig, AutoTokenizer
    from vllm import ModelRegistry

    try:
        archs = AutoConfig.from_pretrained(str(model_dir)).architectures or []
        AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as err:
        return f"{model_dir}: {type(err).__name__}: {err}"
    supported = set(ModelRegistry.get_supported_archs())
    if not any(a in supported for a in archs):
        return f"architecture {archs} of {model_dir} is not one vLLM supports"
    return None


def select_backend(requested: str, model_dir: str | Path) -> tuple[str, str]:
    """('vllm' | 'transformers', why). `requested` is generate.backend: 'transformers' is taken as is;
    'vllm' raises ValueError (one message: the field and the fix) where vLLM cannot run; 'auto' takes vLLM
    where it can run and falls back to transformers otherwise, logging the reason to stderr."""
    if requested == "transformers":
        return "transformers", "generate.backend: transformers"
    missing = ("vllm is not installed" if not vllm_importable() else
               "no CUDA GPU is visible (torch.cuda.is_available() is False)" if not cuda_available() else
               vllm_unfit(model_dir))
    if missing is None:
        return "vllm", f"generate.backend: {requested}; vLLM imports, a CUDA GPU is present, the checkpoint qualifies"
    if requested == "vllm":
        raise ValueError(f"generate.backend is 'vllm' but {missing}: {FIX}")
    why = f"generate.backend: auto -> transformers ({missing})"
    print(f"generate: {why}", file=sys.stderr, flush=True)
    return "transformers", why


def load_vllm(model_dir: str | Path, seed: int, dtype: str = "auto"):
    """The vLLM engine for the checkpoint (model and tokenizer from the same folder)."""
    from vllm import LLM

    return LLM(model=str(model_dir), tokenizer=str(model_dir), dtype=dtype, seed=seed)


def decode_vllm(llm, prompts: list[str], keys: list[str], *, samples: int, temperature: float, top_p: float,
                max_new_tokens: int, seed: int, sampling_params=None, add_special_tokens: bool = True):
    """For each prompt, `samples` (text, completion_tokens, finished) tuples, as `decode_batched` returns,
    and each prompt's length in tokens. `sampling_params`: the SamplingParams class (default vLLM's).
    `add_special_tokens=False` (chat-rendered text, whose template wrote the BOS): the prompts go as token
    ids encoded without special tokens, as the transformers backend encodes them; vLLM would add a BOS.

    completion_tokens is len(token_ids): for a request that stopped on the end-of-sequence token
    (finish_reason 'stop') vLLM keeps that token in token_ids and leaves it out of the text
    (skip_special_tokens), which matches `decode_batched` (EOS counted, not in the text). Our reading of
    vLLM's stop check, not run here: the GPU bench compares the two backends' token counts."""
    if sampling_params is None:
        from vllm import SamplingParams as sampling_params

    from flywheel.steps.sampling import row_keys

    row_seeds = row_keys(seed, keys, samples)  # one per (prompt, sample), in the order prompts x samples
    if not add_special_tokens:
        tok = llm.get_tokenizer()
        prompts = [{"prompt_token_ids": tok(p, add_special_tokens=False)["input_ids"]} for p in prompts]
    requests = [p for p in prompts for _ in range(samples)]
    params = [sampling_params(n=1, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=s)
              for s in row_seeds]
    outs = llm.generate(requests, params)  # one RequestOutput per request, in request order
    rows = [(o.outputs[0].text, len(o.outputs[0].token_ids), o.outputs[0].finish_reason == "stop") for o in outs]
    prompt_tokens = [len(outs[i * samples].prompt_token_ids) for i in range(len(prompts))]
    return [rows[i * samples:(i + 1) * samples] for i in range(len(prompts))], prompt_tokens


class Decoder:
    """One step's decoding engine, loaded once. `decode` takes the prompts as text (already rendered, e.g. through
    the chat template) and returns, per prompt, `samples` (text, completion_tokens, finished) tuples, as
    `generate.decode_batched` does; `prompt_tokens` is then each prompt's length in tokens."""

    def __init__(self, backend: str, reason: str, engine):
        self.backend, self.reason, self.engine = backend, reason, engine
        self.prompt_tokens: list[int] = []

    def decode(self, prompts: list[str], *, samples: int, temperature: float, top_p: float, max_new_tokens: int,
               batch_size: int, seed: int, desc: str = "generate", keys: list[str] | None = None,
               add_special_tokens: bool = True) -> list[list]:
        keys = keys if keys is not None else [str(i) for i in range(len(prompts))]
        if self.backend == "vllm":
            out, self.prompt_tokens = decode_vllm(self.engine, prompts, keys, samples=samples, temperature=temperature,
                                                  top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                                                  add_special_tokens=add_special_tokens)
            return out
        from flywheel.steps.generate import decode_batched

        model, tok = self.engine
        out = decode_batched(model, tok, prompts, samples=samples, temperature=temperature, top_p=top_p,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, desc=desc, keys=keys,
                             add_special_tokens=add_special_tokens)
        self.prompt_tokens = ([len(x) for x in tok(prompts, add_special_tokens=add_special_tokens)["input_ids"]]
                              if prompts else [])
        return out


def open_decoder(requested: str, model_dir: str | Path, *, seed: int, load) -> Decoder:
    """The engine `generate.backend` asks for (see `select_backend`); `load()` returns the step's own
    transformers (model, tokenizer), called only when transformers decodes."""
    backend, why = select_backend(requested, model_dir)
    return Decoder(backend, why, load_vllm(model_dir, seed=seed) if backend == "vllm" else load())
