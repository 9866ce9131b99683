"""The run form: the knobs a researcher changes, as typed pipeline parameters, beside the whole config.

The KFP UI builds its "Create run" form from the root pipeline's parameters; each field here is one, with
its default taken from the compiled config and its help line from `FORM`. The first task, `configure`,
writes them into the config (`merge_form`), validates the result as one config (one clear error), and
cuts it into the steps' slices.
"""

from __future__ import annotations

import json

from flywheel.steps.table import lookup

# form field -> (config key, Python type, help line shown in the UI)
FORM: dict[str, tuple[str, type, str]] = {
    "model": ("model.base", str, "Starting model: 'embedded', 'smollm2-135m-instruct', a checkpoint path or a hub id."),
    "task_data": ("task.params.path", str, "Data file of a file task (jsonl, code); empty: the config's (or none)."),
    "samples_per_prompt": ("generate.samples_per_prompt", int, "K: candidate answers sampled per prompt."),
    "temperature": ("generate.temperature", float, "Sampling temperature of generate (0 = greedy)."),
    "max_new_tokens": ("generate.max_new_tokens", int, "Longest completion, in tokens."),
    "learning_rate": ("train.learning_rate", float, "Peak learning rate of the train step."),
    "train_steps": ("train.max_steps", int, "Optimizer steps per iteration."),
    "recipe": ("train.recipe", str, "Training recipe: sft, dpo, spin or grpo (docs/recipes.md)."),
    "seed": ("seed", int, "Master seed: prompts, sampling and evaluation sets derive from it."),
}


def reads_summary(cfg) -> bool:
    """Whether the prompts step needs the run's summary so far: adaptive sampling, the frontier curriculum and
    grow_threshold plan from the last iteration (fixed when the pipeline is compiled, like `iterations`)."""
    g = cfg.generate
    return g.adaptive or g.curriculum == "frontier" or g.grow_threshold > 0


def compiled_shape(cfg) -> dict:
    """What the compiled pipeline's graph is built from: a run that changes any of it would be silently run
    with the compiled graph, so `configure` refuses it (`check_shape`)."""
    return {"iterations": cfg.iterations, "propose.enabled": cfg.propose.enabled,
            "reads the summary (generate.adaptive, generate.curriculum: frontier or generate.grow_threshold > 0)":
                reads_summary(cfg),
            "pipeline": cfg.pipeline.model_dump(mode="json"), "cluster": cfg.cluster.model_dump(mode="json")}


def check_shape(cfg, compiled: dict) -> None:
    """One clear error where the run's config changes what the compiled graph was built from."""
    from flywheel.config import ConfigError

    now = compiled_shape(cfg)
    changed = [k for k in compiled if now.get(k) != compiled[k]]
    if changed:
        says = "; ".join(f"{k}: compiled {json.dumps(compiled[k])[:80]}, this run {json.dumps(now.get(k))[:80]}"
                         for k in changed)
        raise ConfigError(f"the run form's config changes what the pipeline was compiled from ({says}): "
                          "recompile it with the new config (flywheel compile / flywheel upload) instead")


def form_defaults(cfg) -> dict:
    """The form's default values: the compiled config's."""
    data = cfg.model_dump(mode="json")
    values = {name: lookup(data, key) for name, (key, _, _) in FORM.items()}
    return {name: typ(values[name] if values[name] is not None else typ()) for name, (_, typ, _) in FORM.items()}


def merge_form(config: str, **fields):
    """The config (JSON) with the form's fields written in (they win over the same keys in `config`; an empty
    task_data keeps the config's); validated as one config."""
    from flywheel.config import ConfigError, parse_config

    try:
        data = json.loads(config)
    except json.JSONDecodeError as err:
        raise ConfigError(f"pipeline parameter 'config' is not JSON: {err}") from None
    for name, value in fields.items():
        key = FORM[name][0]
        if name == "task_data" and not value:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return parse_config(data, "<run form: the pipeline's parameters>")
