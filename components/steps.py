"""KFP components: one per step, each a thin frame around a `flywheel.steps` function.

KFP embeds only a component's function source in the pipeline, so every body imports what it uses. The
image is not fixed here: `make_components(image)` wraps the functions with the config's image, so one
config names it once. `install_kfp_package=False` because the image (and, locally, the environment)
already has kfp; otherwise every task pip-installs kfp, locally too.

(No `from __future__ import annotations` here: KFP reads the artifact annotations as objects.)

Every component takes its step's slice of the config as a JSON string (`config`: the keys of its row in
flywheel/steps/table.py, made by the `configure` task), so its KFP cache key changes only when a key it
reads changes; it reads them through `step_config`, which refuses any other key.
Each writes its metrics as JSON to `metrics.path` (the local cache only counts a task as done when the
file exists) and logs the scalar ones for the KFP UI. Gated steps (generate, verify, curate, evaluate) also
publish their quality-gate report as a `Markdown` output (`gate`), which the KFP UI shows.
"""

from types import SimpleNamespace
from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def configure(config: str, model: str, task_data: str, samples_per_prompt: int, temperature: float,
              max_new_tokens: int, learning_rate: float, train_steps: int, recipe: str, seed: int, fixed: str = "{}"
              ) -> NamedTuple("Slices", [("prepare", str), ("init_model", str), ("prompts", str), ("propose", str),
                                         ("generate", str), ("verify", str), ("curate", str), ("train", str),
                                         ("evaluate", str), ("promote", str), ("record", str)]):
    """The run form's fields merged into the config (validated as one config), cut into one slice per step."""
    from collections import namedtuple

    from flywheel.pipelines.form import check_shape, merge_form
    from flywheel.steps.table import config_slice, row

    cfg = merge_form(config, model=model, task_data=task_data, samples_per_prompt=samples_per_prompt,
                     temperature=temperature, max_new_tokens=max_new_tokens, learning_rate=learning_rate,
                     train_steps=train_steps, recipe=recipe, seed=seed)
    import json

    fixed = json.loads(fixed)
    check_shape(cfg, fixed.get("shape", {}))  # iterations, propose, the summary edge, pipeline, cluster
    for step, compiled in fixed.get("slices", {}).items():  # fixed at compile time (sharded generate/verify)
        if config_slice(cfg, step) != compiled:
            raise ValueError(f"cluster.shards > 1: the {step} step's settings are fixed when the pipeline is compiled "
                             f"(its pods run in a ParallelFor); this run changes them: recompile the pipeline with "
                             f"the new values (flywheel compile / flywheel run) instead of changing them in the run form")
    names = ("prepare", "init_model", "prompts", "propose", "generate", "verify", "curate", "train", "evaluate",
             "promote", "record")
    return namedtuple("Slices", names)(*(config_slice(cfg, row(n.replace("_", "-")).name) for n in names))


def prepare(config: str, seed_set: Output[Dataset], eval_set: Output[Dataset], metrics: Output[Metrics]):
    """The task's labelled seed set and its held-out evaluation sets."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.steps.table import step_config
    from flywheel.steps.data import make_datasets

    log_metrics(metrics, make_datasets(step_config(config, "prepare"), seed_set.path, eval_set.path,
                                       metrics_path=metrics.path))


def init_model(config: str, seed_set: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """The starting model: the embedded tiny Llama warm-started on the seed set, or `model.base` as-is."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.steps.table import step_config
    from flywheel.steps.init_model import init_model as init_model_step

    log_metrics(metrics, init_model_step(step_config(config, "init-model"), seed_set.path, model.path,
                                         metrics_path=metrics.path))


