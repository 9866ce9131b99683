"""Recipe sft: rejection-sampling fine-tuning (STaR, Zelikman et al. 2022; ReST-EM, Singh et al. 2024).

Supervised training on the rows curate kept (verified samples plus a share of labelled seed rows), with
the loss on the completion tokens only, by TRL's `SFTTrainer`; through the chat template when the model
uses one (`flywheel.train.data`), with LoRA adapters when `train.lora.r` > 0.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from flywheel.config import ModelConfig, TrainConfig
from flywheel.schema import TRAIN_COLUMNS


def make_trainer(model_dir: str, rows: pd.DataFrame, args: dict[str, Any], t: TrainConfig, model_cfg: ModelConfig):
    """An `SFTTrainer` for `model_dir` on prompt/completion `rows`; `args` are the common training arguments."""
    from trl import SFTConfig, SFTTrainer

    from flywheel.train.data import load_for_training, to_dataset
    from flywheel.train.lora import peft_config

    # The arguments first: under ZeRO-3 they make `from_pretrained` load each weight already sharded.
    config = SFTConfig(**args, completion_only_loss=True)
    model, tok = load_for_training(model_dir, model_cfg)
    data = to_dataset(rows, TRAIN_COLUMNS, tok, model_cfg)
    return SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok,
                      peft_config=peft_config(t.lora))
