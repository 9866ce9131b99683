"""Recipe grpo: online RL with the loop's verifiers as rewards, by TRL's `GRPOTrainer` (the loss is TRL's).

Each optimizer step samples K = `generate.samples_per_prompt` completions for each of `train.batch_size / K`
of the prompts curate chose (at `generate.temperature`, `top_p`, `max_new_tokens`, so rollouts are drawn as
the generate step draws samples), scores them with the rewards of `train.grpo.rewards`
(`flywheel.rewards`: the verifiers, unchanged), turns the rewards into advantages relative to the prompt's
group (GRPO, Shao et al. 2024; the variants of `train.grpo.loss_type` and `scale_rewards`: Dr. GRPO, Liu
et al. 2025; DAPO, Yu et al. 2025) and takes a clipped policy-gradient step. `train.grpo.beta` > 0 adds a
KL penalty toward the model the iteration starts from (a reference copy is loaded; 0 = none).

Generation is TRL's: transformers' `generate` in the training process (the CPU default), or vLLM inside
the same processes on a GPU (`train.grpo.use_vllm`, `vllm_mode: colocate`). LoRA (`train.lora`) and
DeepSpeed ZeRO-2/3 (`train.deepspeed`) work as for the other recipes: the runner
(`flywheel.train.runner`) launches, checkpoints, resumes and saves.

Every rollout (prompt, completion, each reward, advantage, step) is written by rank 0 as a Parquet part per
step into the run's checkpoint folder (so a resumed run keeps the rollouts of the steps before its
checkpoint), and joined into one table at the end (`flywheel.schema.ROLLOUT_COLUMNS`), which the train step
gates (`rollouts_suite`) and the loop records like curated data. Loop health per step (reward mean and std,
share of groups with zero reward variance, completion length, KL when beta > 0) comes from TRL's logs.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from flywheel.config import Config, TrainConfig, config_from_json
from flywheel.io import read_table, write_table
from flywheel.schema import GRPO_PROMPT_COLUMNS, PROBLEM_COLUMNS, ROLLOUT_COLUMNS

PARTS = "rollouts"  # subfolder of the checkpoint folder with one Parquet part per step


def dataset_rows(rows: pd.DataFrame, tok, cfg: Config) -> pd.DataFrame:
    """GRPO's dataset: `prompt` = the text the model is given (the chat template applied as everywhere
    else), `task_prompt` = the task's prompt as verifiers see it, and the problem columns."""
    from flywheel.chat import render_prompts

    out = rows[list(PROBLEM_COLUMNS)].reset_index(drop=True).copy()
    out["task_prompt"] = out["prompt"]
    out["prompt"] = render_prompts(tok, out["task_prompt"].tolist(), cfg.model)
    out["prompt_id"] = out["prompt_id"].astype(str)
    out["difficulty"] = out["difficulty"].astype(int)
    return out


def grpo_arguments(args: dict[str, Any], t: TrainConfig, cfg: Config, weights: list[float]) -> dict[str, Any]:
    """The runner's common training arguments that GRPOConfig takes, plus the recipe's own."""
    from trl import GRPOConfig

    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    g, gen = t.grpo, cfg.generate
    out = {k: v for k, v in args.items() if k in known}  # drops SFT/DPO-only ones (max_length, dataset_num_proc)
    out.update(
        num_generations=gen.samples_per_prompt, temperature=gen.temperature, top_p=gen.top_p, top_k=0,
        max_completion_length=gen.max_new_tokens, loss_type=g.loss_type, beta=g.beta, epsilon=g.epsilon,
        epsilon_high=g.epsilon_high or None, scale_rewards=g.scale_rewards, num_iterations=g.num_iterations,
        mask_truncated_completions=g.mask_truncated_completions, reward_weights=weights,
        use_vllm=g.use_vllm, vllm_mode=g.vllm_mode, vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization,
        # one log per step: loop health per step costs nothing (TRL computes it anyway)
        logging_steps=1, log_completions=False, remove_unused_columns=False,
    )
    return out


