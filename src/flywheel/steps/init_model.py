"""init-model: the starting model of the loop.

`model.base: embedded` builds the tiny Llama and its char tokenizer, then warm-starts it with supervised
training on the task's labelled seed set (easy problems only). Any other `model.base` (the built-in
`smollm2-135m-instruct`, a local checkpoint or a hub id) is loaded with `Auto*` classes and saved as-is, in
its own dtype, so later steps see one layout.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from flywheel.config import Config, TrainConfig
from flywheel.steps import step
from flywheel.io import atomic_dir, read_table
from flywheel.schema import TRAIN_COLUMNS


@step
def init_model(cfg: Config, seed_path: str | Path, out_dir: str | Path) -> dict:
    from flywheel.model import count_parameters, load_model, save_embedded_base

    if cfg.model.base != "embedded":
        from flywheel.chat import uses_chat

        # On the CPU in the checkpoint's own dtype (dtype="auto"): re-saved as it is, not in fp32 (twice
        # the size of a bf16 base); each later step places it per model.device / model.dtype.
        model, tok = load_model(cfg.model.base, cfg.model, device="cpu", dtype="auto")
        chat = uses_chat(tok, cfg.model)  # model.chat: always without a template stops here
        with atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        metrics = {"base": cfg.model.base, "parameters": count_parameters(model), "warm_start_steps": 0,
                   "dtype": str(model.dtype).removeprefix("torch."), "chat_template": chat}
    else:
        e = cfg.model.embedded
        from flywheel.train.runner import train as run_training

        read_table(seed_path, TRAIN_COLUMNS, what="labelled seed set")
        warm = TrainConfig(recipe="sft", max_steps=e.warmup_steps, learning_rate=e.learning_rate,
                           batch_size=e.batch_size, warmup_ratio=0.05, seed=cfg.seed, save_steps=0)
        with tempfile.TemporaryDirectory(prefix="flywheel-base-") as base:
            save_embedded_base(cfg, base)
            train = run_training(base, seed_path, out_dir, warm)
        model, _ = load_model(out_dir, cfg.model)
        metrics = {"base": "embedded", "parameters": count_parameters(model),
                   "warm_start_steps": e.warmup_steps, "warm_start": train}
    return metrics
