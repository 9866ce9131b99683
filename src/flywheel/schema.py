"""Column names of every Parquet artifact, in one place (docs/architecture.md, 'Artifacts', explains each).

A light module on purpose: steps that only move rows (verify, curate, record) import it without torch.
"""

# A problem: stable id, model input, the answer the verifier compares against (may be empty for
# label-free tasks), and difficulty (higher is harder; arithmetic: significant digits).
PROBLEM_COLUMNS = ("prompt_id", "prompt", "reference", "difficulty")
SEED_COLUMNS = (*PROBLEM_COLUMNS, "completion")
SAMPLE_COLUMNS = (*PROBLEM_COLUMNS, "sample_id", "completion", "prompt_tokens", "completion_tokens",
                  "finished", "model")
VERDICT_COLUMNS = (*SAMPLE_COLUMNS, "correct", "score", "reason")
CURATED_COLUMNS = ("prompt_id", "prompt", "completion", "difficulty", "source", "iteration", "score")
DROPPED_COLUMNS = (*VERDICT_COLUMNS, "drop_reason", "duplicate_of")
TRAIN_COLUMNS = ("prompt", "completion")
# Recipes dpo/spin: curate writes preference pairs instead of rows (flywheel.steps.pairs).
PAIR_COLUMNS = ("prompt_id", "prompt", "chosen", "rejected", "difficulty", "source", "iteration", "chosen_score",
                "rejected_score")
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
RESULT_COLUMNS = (*PROBLEM_COLUMNS, "completion", "correct", "reason")
# propose (flywheel.steps.propose): the kept proposals are problem rows (read by the next iteration's prompts
# step) with the current model's estimated pass rate; every dropped one keeps the model's text and why.
PROPOSAL_COLUMNS = (*PROBLEM_COLUMNS, "proposal", "pass_rate", "iteration")
DROPPED_PROPOSAL_COLUMNS = (*PROPOSAL_COLUMNS, "drop_reason", "detail", "duplicate_of")
# Recipe grpo (flywheel.train.grpo): curate hands GRPO the iteration's prompts (with the pass rate of their
# generate samples under the loop's verifier); the train step writes every rollout it trained on: the step
# that trained on it, its prompt's group of K samples, the weighted reward (`rewarded`: at least half the
# total weight), TRL's advantage, and one
# `reward_<verifier>` column per reward (flywheel.train.grpo.reward_column).
GRPO_PROMPT_COLUMNS = (*PROBLEM_COLUMNS, "pass_rate", "iteration")
ROLLOUT_COLUMNS = ("step", "prompt_id", "prompt", "difficulty", "group", "sample_id", "completion",
                   "completion_tokens", "reward", "rewarded", "advantage")
