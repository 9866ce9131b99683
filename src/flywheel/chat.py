"""Prompts as chat turns: the one place that decides whether, and how, a chat template is applied.

Every step that decodes (generate, evaluate, propose, the judge and reward-model verifiers) and every
trainer renders a task's prompt text through `render_prompts`, so the model sees the same text when it
is trained and when it is asked. The embedded character model has no chat template, so under
`model.chat: auto` its prompts stay raw text and its results do not change.
"""

from __future__ import annotations

from flywheel.config import ModelConfig


def uses_chat(tok, cfg: ModelConfig) -> bool:
    """Whether prompts go through `tok`'s chat template under `model.chat`."""
    has_template = bool(getattr(tok, "chat_template", None))
    if cfg.chat == "always" and not has_template:
        raise ValueError("model.chat is 'always' but the tokenizer has no chat template; "
                         "set model.chat: auto (or never), or use a chat model")
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
