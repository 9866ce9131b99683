"""train: fine-tune a model on the curated data of the iteration, write a new checkpoint.

A dispatcher: the recipe (`train.recipe`, docs/recipes.md) decides what the curated artifact holds and
which TRL trainer runs (`flywheel.train.sft`, `flywheel.train.preference`); `flywheel.train.runner` runs it
in this process or under the `deepspeed` launcher (`train.deepspeed`, `train.launch`), checkpoints it so
that an interrupted step resumes, and writes the result in the Hugging Face layout, atomically.

    flywheel train CONFIG --model M --data CURATED.parquet --out MODEL_DIR
"""

from __future__ import annotations

import shutil
from pathlib import Path

from flywheel.config import Config
from flywheel.io import atomic_dir, read_table
from flywheel.steps import step


@step
def train_model(model_dir: str | Path, data_path: str | Path, out_dir: str | Path, cfg: Config,
                rollouts_path: str | Path | None = None, eval_path: str | Path | None = None) -> dict:
    """Fine-tune `model_dir` on the curated rows (or pairs) at `data_path`; write the checkpoint to `out_dir`.
    Recipe grpo: `data_path` holds prompts, the rollouts go to `rollouts_path` (default: inside `out_dir`),
    gated against the held-out prompts at `eval_path`."""
    from flywheel.train.runner import columns, train

    t = cfg.train
    if t.recipe == "grpo":
        from flywheel.train.grpo import train_grpo

        metrics = train_grpo(model_dir, data_path, out_dir, cfg, rollouts_path=rollouts_path, eval_path=eval_path)
        metrics["init_from"] = str(model_dir)
        return metrics
    kind = "rows" if t.recipe == "sft" else "preference pairs"
    data = read_table(data_path, columns(t.recipe), what=f"curated {kind} (recipe {t.recipe})")
    if data.empty and t.recipe == "sft":
        raise ValueError(f"{data_path}: no training rows; curate kept nothing (see its dropped rows and reasons)")
    if data.empty:
        # No prompt gave both a preferred and a rejected answer: nothing to learn this iteration, which is
        # an outcome, not an error. The model goes on unchanged and the summary says why.
        with atomic_dir(out_dir) as tmp:
            shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        return {"recipe": t.recipe, "skipped": "no preference pairs", "rows": 0, "steps": 0,
                "init_from": str(model_dir)}
    metrics = train(model_dir, data_path, out_dir, t, cfg.model)
    metrics["init_from"] = str(model_dir)
    return metrics
