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
