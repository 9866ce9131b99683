"""train: fine-tune a model on curated prompt/completion rows with TRL, write a new checkpoint.

Recipe `sft` is rejection-sampling fine-tuning (STaR, ReST-EM): supervised training on verified samples,
loss on the completion tokens only. The checkpoint is written in the Hugging Face layout, atomically.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from flywheel.config import Config
from flywheel.steps import step
from flywheel.io import atomic_dir, read_table
from flywheel.schema import TRAIN_COLUMNS


def sft_train(model_dir: str | Path, rows, out_dir: str | Path, *, max_steps: int, learning_rate: float,
              batch_size: int, warmup_ratio: float, weight_decay: float, seed: int) -> dict:
    """Supervised fine-tuning on a DataFrame of prompt/completion rows; returns training metrics."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from flywheel.model import load_model

    model, tok = load_model(model_dir)
    tok.padding_side = "right"  # training pads on the right; generation (load_model) on the left
    data = Dataset.from_pandas(rows[list(TRAIN_COLUMNS)].reset_index(drop=True), preserve_index=False)
    on_cpu = not torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="flywheel-train-") as scratch:
        args = SFTConfig(
            output_dir=scratch, max_steps=max_steps, per_device_train_batch_size=batch_size,
            learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=warmup_ratio,
            weight_decay=weight_decay, seed=seed, data_seed=seed, completion_only_loss=True,
            max_length=model.config.max_position_embeddings, save_strategy="no", report_to=[],
            logging_steps=max(1, max_steps // 20), use_cpu=on_cpu, bf16=not on_cpu and torch.cuda.is_bf16_supported(),
            dataset_num_proc=None, disable_tqdm=False, log_level="warning",
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        t0 = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - t0
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    tok.padding_side = "left"
    with atomic_dir(out_dir) as tmp:
        trainer.model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    epochs = max_steps * batch_size / max(1, len(rows))
    return {
        "loss": losses[-1] if losses else float(result.training_loss),
        "loss_first": losses[0] if losses else float(result.training_loss),
        "loss_mean": float(result.training_loss), "steps": max_steps, "rows": len(rows),
        "epochs": round(epochs, 2), "seconds": round(seconds, 2),
        "tokens_per_second": round(tokens * epochs / seconds, 1) if seconds else None,
    }


@step
def train_model(model_dir: str | Path, data_path: str | Path, out_dir: str | Path, cfg: Config) -> dict:
    """Fine-tune `model_dir` on the curated rows at `data_path`; write the checkpoint to `out_dir`."""
    rows = read_table(data_path, TRAIN_COLUMNS, what="curated training rows")
    if rows.empty:
        raise ValueError(f"{data_path}: no training rows; curate kept nothing (see its dropped rows and reasons)")
    t = cfg.train
    metrics = sft_train(model_dir, rows, out_dir, max_steps=t.max_steps, learning_rate=t.learning_rate,
                        batch_size=t.batch_size, warmup_ratio=t.warmup_ratio, weight_decay=t.weight_decay,
                        seed=t.seed)
    metrics["init_from"] = str(model_dir)
    return metrics

