"""One training run of the train step: in this process, or on N processes under torchrun.

`train()` runs in the step's own process. It prepares the checkpoint folder, then either trains right here
(one process, no DeepSpeed: the default, and the fastest on one device) or launches

    python -m torch.distributed.run --nproc_per_node N --module flywheel.train.runner SPEC

and waits; every rank runs `run(spec)` (this module's `__main__`), rank 0 writes the model and the metrics.
A process that is already a rank (WORLD_SIZE and RANK set: a TrainJob's node runs `torchrun --module flywheel
train ...`) trains as that rank and launches nothing (flywheel/train/distributed.py).

Checkpoints and resume: every `train.save_steps` optimizer steps the Trainer saves a checkpoint (weights,
optimizer, scheduler, RNG; under DeepSpeed each rank's ZeRO shards) into a scratch folder keyed by the
step's output path, `<train.checkpoint_dir or $TMPDIR>/flywheel-checkpoints/<sha256(out)[:16]>`. An
interrupted step (a killed pod, a KFP retry, the same CLI command again) finds the last complete checkpoint
there and resumes from it, if the inputs are the same (a fingerprint of the data, the starting model's path,
the train config and the world size; otherwise the folder is cleared). The folder is removed on success.

The output is always a Hugging Face folder (ZeRO-3 shards gathered on save), written atomically, in the
starting model's dtype. With LoRA (`train.lora.r` > 0) it is the starting model with the trained adapter
merged in, and the adapter itself in its `adapter/` subfolder (`flywheel.train.lora`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flywheel.config import ModelConfig, TrainConfig
from flywheel.io import atomic_dir, read_json, read_table, write_json
from flywheel.locks import claim_scratch
from flywheel.schema import GRPO_PROMPT_COLUMNS, PREFERENCE_COLUMNS, TRAIN_COLUMNS
from flywheel.train.distributed import (barrier, batch_split, check_devices, deepspeed_config, dump_stack_on_term,
                                        gpu_available, init_process, launch_env, launched_world, launcher_command,
                                        master_port, remove_shm_buffers, resolve_precision, run_ranks, uses_launcher,
                                        world_size)

MODULE = "flywheel.train.runner"


def columns(recipe: str) -> tuple[str, ...]:
    if recipe == "grpo":
        return GRPO_PROMPT_COLUMNS  # online RL trains on prompts; its samples are drawn while training
    return TRAIN_COLUMNS if recipe == "sft" else PREFERENCE_COLUMNS


def checkpoint_dir(out_dir: str | Path, t: TrainConfig) -> Path:
    """The scratch folder of the run that writes `out_dir`."""
    root = Path(t.checkpoint_dir) if t.checkpoint_dir else Path(tempfile.gettempdir()) / "flywheel-checkpoints"
    return root / hashlib.sha256(str(Path(out_dir).resolve()).encode()).hexdigest()[:16]


def fingerprint(model_dir: str | Path, data_path: str | Path, t: TrainConfig, model_cfg: ModelConfig,
                ranks: int = 1) -> str:
    """What a checkpoint must have been trained from to be resumed."""
    h = hashlib.sha256()
    h.update(str(model_dir).encode())
    h.update(Path(data_path).read_bytes())
    h.update(t.model_dump_json(exclude={"launch", "checkpoint_dir", "save_steps"}).encode())
    h.update(model_cfg.model_dump_json(include={"chat", "system_prompt"}).encode())  # what the rows render to
    h.update(str(ranks).encode())  # ZeRO shards are per rank
    return h.hexdigest()


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint: the Trainer writes trainer_state.json last."""
    done = [p for p in folder.glob("checkpoint-*")
            if p.name.rpartition("-")[2].isdigit() and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.rpartition("-")[2]), default=None)


