"""KFP components: one per step, each a thin frame around a `flywheel.steps` function.

KFP embeds only a component's function source in the pipeline, so every body imports what it uses. The
image is not fixed here: `make_components(image)` wraps the functions with the config's image, so one
config names it once. `install_kfp_package=False` because the image (and, locally, the environment)
already has kfp; otherwise every task pip-installs kfp, locally too.

(No `from __future__ import annotations` here: KFP reads the artifact annotations as objects.)

Every component takes the whole config as a JSON string (`config`) and reads its own section.
Each writes its metrics as JSON to `metrics.path` (the local cache only counts a task as done when the
file exists) and logs the scalar ones for the KFP UI. Gated steps (generate, verify, curate, evaluate) also
publish their quality-gate report as a `Markdown` output (`gate`), which the KFP UI shows.
"""

from types import SimpleNamespace

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def prepare_data(config: str, seed_set: Output[Dataset], eval_set: Output[Dataset], metrics: Output[Metrics]):
    """The task's labelled seed set and its held-out evaluation sets."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.config import config_from_json
    from flywheel.steps.data import make_datasets

    log_metrics(metrics, make_datasets(config_from_json(config), seed_set.path, eval_set.path,
                                       metrics_path=metrics.path))


def init_model(config: str, seed_set: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """The starting model: the embedded tiny Llama warm-started on the seed set, or `model.base` as-is."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.config import config_from_json
    from flywheel.steps.init_model import init_model as init_model_step

    log_metrics(metrics, init_model_step(config_from_json(config), seed_set.path, model.path,
                                         metrics_path=metrics.path))


def sample_prompts(config: str, iteration: int, prompts: Output[Dataset], metrics: Output[Metrics]):
    """The prompts of one iteration."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.config import config_from_json
    from flywheel.steps.data import sample_prompts as sample_prompts_step

    log_metrics(metrics, sample_prompts_step(config_from_json(config), iteration, prompts.path,
                                             metrics_path=metrics.path))


def generate(config: str, iteration: int, model: Input[Model], prompts: Input[Dataset],
             samples: Output[Dataset], metrics: Output[Metrics], gate: Output[Markdown]):
    """K candidate answers per prompt from the current model."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.config import config_from_json
    from flywheel.gates import publish_report
    from flywheel.steps.generate import generate_samples

    log_metrics(metrics, generate_samples(model.path, prompts.path, samples.path, config_from_json(config),
                                          iteration=iteration, metrics_path=metrics.path))
    publish_report(samples.path, gate.path)


def verify(config: str, samples: Input[Dataset], verdicts: Output[Dataset], metrics: Output[Metrics],
           gate: Output[Markdown]):
    """A verdict (correct, score, reason) per sample."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.config import config_from_json
    from flywheel.gates import publish_report
    from flywheel.steps.verify import verify_samples

    log_metrics(metrics, verify_samples(samples.path, verdicts.path, config_from_json(config),
                                        metrics_path=metrics.path))
    publish_report(verdicts.path, gate.path)


def curate(config: str, iteration: int, verdicts: Input[Dataset], seed_set: Input[Dataset], eval_set: Input[Dataset],
           curated: Output[Dataset], dropped: Output[Dataset], metrics: Output[Metrics], gate: Output[Markdown],
           previous: Input[Dataset] = None):
    """The training rows of the iteration; every dropped row kept with its reason; checked against the
    held-out set (`eval_set`) for contamination."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.config import config_from_json
    from flywheel.gates import publish_report
    from flywheel.steps.curate import curate_samples

    log_metrics(metrics, curate_samples(verdicts.path, seed_set.path, curated.path, dropped.path,
                                        config_from_json(config), iteration,
                                        previous_path=previous.path if previous else None,
                                        eval_path=eval_set.path, metrics_path=metrics.path))
    publish_report(curated.path, gate.path)


def train(config: str, current_model: Input[Model], base_model: Input[Model], curated: Input[Dataset],
          model: Output[Model], metrics: Output[Metrics]):
    """Fine-tune on the curated rows, from the current model or from the base (train.init_from)."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.config import config_from_json
    from flywheel.steps.train import train_model

    cfg = config_from_json(config)
    start = current_model if cfg.train.init_from == "current" else base_model
    log_metrics(metrics, train_model(start.path, curated.path, model.path, cfg, metrics_path=metrics.path))


def evaluate(config: str, iteration: int, model: Input[Model], eval_set: Input[Dataset], seed_set: Input[Dataset],
             results: Output[Dataset], metrics: Output[Metrics], gate: Output[Markdown],
             previous: Input[Metrics] = None) -> float:
    """Greedy accuracy per difficulty on the held-out sets, compared with the previous model."""
    from flywheel.components.kfp_metrics import log_metrics
    from flywheel.config import config_from_json
    from flywheel.gates import publish_report
    from flywheel.steps.evaluate import evaluate_model

    m = evaluate_model(model.path, eval_set.path, results.path, config_from_json(config), iteration,
                       previous_metrics_path=previous.path if previous else None, seed_path=seed_set.path,
                       metrics_path=metrics.path)
    log_metrics(metrics, m)
    publish_report(results.path, gate.path)
    return m["accuracy"]


def record(config: str, iteration: int, evaluation: Input[Metrics], summary: Output[Artifact],
           report: Output[HTML], previous: Input[Artifact] = None, generation: Input[Metrics] = None,
           verification: Input[Metrics] = None, curation: Input[Metrics] = None, training: Input[Metrics] = None,
           verdicts: Input[Dataset] = None, preparation: Input[Metrics] = None, dropped: Input[Dataset] = None,
           curated: Input[Dataset] = None, model: Input[Model] = None, results: Input[Dataset] = None):
    """Append the iteration's metrics and reproducibility manifest to the run summary (JSON), render the
    report (HTML), and log the iteration to W&B (metrics, gates, sample rows, artifacts)."""
    from flywheel.config import config_from_json
    from flywheel.report import record_iteration

    def path(a):
        return a.path if a else None

    record_iteration(config_from_json(config), iteration, summary.path, report.path,
                     previous_summary=path(previous), evaluate=evaluation.path, generate=path(generation),
                     verify=path(verification), curate=path(curation), train=path(training),
                     verdicts=path(verdicts), prepare=path(preparation), dropped=path(dropped),
                     curated=path(curated), model=path(model), results=path(results))


STEPS = (prepare_data, init_model, sample_prompts, generate, verify, curate, train, evaluate, record)


def make_components(image: str) -> SimpleNamespace:
    """The components of every step, on `image`."""
    return SimpleNamespace(**{
        fn.__name__: dsl.component(fn, base_image=image, install_kfp_package=False) for fn in STEPS
    })
