"""Recipes dpo and spin: TRL's `DPOTrainer` on (prompt, chosen, rejected) pairs built by curate.

Both minimise the same logistic loss on the difference of policy-vs-reference log-ratios of the chosen and
the rejected completion (DPO, Rafailov et al. 2023, TRL `loss_type="sigmoid"`; SPIN's objective, Chen et
al. 2024 section 4, with the logistic loss is this loss with beta = SPIN's lambda). They differ in the
pairs (`flywheel.steps.pairs`): dpo prefers a verified-correct sample to a verified-wrong one (iterative
DPO, Xiong et al. 2024; Pang et al. 2024), spin prefers the labelled seed answer to the model's own
generation. With `train.nll_weight` > 0 an NLL term on the chosen answer is added (Pang et al.'s
iterative RPO, who found the NLL term important for reasoning accuracy). The reference model is the model
training starts from: the previous iteration's model with `train.init_from: current` (SPIN's opponent). With LoRA
(`train.lora.r` > 0) the reference is that same model with the adapter disabled (TRL does this when
`ref_model` is None and the model is a PeftModel): no second copy in memory.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from flywheel.config import ModelConfig, TrainConfig
from flywheel.schema import PREFERENCE_COLUMNS


def make_trainer(model_dir: str, rows: pd.DataFrame, args: dict[str, Any], t: TrainConfig, model_cfg: ModelConfig):
    """A `DPOTrainer` for `model_dir` on preference `rows`, the reference being `model_dir` itself."""
    from trl import DPOConfig, DPOTrainer

    from flywheel.train.data import load_for_training, to_dataset
    from flywheel.train.lora import peft_config

    # The arguments first: under ZeRO-3 they make `from_pretrained` load each weight already sharded.
    # nll_weight > 0 adds TRL's "sft" loss (mean NLL of the chosen tokens): DPO + NLL is Pang et al.'s RPO.
    if t.nll_weight:
        losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, t.nll_weight]}
    else:
        losses = {"loss_type": ["sigmoid"]}
    config = DPOConfig(**args, beta=t.beta, **losses)
    model, tok = load_for_training(model_dir, model_cfg)
    lora = peft_config(t.lora)
    # frozen: TRL only runs it under no_grad; with LoRA, None = the adapter-disabled policy
    reference = None if lora else load_for_training(model_dir, model_cfg)[0]
    data = to_dataset(rows, PREFERENCE_COLUMNS, tok, model_cfg)
    return DPOTrainer(model=model, ref_model=reference, args=config, train_dataset=data, processing_class=tok,
                      peft_config=lora)
