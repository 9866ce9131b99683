"""The embedded default model, and loading any model by path or hub id.

No hub is reachable on the reference machine, so the default is built here: a character-level tokenizer
made with `tokenizers` and a ~1M-parameter Llama made from a `LlamaConfig`, both saved in the Hugging
Face layout. From then on nothing is special about it: every step loads models with `Auto*` classes,
so `model.base: Qwen/Qwen2.5-0.5B` (or a local checkpoint) goes through the same code.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

from flywheel.config import Config, EmbeddedModelConfig

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
# One token per printable ASCII character: enough for arithmetic and for the text of most small tasks.
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]


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


def load_model(path: str | Path):
    """Load a causal LM and its tokenizer by local path or hub id, ready for left-padded generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(path)
    if Path(path).exists() and not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model folder (no config.json); expected a Hugging Face checkpoint")
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    return model, tok


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_embedded_base(cfg: Config, out_dir: str | Path) -> Path:
    """Build the untrained embedded model + tokenizer into `out_dir` (Hugging Face layout)."""
    tok = build_tokenizer()
    model = build_model(cfg.model.embedded, len(tok), tok.pad_token_id, tok.eos_token_id, cfg.seed)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return Path(out_dir)
