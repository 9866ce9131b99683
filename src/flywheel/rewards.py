"""The loop's verifiers as TRL reward functions (recipe grpo, `train.grpo.rewards`).

A TRL reward function takes the batch (`prompts`, `completions`, and every other dataset column as a
keyword argument, one value per completion) and returns one float per completion (trl/rewards/ do the
same). Here each one wraps a verifier exactly as verify loads it (`flywheel.verifiers.load_verifier`):
the batch becomes a samples table (prompt_id, the task's prompt, reference, difficulty, completion,
sample_id), the verifier returns a Verdict per row, and the reward is the verdict's score; for
`majority-vote` it is 1 for a sample whose answer is the group's majority answer and 0 for the others
(test-time RL, Zuo et al. 2025, "TTRL": the majority of the group is the pseudo-label). Batch verifiers
keep their batching: unit tests run in the sandbox in parallel (`workers`), reward models score in
batches.

Groups: TRL samples the K completions of a prompt next to each other, but under several processes a
group can be split over ranks (TRL gathers the rewards before it normalises them). A verifier that looks
at a whole group (majority vote) must see all of it, so every reward function first gathers the batch of
all ranks, verifies it, and keeps its own rank's slice. Positions in the gathered batch give the group
(position // K) and the sample id (position % K).

    fns, weights, names = reward_functions(cfg)   # what GRPOTrainer gets as reward_funcs / reward_weights
    check_rewards(fns, problems, cfg)             # a dry call on a tiny batch: one clear error, before training
"""

from __future__ import annotations

import math
from typing import Callable

import pandas as pd

from flywheel.config import Config

# The score a verifier's verdict turns into: the verdict's score, except where the verifier's score means
# something else than the reward should (majority vote: the score is the agreement share; TTRL's reward
# is 1 for the majority answer, 0 otherwise, which is the verdict's `correct`).
REWARD_FROM_CORRECT = {"majority-vote"}

class RewardError(ValueError):
    """A configured reward cannot score a batch: the message names the reward, the problem and the fix."""


def reward_names(cfg: Config) -> list[str]:
    """The verifiers that make the reward: train.grpo.rewards, or the loop's verify.verifier."""
    return list(cfg.train.grpo.rewards) or [cfg.verify.verifier]


def _params(name: str, cfg: Config) -> dict:
    if name == cfg.verify.verifier:
        return dict(cfg.verify.params)
    return dict(cfg.train.grpo.reward_params.get(name, {}))


def _gather(values: list) -> tuple[list, slice]:
    """All ranks' `values` in rank order, and the slice that is this rank's (one process: as they are)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values), slice(0, len(values))
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, list(values))
    n, rank = len(values), dist.get_rank()
    return [v for part in every for v in part], slice(rank * n, (rank + 1) * n)


def verifier_reward(name: str, verifier, group_size: int, from_correct: bool) -> Callable[..., list[float]]:
    """A TRL reward function around the batch verifier `verifier` (samples table in, Verdicts out)."""

    def reward(prompts, completions, prompt_id=None, task_prompt=None, reference=None, difficulty=None,
               **_) -> list[float]:
        n = len(completions)
        columns = {"prompt_id": prompt_id, "prompt": task_prompt if task_prompt is not None else prompts,
                   "reference": reference if reference is not None else [""] * n,
                   "difficulty": difficulty if difficulty is not None else [0] * n, "completion": completions}
        gathered = {}
        for key, values in columns.items():
            if values is None:
                raise RewardError(f"reward {name!r}: the batch has no {key!r} column; GRPO's dataset must hold "
                                  "the problem columns (prompt_id, prompt, reference, difficulty)")
            gathered[key], mine = _gather(list(values))
        samples = pd.DataFrame(gathered)
        position = pd.RangeIndex(len(samples))
        # One group = one prompt's K samples, as TRL groups them (a prompt drawn twice is two groups).
        samples["prompt_id"] = samples["prompt_id"].astype(str) + "#" + (position // group_size).astype(str)
        samples["sample_id"] = position % group_size
        verdicts = verifier(samples)
        scores = [float(v.correct) if from_correct else float(v.score) for v in verdicts]
        return scores[mine]

    reward.__name__ = name.replace("-", "_").replace(":", "_").replace(".", "_")
    return reward


def reward_functions(cfg: Config, task=None) -> tuple[list[Callable], list[float], list[str]]:
    """(reward functions, weights, names) for GRPOTrainer, from train.grpo; the verifiers are loaded here
    (a reward model's weights too)."""
    from flywheel.steps.data import task_of
    from flywheel.verifiers import load_verifier

    names = reward_names(cfg)
    weights = list(cfg.train.grpo.reward_weights) or [1.0] * len(names)
    fns = []
    for name in names:
        try:
            verifier = load_verifier(name, _params(name, cfg), task=(task or task_of(cfg)) if name == "task" else None)
        except (ValueError, TypeError, ImportError, OSError) as err:
            raise RewardError(f"train.grpo reward {name!r} cannot be loaded: {err}") from None
        fns.append(verifier_reward(name, verifier, cfg.generate.samples_per_prompt, name in REWARD_FROM_CORRECT))
    return fns, weights, names


def check_rewards(fns: list[Callable], names: list[str], problems: pd.DataFrame, cfg: Config) -> None:
    """Call every reward on a tiny batch (2 prompts x K completions: empty ones and the reference text) as
    GRPOTrainer will, before any model is trained; a reward that raises or returns something other than
    one finite float per completion stops here with one message."""
    k = cfg.generate.samples_per_prompt
    few = problems.head(2)
    batch = {c: [v for v in few[c].tolist() for _ in range(k)] for c in ("prompt_id", "reference", "difficulty")}
    batch["task_prompt"] = [v for v in few["prompt"].tolist() for _ in range(k)]
    completions = [("" if s % 2 else str(r)) for r in few["reference"] for s in range(k)]
    for name, fn in zip(names, fns):
        try:
            out = list(fn(prompts=batch["task_prompt"], completions=completions, **batch))
        except Exception as err:  # noqa: BLE001 -- any failure of a user's verifier is reported the same way
            raise RewardError(
                f"train.grpo reward {name!r} cannot score a batch of this iteration's prompts (a dry call on "
                f"{len(completions)} completions of prompts {few['prompt_id'].tolist()} failed before training): "
                f"{type(err).__name__}: {err}. Check that the verifier fits the task (train.grpo.rewards, "
                "verify.verifier, task.name)") from None
        bad = [x for x in out if not isinstance(x, (int, float)) or not math.isfinite(x)]
        if len(out) != len(completions) or bad:
            raise RewardError(f"train.grpo reward {name!r} returned {len(out)} values for {len(completions)} "
                              f"completions{f', e.g. {bad[:3]!r}' if bad else ''}; a reward is one finite number "
                              "per completion")
