"""What the trainers train on: the starting model, and the curated rows as a TRL dataset rendered the way
the decoding steps render prompts.

With a chat template in use (`flywheel.chat.uses_chat`), rows become TRL's *conversational*
prompt/completion format: the prompt is the conversation `flywheel.chat.messages` builds (the system turn,
then the task's prompt as the user turn), each completion (sft `completion`, dpo/spin `chosen` and
`rejected`) one assistant turn. TRL then tokenizes the prompt with `add_generation_prompt=True` (the text
`render_prompts` gives generate and evaluate) and prompt + completion with the template, and takes the loss
on the tokens past their common prefix only: the answer and the template's end-of-turn, never the template
around the prompt. Without a template the rows stay plain text, as before (TRL appends the EOS token).
"""

from __future__ import annotations

import pandas as pd

from flywheel.chat import messages, uses_chat
from flywheel.config import ModelConfig


def load_for_training(model_dir: str, model_cfg: ModelConfig):
    """The model to train and its tokenizer, padded on the right (training pads right, generation left)."""
    from flywheel.model import load_model

    model, tok = load_model(model_dir)
    tok.padding_side = "right"
    return model, tok


def to_dataset(rows: pd.DataFrame, columns: tuple[str, ...], tok, model_cfg: ModelConfig):
    """`rows[columns]` ('prompt' plus completion columns) as a `datasets.Dataset`, conversational when the
    chat template is used."""
    from datasets import Dataset

    rows = rows[list(columns)].reset_index(drop=True)
    if uses_chat(tok, model_cfg):
        rows = pd.DataFrame({c: [messages(p, model_cfg) for p in rows[c]] if c == "prompt"
                             else [[{"role": "assistant", "content": a}] for a in rows[c]] for c in columns})
        return Dataset.from_list(rows.to_dict("records"))
    return Dataset.from_pandas(rows, preserve_index=False)