def prepare_checkpoints(folder: Path, print_: str, leader: bool = True, wait_s: float = 600) -> Path | None:
    """Return the checkpoint to resume from, or clear `folder` for a fresh start (`print_`: the fingerprint).

    In a launched world only rank 0 (`leader`) clears; the other ranks wait until its marker names these
    inputs, then read the same folder (on storage every node sees), so all ranks resume from one checkpoint."""
    marker = folder / "inputs.sha256"
    if not leader:
        deadline = time.monotonic() + wait_s
        while not (marker.is_file() and marker.read_text() == print_):
            if time.monotonic() > deadline:
                raise RuntimeError(f"train: rank 0 did not prepare {folder} within {wait_s:.0f} s; on several nodes "
                                   "train.checkpoint_dir must be storage every node sees")
            time.sleep(0.2)
        return last_checkpoint(folder)
    if marker.is_file() and marker.read_text() == print_:
        return last_checkpoint(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(print_)
    tmp.replace(marker)  # atomic: a waiting rank never reads half a marker
    return None


def train(model_dir: str | Path, data_path: str | Path, out_dir: str | Path, t: TrainConfig,
          model_cfg: ModelConfig | None = None, extra: dict[str, Any] | None = None) -> dict:
    """Train `model_dir` on the rows/pairs at `data_path` per `t`; write the model to `out_dir`; return metrics.

    `model_cfg` (the config's `model` section) says how prompts are rendered (`model.chat`, `system_prompt`);
    None = the defaults (the chat template when the tokenizer has one). `extra`: more entries of the ranks'
    spec (recipe grpo: the whole config, where the rollouts go)."""
    from flywheel.train.lora import check_target_modules

    model_cfg = model_cfg or ModelConfig()
    world, ranks = launched_world(), world_size(t)  # world: this process is already one rank (torchrun, TrainJob)
    leader = world is None or world[0] == 0
    batch_split(t, ranks)  # a bad split fails here, not in N ranks
    check_devices(t)
    ds = deepspeed_config(t.deepspeed)  # read here, once: the ranks get the dict, not a path to resolve
    check_target_modules(str(model_dir), t.lora)  # here, not after the model loaded in N ranks
    folder = checkpoint_dir(out_dir, t)
    # held while this step trains; removes the folders of killed steps. In a launched world only rank 0
    # holds it (the lock is exclusive: a second rank would wait for the first, which waits for it).
    scratch = claim_scratch(folder) if leader else None
    resume = prepare_checkpoints(folder, fingerprint(model_dir, data_path, t, model_cfg, ranks), leader)
    local = Path(model_dir).exists()  # else a hub id
    spec = {"model_dir": str(Path(model_dir).resolve()) if local else str(model_dir),
            "data_path": str(Path(data_path).resolve()),
            "out_dir": str(Path(out_dir).resolve()), "train": t.model_dump(), "model": model_cfg.model_dump(),
            "checkpoint_dir": str(folder),
            "resume_from": str(resume) if resume else None, "metrics_path": str(folder / "metrics.json"),
            "deepspeed": ds, **(extra or {})}
    if resume and leader:
        print(f"train: resuming from {resume}", file=sys.stderr, flush=True)
    if uses_launcher(t):
        write_json(spec, folder / "spec.json")
        port = master_port(t.launch)
        try:
            cmd = launcher_command(t.launch, port, MODULE, str(folder / "spec.json"))
            rc = run_ranks(cmd, launch_env(t.launch, dict(os.environ), gpu_available()))
        finally:
            remove_shm_buffers(port)
        if rc != 0:
            raise RuntimeError(f"train: torchrun exited with status {rc} (the ranks' logs are above); "
                               f"the same step run again resumes from the last checkpoint in {folder}")
        metrics = read_json(spec["metrics_path"], what="train metrics of rank 0")
    else:
        metrics = run(spec)
        if world is not None:
            barrier()
    if leader:  # the other ranks are done with the folder: their last collective was the save
        shutil.rmtree(folder, ignore_errors=True)
        scratch.release(unlink=True)
    return metrics


def steps_for(t: TrainConfig, rows: int) -> int:
    """Optimizer steps of this run: `max_steps`, or fewer when `max_epochs` caps the passes over `rows`."""
    if not t.max_epochs:
        return t.max_steps
    return max(1, min(t.max_steps, math.ceil(t.max_epochs * rows / t.batch_size)))


def _final_step_callback():
    from transformers import TrainerCallback

    class FinalStep(TrainerCallback):
        """Log the last step (for the final loss), but do not checkpoint it: the model is saved right after."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_log, control.should_save = True, False
            return control

    return FinalStep()


def training_arguments(t: TrainConfig, out: str, max_length: int, world_size: int, deepspeed: dict | None,
                       accelerator_config: dict | None, on_gpu: bool) -> dict[str, Any]:
    """Keyword arguments common to `SFTConfig` and `DPOConfig` (both `TrainingArguments`)."""
    micro, accumulation = batch_split(t, world_size)
    precision = resolve_precision(t.precision, on_gpu, deepspeed is not None)
    args = dict(
        output_dir=out, max_steps=t.max_steps, per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation, learning_rate=t.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, seed=t.seed, data_seed=t.seed,
        max_length=max_length, save_strategy="steps" if t.save_steps else "no", save_steps=t.save_steps or 500,
        save_total_limit=1, report_to=[], logging_steps=max(1, t.max_steps // 20),
        # use_cpu with DeepSpeed would hide DeepSpeed from the Trainer (stack-facts.md, section 2).
        use_cpu=not on_gpu and deepspeed is None, bf16=precision == "bf16", fp16=precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing, deepspeed=deepspeed, dataset_num_proc=None,
        disable_tqdm=False, log_level="warning", ddp_timeout=t.launch.timeout_s,
    )
    if accelerator_config:
        args["accelerator_config"] = accelerator_config
    return args


def run(spec: dict[str, Any]) -> dict:
    """The body of one rank (or of the only process): build the trainer, train, save; metrics on rank 0."""
    import torch
    from transformers import AutoConfig

    from flywheel.train import grpo, preference, sft

    t = TrainConfig.model_validate(spec["train"])
    model_cfg = ModelConfig.model_validate(spec["model"])
    ds = spec["deepspeed"]
    accelerator_config = init_process(ds is not None, t.launch.timeout_s)
    world_size, on_gpu = int(os.environ.get("WORLD_SIZE", "1")), gpu_available()
    rows = read_table(spec["data_path"], columns(t.recipe), what=f"curated training data of recipe {t.recipe}")
    t = t.model_copy(update={"max_steps": steps_for(t, len(rows))})
    base = AutoConfig.from_pretrained(spec["model_dir"])
    args = training_arguments(t, spec["checkpoint_dir"], base.max_position_embeddings, world_size, ds,
                              accelerator_config, on_gpu)
    if t.recipe == "sft":
        trainer = sft.make_trainer(spec["model_dir"], rows, args, t, model_cfg)
    elif t.recipe == "grpo":
        trainer = grpo.make_trainer(spec, rows, args, t)
    else:
        trainer = preference.make_trainer(spec["model_dir"], rows, args, t, model_cfg)
    trainer.add_callback(_final_step_callback())

    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=spec["resume_from"])
    seconds = time.perf_counter() - t0
    trainer.processing_class.padding_side = "left"  # the saved tokenizer is for generation
    save(trainer, spec, base.dtype or torch.float32, lora=bool(t.lora.r), deepspeed=ds is not None)

    metrics = _metrics(trainer, result, seconds, t, rows, spec, world_size, ds)
    if t.recipe == "grpo":
        metrics.update(grpo.finish(trainer, spec))  # rank 0: the rollouts table, loop health per step
    if trainer.args.should_save and spec.get("metrics_path"):
        write_json(metrics, spec["metrics_path"])
    return metrics


def save(trainer, spec: dict, dtype, lora: bool, deepspeed: bool) -> None:
    """Write the trained model to `spec["out_dir"]` (rank 0), in the starting model's `dtype`.

    Full fine-tuning saves the trained weights; under DeepSpeed `save_model` is collective (ZeRO-3 gathers
    the shards into one state dict), so every rank calls it and only rank 0 writes. With LoRA the adapter is
    saved (collectively too), then rank 0 merges it into a fresh copy of the starting model: one path for
    one process and for N ranks, and the weights saved are the starting model's plus the adapter's delta,
    whatever precision training ran in.
    """
    from flywheel.train.lora import merge_adapter

    if not trainer.args.should_save:
        trainer.save_model(spec["checkpoint_dir"])  # joins the gather; only rank 0 writes
        return
    with atomic_dir(spec["out_dir"]) as tmp:
        if lora:
            adapter = Path(spec["checkpoint_dir"]) / "final-adapter"
            trainer.save_model(str(adapter))
            merge_adapter(spec["model_dir"], adapter, tmp, dtype)
        elif deepspeed:
            trainer.save_model(str(tmp))
        else:
            trainer.model.to(dtype).save_pretrained(tmp)
        trainer.processing_class.save_pretrained(tmp)


def _metrics(trainer, result, seconds: float, t: TrainConfig, rows, spec: dict, world_size: int,
             ds: dict | None) -> dict:
    logs = [h for h in trainer.state.log_history if "loss" in h]
    # TRL counts the tokens this trainer saw (all ranks); after a resume, the last log is this run's count
    tokens = next((h["num_tokens"] for h in reversed(logs) if "num_tokens" in h), 0)
    m = {
        "recipe": t.recipe, "loss": logs[-1]["loss"] if logs else float(result.training_loss),
        "loss_first": logs[0]["loss"] if logs else float(result.training_loss),
        "loss_mean": float(result.training_loss), "steps": trainer.state.global_step, "rows": len(rows),
        "epochs": round(t.max_steps * t.batch_size / max(1, len(rows)), 2), "seconds": round(seconds, 2),
        "tokens": int(tokens), "tokens_per_second": round(tokens / seconds, 1) if seconds and tokens else None,
        "world_size": world_size, "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
        "deepspeed": (t.deepspeed if isinstance(t.deepspeed, str) else "custom") if ds else "none",
        "zero_stage": ds["zero_optimization"].get("stage", 0) if ds else None,
        "resumed_from_step": int(Path(spec["resume_from"]).name.rpartition("-")[2]) if spec["resume_from"] else None,
    }
    if t.recipe in ("dpo", "spin") and logs:
        m.update({"reward_margin_first": logs[0].get("rewards/margins"), "reward_margin": logs[-1].get("rewards/margins"),
                  "reward_accuracy": logs[-1].get("rewards/accuracies")})
    if t.lora.r:
        m["lora"] = {"r": t.lora.r, "trainable_parameters": sum(p.numel() for p in trainer.model.parameters()
                                                                if p.requires_grad)}
    m["log_history"] = log_history(trainer.state.log_history)
    return m


LOGGED = ("loss", "grad_norm", "learning_rate", "rewards/margins", "rewards/accuracies", "rewards/chosen",
          "rewards/rejected",
          # recipe grpo (TRL's names): reward mean/std, groups without reward variance, answer length, KL
          "reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "kl", "entropy")


def log_history(history: list[dict]) -> list[dict]:
    """The Trainer's training logs, compact: one entry per logging step (`logging_steps` = max_steps / 20, so
    at most ~21) with the step and the keys of `LOGGED` it has, rounded to 4 significant digits."""
    return [{"step": h["step"], **{k: float(f"{h[k]:.4g}") for k in LOGGED if k in h}}
            for h in history if "loss" in h]


def main(argv: list[str] | None = None) -> int:
    """Entry point of every rank under the launcher: `python -m flywheel.train.runner SPEC.json`."""
    argv = sys.argv[1:] if argv is None else argv
    dump_stack_on_term()
    run(json.loads(Path(argv[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