def make_trainer(spec: dict[str, Any], rows: pd.DataFrame, args: dict[str, Any], t: TrainConfig):
    """A `GRPOTrainer` for the starting model on the prompts `rows`, recording every rollout."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from flywheel.model import load_model
    from flywheel.rewards import reward_functions
    from flywheel.train.lora import peft_config

    cfg = config_from_json(spec["config"])
    fns, weights, names = reward_functions(cfg)
    # The arguments first: under ZeRO-3 they make `from_pretrained` load each weight already sharded.
    config = GRPOConfig(**grpo_arguments(args, t, cfg, weights))
    model, tok = load_model(spec["model_dir"])
    data = Dataset.from_pandas(dataset_rows(rows, tok, cfg), preserve_index=False)
    parts = Path(spec["checkpoint_dir"]) / PARTS

    class RecordingGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that keeps each generation batch's rollouts (TRL logs them, then forgets them)."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.rollouts: dict[int, pd.DataFrame] = {}  # step -> that step's rollouts (rank 0)

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if self.model.training:
                _record(self, inputs, out, names, cfg.generate.samples_per_prompt, parts)
            return out

    return RecordingGRPOTrainer(model=model, reward_funcs=fns, args=config, train_dataset=data,
                                processing_class=tok, peft_config=peft_config(t.lora))


def _record(trainer, inputs: list[dict], out: dict, names: list[str], k: int, parts: Path) -> None:
    """Write this generation batch's rollouts (all ranks') as one Parquet part, on rank 0."""
    from flywheel.rewards import _gather

    lengths = out["completion_mask"].sum(1).tolist()
    columns = {"prompt_id": [x["prompt_id"] for x in inputs], "prompt": [x["task_prompt"] for x in inputs],
               "difficulty": [x["difficulty"] for x in inputs], "completion_tokens": lengths}
    gathered = {key: _gather(v)[0] for key, v in columns.items()}  # collective: every rank takes part
    if not trainer.accelerator.is_main_process:
        return
    n = len(gathered["prompt_id"])
    logs = trainer._logs  # TRL's own record of the last generation batch (gathered over ranks), newest last
    step = trainer.state.global_step + 1  # the optimizer step that trains on these rollouts
    df = pd.DataFrame({
        "step": step, **{key: gathered[key] for key in ("prompt_id", "prompt", "difficulty")},
        "group": [i // k for i in range(n)], "sample_id": [i % k for i in range(n)],
        "completion": list(logs["completion"])[-n:], "completion_tokens": gathered["completion_tokens"],
        "advantage": list(logs["advantages"])[-n:],
    })
    rewards = [list(logs["rewards"][fn.__name__])[-n:] for fn in trainer.reward_funcs]
    weights = trainer.reward_weights.tolist()
    df["reward"] = [sum(w * r[i] for w, r in zip(weights, rewards)) for i in range(n)]
    # a pass: at least half the most a rollout can get (every verifier's score is in [0, 1])
    df["rewarded"] = df["reward"] >= 0.5 * sum(weights)
    for name, r in zip(names, rewards):
        df[reward_column(name)] = r
    trainer.rollouts[step] = df  # kept in memory too: the parts on disk are for a resumed run
    write_table(df, parts / f"step-{step:06d}.parquet")


def reward_column(name: str) -> str:
    """The rollouts column of one reward: `reward_task`, `reward_majority_vote`, ..."""
    return "reward_" + "".join(c if c.isalnum() else "_" for c in name)


def finish(trainer, spec: dict[str, Any]) -> dict:
    """On rank 0: join the rollout parts of steps 1..last into `spec['rollouts_path']`; the loop-health
    metrics of the run (per step and summarised)."""
    if not trainer.args.should_save:
        return {}
    last = trainer.state.global_step
    parts = dict(trainer.rollouts)
    for f in (Path(spec["checkpoint_dir"]) / PARTS).glob("step-*.parquet"):  # steps before a resume
        step = int(f.stem.rpartition("-")[2])
        if step not in parts:
            parts[step] = read_table(f, ROLLOUT_COLUMNS, what="rollouts part")
    parts = [parts[s] for s in sorted(parts) if s <= last]
    rollouts = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(ROLLOUT_COLUMNS))
    write_table(rollouts, spec["rollouts_path"])
    return {"health": health(trainer.state.log_history), "rollouts": len(rollouts)}


# TRL's log keys -> ours (per step)
_HEALTH = {"reward": "reward", "reward_std": "reward_std", "frac_reward_zero_std": "zero_std_groups",
           "completions/mean_length": "completion_length", "completions/clipped_ratio": "clipped",
           "kl": "kl", "entropy": "entropy"}


def health(log_history: list[dict]) -> dict:
    """Loop health of a GRPO run from TRL's per-step logs: per step, and first/last/mean over the run."""
    steps = [{"step": h["step"], **{ours: h[theirs] for theirs, ours in _HEALTH.items()
                                    if h.get(theirs) is not None}}
             for h in log_history if "reward" in h]
    summary: dict[str, Any] = {"per_step": steps}
    for key in _HEALTH.values():
        values = [s[key] for s in steps if key in s]
        if values:
            # a few steps at each end: one step's reward over a handful of groups is noisy
            w = max(1, len(values) // 5)
            summary[key] = {"first": statistics.fmean(values[:w]), "last": statistics.fmean(values[-w:]),
                            "mean": statistics.fmean(values)}
    return summary


def prompts_table(path) -> pd.DataFrame:
    return read_table(path, GRPO_PROMPT_COLUMNS, what="GRPO prompts (curate under recipe grpo)")


def train_grpo(model_dir, data_path, out_dir, cfg: Config, rollouts_path=None, eval_path=None) -> dict:
    """The train step under recipe grpo: check the rewards on a tiny batch, train (the runner: in this
    process or under the deepspeed launcher), then gate the rollouts. `rollouts_path` defaults to
    `<out_dir>/rollouts.parquet` (inside the model folder, which `from_pretrained` ignores)."""
    from flywheel.gates import check_gate
    from flywheel.rewards import check_rewards, reward_functions
    from flywheel.train.runner import train

    rows = prompts_table(data_path)
    if rows.empty:
        raise ValueError(f"{data_path}: no prompts for GRPO; curate chose none (see its dropped rows and reasons)")
    fns, _, names = reward_functions(cfg)
    check_rewards(fns, names, rows, cfg)  # a reward that cannot score a batch stops here, before any model loads
    del fns  # the ranks load their own (a reward model's weights too)
    out_dir = Path(out_dir)
    rollouts_path = Path(rollouts_path) if rollouts_path else out_dir / "rollouts.parquet"
    # rank 0 writes them beside the model folder, which the runner moves into place whole
    tmp_rollouts = out_dir.parent / f".{out_dir.name}.rollouts.parquet"
    metrics = train(model_dir, data_path, out_dir, cfg.train, cfg.model,
                    extra={"config": cfg.to_json(), "rollouts_path": str(tmp_rollouts.resolve())})
    # the model folder is written atomically by the runner, so the rollouts go in after it
    rollouts = read_table(tmp_rollouts, ROLLOUT_COLUMNS, what="GRPO rollouts")
    write_table(rollouts, rollouts_path)
    tmp_rollouts.unlink()
    k = cfg.generate.samples_per_prompt
    metrics.update(prompts=len(rows), rewards=names, rollouts=len(rollouts), rollouts_path=str(rollouts_path),
                   epochs=round(metrics["steps"] * cfg.train.batch_size / k / len(rows), 2),
                   reward_by_verifier={n: float(rollouts[reward_column(n)].mean()) for n in names} if len(rollouts) else {})
    metrics["gate"] = check_gate("rollouts", rollouts_path, rollouts_suite, cfg, eval_path=eval_path,
                                 inputs={"model": model_dir, "prompts": data_path, "eval_set": eval_path})
    return metrics


def rollouts_suite(cfg: Config, eval_path=None) -> list:
    """The rules every rollouts table must meet (docs/data.md, 'rollouts')."""
    from flywheel.gates import expectations, rule

    E, g = expectations(), cfg.gates
    names = list(cfg.train.grpo.rewards) or [cfg.verify.verifier]
    rules = [
        rule("rollouts.schema", E.ExpectTableColumnsToMatchSet(
            column_set=[*ROLLOUT_COLUMNS, *map(reward_column, names)], exact_match=False),
             "all rollout columns, one reward column per reward", "docs/architecture.md, 'Artifacts'"),
        rule("rollouts.reward_not_constant", E.ExpectColumnStdevToBeBetween(column="reward", min_value=1e-9),
             "the reward varies (a constant reward gives every advantage 0: nothing is learned)", "std > 0"),
        rule("rollouts.pass_rate", E.ExpectColumnMeanToBeBetween(
            column="rewarded", min_value=g.min_pass_rate, max_value=g.max_pass_rate),
             "share of rollouts with a positive reward inside the window (near 0: broken model or reward; "
             "near 1: too easy or the reward is fooled)",
             f"{g.min_pass_rate}..{g.max_pass_rate} (gates.min_pass_rate, gates.max_pass_rate)"),
        rule("rollouts.empty_completions", E.ExpectColumnValueLengthsToBeBetween(
            column="completion", min_value=1, mostly=1 - g.max_empty_completion_share),
             "few empty completions", f"<= {g.max_empty_completion_share:.0%} of rollouts "
                                      "(gates.max_empty_completion_share)"),
    ]
    if eval_path is not None:
        rules.append(rule("rollouts.contamination_exact", E.ExpectColumnValuesToNotOccurInReferences(
            column="prompt", references_path=str(eval_path), mostly=1 - g.max_contaminated_share),
            "no training prompt is an evaluation prompt",
            f"<= {g.max_contaminated_share:.0%} of rows (gates.max_contaminated_share)"))
    return rules