def prompts(config: str, iteration: int, prompts: Output[Dataset], metrics: Output[Metrics],
                   previous: Input[Artifact] = None, proposed: Input[Dataset] = None):
    """The prompts of one iteration (with the problems the last propose step kept), and its sampling plan
    (from the previous summary in adaptive mode)."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.steps.table import step_config
    from flywheel.steps.data import sample_prompts as sample_prompts_step

    log_metrics(metrics, sample_prompts_step(step_config(config, "prompts"), iteration, prompts.path,
                                             previous_summary=previous.path if previous else None,
                                             proposed_path=proposed.path if proposed else None,
                                             metrics_path=metrics.path))


def propose(config: str, iteration: int, model: Input[Model], prompts: Input[Dataset], eval_set: Input[Dataset],
            proposals: Output[Dataset], dropped: Output[Dataset], metrics: Output[Metrics], gate: Output[Markdown],
            plan: Input[Metrics] = None):
    """New problems written by the model, kept when it solves them sometimes but not always (for the next
    iteration's prompts); every dropped one kept with its reason."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.steps.table import step_config
    from flywheel.gates import publish_report
    from flywheel.steps.propose import propose_problems

    log_metrics(metrics, propose_problems(model.path, prompts.path, eval_set.path, proposals.path, dropped.path,
                                          step_config(config, "propose"), iteration,
                                          plan_path=plan.path if plan else None, metrics_path=metrics.path))
    publish_report(proposals.path, gate.path)


def generate(config: str, iteration: int, model: Input[Model], prompts: Input[Dataset],
             samples: Output[Dataset], metrics: Output[Metrics], gate: Output[Markdown], plan: Input[Metrics] = None,
             shard: int = 0, shards: int = 1):
    """K candidate answers per prompt from the current model (for every `shards`-th prompt from `shard` on)."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.steps.table import step_config
    from flywheel.gates import publish_report
    from flywheel.steps.generate import generate_samples

    log_metrics(metrics, generate_samples(model.path, prompts.path, samples.path, step_config(config, "generate"),
                                          iteration=iteration, plan_path=plan.path if plan else None,
                                          shard=shard, shards=shards, metrics_path=metrics.path))
    publish_report(samples.path, gate.path)


def verify(config: str, samples: Input[Dataset], verdicts: Output[Dataset], metrics: Output[Metrics],
           gate: Output[Markdown]):
    """A verdict (correct, score, reason) per sample."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.steps.table import step_config
    from flywheel.gates import publish_report
    from flywheel.steps.verify import verify_samples

    log_metrics(metrics, verify_samples(samples.path, verdicts.path, step_config(config, "verify"),
                                        metrics_path=metrics.path))
    publish_report(verdicts.path, gate.path)


def merge_shards(prompts: Input[Dataset], verdicts: Input[List[Dataset]], generation: Input[List[Metrics]],
                 verification: Input[List[Metrics]], merged: Output[Dataset], generation_metrics: Output[Metrics],
                 verification_metrics: Output[Metrics], metrics: Output[Metrics]):
    """The verdicts of every shard in prompt order, as one pod would have made them; merged metrics."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.io import read_json
    from flywheel.steps.shards import merge_shards as merge_shards_step

    merge_shards_step(prompts.path, [v.path for v in verdicts], [g.path for g in generation],
                      [v.path for v in verification], merged.path, generation_metrics.path,
                      verification_metrics.path, metrics_path=metrics.path)
    log_metrics(generation_metrics, read_json(generation_metrics.path))
    log_metrics(verification_metrics, read_json(verification_metrics.path))


def curate(config: str, iteration: int, verdicts: Input[Dataset], seed_set: Input[Dataset], eval_set: Input[Dataset],
           curated: Output[Dataset], dropped: Output[Dataset], metrics: Output[Metrics], gate: Output[Markdown],
           previous: Input[Dataset] = None):
    """The training rows of the iteration; every dropped row kept with its reason; checked against the
    held-out set (`eval_set`) for contamination."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.steps.table import step_config
    from flywheel.gates import publish_report
    from flywheel.steps.curate import curate_samples

    log_metrics(metrics, curate_samples(verdicts.path, seed_set.path, curated.path, dropped.path,
                                        step_config(config, "curate"), iteration,
                                        previous_path=previous.path if previous else None,
                                        eval_path=eval_set.path, metrics_path=metrics.path))
    publish_report(curated.path, gate.path)


def train(config: str, current_model: Input[Model], base_model: Input[Model], curated: Input[Dataset],
          model: Output[Model], metrics: Output[Metrics]):
    """Fine-tune on the curated rows, from the current model or from the base (train.init_from)."""
    from flywheel.cluster.trainjob import train_model_or_trainjob  # multi-node: a Kubeflow Trainer TrainJob
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.steps.table import step_config

    cfg = step_config(config, "train")
    start = current_model if cfg.train.init_from == "current" else base_model
    log_metrics(metrics, train_model_or_trainjob(start.path, curated.path, model.path, cfg, metrics_path=metrics.path))


def evaluate(config: str, iteration: int, model: Input[Model], eval_set: Input[Dataset], seed_set: Input[Dataset],
             results: Output[Dataset], metrics: Output[Metrics], gate: Output[Markdown],
             previous: Input[Metrics] = None) -> float:
    """Greedy accuracy per difficulty on the held-out sets, compared with the previous model."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.steps.table import step_config
    from flywheel.gates import publish_report
    from flywheel.steps.evaluate import evaluate_model

    m = evaluate_model(model.path, eval_set.path, results.path, step_config(config, "evaluate"), iteration,
                       previous_metrics_path=previous.path if previous else None, seed_path=seed_set.path,
                       metrics_path=metrics.path)
    log_metrics(metrics, m)
    publish_report(results.path, gate.path)
    return m["accuracy"]


def promote(config: str, iteration: int, champion: Input[Model], champion_results: Input[Dataset],
            champion_metrics: Input[Metrics], challenger: Input[Model], challenger_results: Input[Dataset],
            challenger_metrics: Input[Metrics], model: Output[Model], results: Output[Dataset],
            metrics: Output[Metrics], decision: Output[Metrics], previous_decision: Input[Metrics] = None) -> bool:
    """Champion or challenger, by a paired test on the held-out items; returns whether the loop goes on."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.steps.table import step_config
    from flywheel.steps.promote import promote_model

    m = promote_model(champion.path, champion_results.path, champion_metrics.path, challenger.path,
                      challenger_results.path, challenger_metrics.path, model.path, results.path, metrics.path,
                      step_config(config, "promote"), iteration,
                      previous_decision=previous_decision.path if previous_decision else None,
                      metrics_path=decision.path)
    log_metrics(decision, m)
    return m["continue_loop"]


def record(config: str, iteration: int, evaluation: Input[Metrics], summary: Output[Artifact],
           report: Output[HTML], previous: Input[Artifact] = None, generation: Input[Metrics] = None,
           verification: Input[Metrics] = None, curation: Input[Metrics] = None, training: Input[Metrics] = None,
           promotion: Input[Metrics] = None, verdicts: Input[Dataset] = None, preparation: Input[Metrics] = None,
           dropped: Input[Dataset] = None, curated: Input[Dataset] = None, model: Input[Model] = None,
           results: Input[Dataset] = None, proposal: Input[Metrics] = None):
    """Append the iteration's metrics and reproducibility manifest to the run summary (JSON), render the
    report (HTML), and log the iteration to W&B (metrics, gates, sample rows, artifacts)."""
    from flywheel.steps.table import step_config
    from flywheel.report import record_iteration

    def path(a):
        return a.path if a else None

    record_iteration(step_config(config, "record"), iteration, summary.path, report.path,
                     previous_summary=path(previous), evaluate=evaluation.path, generate=path(generation),
                     verify=path(verification), curate=path(curation), train=path(training),
                     promote=path(promotion), verdicts=path(verdicts), prepare=path(preparation),
                     dropped=path(dropped), curated=path(curated), model=path(model), results=path(results),
                     store=True,  # curated rows and model into the DVC cache and remote (data.store)
                     propose=path(proposal))


STEPS = (configure, prepare, init_model, prompts, propose, generate, verify, merge_shards, curate, train, evaluate, promote,
         record)  # flywheel/steps/table.py's rows (tests/test_table.py checks), and the task that makes their configs


def make_components(image: str) -> SimpleNamespace:
    """The components of every step, on `image`."""
    return SimpleNamespace(**{
        fn.__name__: dsl.component(fn, base_image=image, install_kfp_package=False) for fn in STEPS
    })
