"""Prompts as chat turns: the one place that decides whether, and how, a chat template is applied.

Every step that decodes (generate, evaluate, propose, the judge and reward-model verifiers) and every
trainer renders a task's prompt text through `render_prompts`, so the model sees the same text when it
is trained and when it is asked. The embedded character model has no chat template, so under
`model.chat: auto` its prompts stay raw text and its results do not change.

Why it matters, measured: SmolLM2-135M-Instruct given a one-step word problem as raw text scored 0.000
held-out (it loops, `##### 3\\n##### 4\\n...`); through its chat template it solves about a third greedily.
"""

from __future__ import annotations

from flywheel.config import ModelConfig


def uses_chat(tok, cfg: ModelConfig) -> bool:
    """Whether prompts go through `tok`'s chat template under `model.chat`."""
    has_template = bool(getattr(tok, "chat_template", None))
    if cfg.chat == "always" and not has_template:
        raise ValueError(f"model.chat is 'always' but the tokenizer of {getattr(tok, 'name_or_path', '?')!r} has "
                         "no chat template; set model.chat: auto (or never), or use a chat model")
    return cfg.chat != "never" and has_template


def messages(prompt: str, cfg: ModelConfig) -> list[dict]:
    """The conversation a prompt becomes: an optional system turn, then the prompt as the user turn."""
    turns = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    return [*turns, {"role": "user", "content": prompt}]


def render_prompts(tok, prompts: list[str], cfg: ModelConfig) -> list[str]:
    """The text the model is given for each prompt: the chat template with the generation prompt added,
    or the prompt itself when no template is used."""
    if not uses_chat(tok, cfg):
        return list(prompts)
    return [tok.apply_chat_template(messages(p, cfg), tokenize=False, add_generation_prompt=True)
            for p in prompts]


def add_special_tokens(tok, cfg: ModelConfig) -> bool:
    """Whether to tokenize rendered prompts with the tokenizer's own special tokens (BOS). Not after a chat
    template: the template writes them itself (Llama 3's starts with <|begin_of_text|>), and adding them
    again would give the model two BOS tokens it never saw in training."""
    return not uses_chat(tok, cfg)
