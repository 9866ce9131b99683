"""Recipes dpo and spin: TRL's `DPOTrainer` on (prompt, chosen, rejected) pairs built by curate.

Both minimise the same logistic loss on the difference of policy-vs-reference log-ratios of the chosen and
the rejected completion (DPO, Rafailov et al. 2023, TRL `loss_type="sigmoid"`; SPIN's objective, Chen et
al. 2024 eq. 4.7 with the logistic loss, is this loss with beta = SPIN's lambda). They differ in the pairs
(`flywheel.steps.pairs`): dpo prefers a verified-correct sample to a verified-wrong one (iterative DPO,
Xiong et al. 2024; Pang et al. 2024), spin prefers the labelled seed answer to the model's own generation.
The reference model is the model training starts from, i.e. the previous iteration's model with
`train.init_from: current` (SPIN's opponent).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from flywheel.config import TrainConfig
from flywheel.schema import PREFERENCE_COLUMNS


def make_trainer(model_dir: str, rows: pd.DataFrame, args: dict[str, Any], t: TrainConfig):
    """A `DPOTrainer` for `model_dir` on preference `rows`, the reference being `model_dir` itself."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from flywheel.model import load_model

    # The arguments first: under ZeRO-3 they make `from_pretrained` load each weight already sharded.
    config = DPOConfig(**args, beta=t.beta, loss_type=["sigmoid"])
    model, tok = load_model(model_dir)
    reference, _ = load_model(model_dir)  # frozen: TRL only runs it under no_grad
    tok.padding_side = "right"
    data = Dataset.from_pandas(rows[list(PREFERENCE_COLUMNS)].reset_index(drop=True), preserve_index=False)
    return DPOTrainer(model=model, ref_model=reference, args=config, train_dataset=data, processing_class=tok)
