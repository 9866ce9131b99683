"""Recipe sft: rejection-sampling fine-tuning (STaR, Zelikman et al. 2022; ReST-EM, Singh et al. 2024).

Supervised training on the rows curate kept (verified samples plus a share of labelled seed rows), with
the loss on the completion tokens only, by TRL's `SFTTrainer`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from flywheel.schema import TRAIN_COLUMNS


def make_trainer(model_dir: str, rows: pd.DataFrame, args: dict[str, Any]):
    """An `SFTTrainer` for `model_dir` on prompt/completion `rows`; `args` are the common training arguments."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from flywheel.model import load_model

    # The arguments first: under ZeRO-3 they make `from_pretrained` load each weight already sharded.
    config = SFTConfig(**args, completion_only_loss=True)
    model, tok = load_model(model_dir)
    tok.padding_side = "right"  # training pads on the right; generation (load_model) on the left
    data = Dataset.from_pandas(rows[list(TRAIN_COLUMNS)].reset_index(drop=True), preserve_index=False)
    return SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok)
