"""The step table: every step of the loop, once.

One row per step: its name (the one name used by the CLI subcommand, the KFP component, the DVC stage, the
`cluster.steps` key, the console, the report and the manifest), the function that does the work, the config
keys it reads, and its inputs and outputs. Everything that lists steps derives the list from `STEPS`.

Each step receives only the config keys of its row (`config_slice`), so a changed field reruns exactly the
steps that read it: KFP's cache key is the component's inputs, and DVC's `params:` are these keys. The step
reads them through `StepConfig`, which raises when the step touches a key its row does not list, so the
table cannot drift from the code (tests/test_table.py runs every step through the loop this way).

Adding a step: a function in `flywheel.steps` (paths and config in, paths and metrics out), a row here, a
thin component in components/steps.py, and its tasks in the iteration DAG, described once in
`flywheel.steps.dag.loop_dag`: the KFP pipeline and dvc.yaml are both built from it (dvc.yaml also needs
where the step writes: `versions._FILES` and `_WRITES`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ALL = "*"  # the whole config (record: summary.json records the config the run used)


@dataclass(frozen=True)
class Step:
    name: str
    function: str  # "module:function"
    reads: tuple[str, ...]  # config keys, dotted for a part of a section; ALL for every key
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    gate: str | None = None  # the quality gate (GX suite) of its main output; None: it has none (report says so)

    @property
    def ident(self) -> str:
        """The name as a Python identifier (component function, KFP component 'comp-...' without the dashes)."""
        return self.name.replace("-", "_")


# The generate keys that the prompts step's sampling plan reads (adapt.choose_sampling), and the decoding
# keys shared by the steps that decode.
_PLAN = ("generate.temperature", "generate.samples_per_prompt", "generate.adaptive", "generate.temperature_bounds",
         "generate.temperature_step", "generate.samples_bounds", "curate.max_per_prompt")
_DECODE = ("model", "generate.backend", "generate.top_p", "generate.max_new_tokens", "generate.batch_size")

# The gates keys each gated step's suites read (not the whole section: a threshold of the curated gate must
# not rerun generate). `gates.warn` is cut too: a step's slice keeps the entries that name its own gate.
_GATE = ("gates.enabled", "gates.warn")
_LENGTHS = ("gates.max_prompt_chars", "gates.max_completion_chars")
_PASS = ("gates.min_pass_rate", "gates.max_pass_rate")
_CURATED = (*_GATE, *_LENGTHS, "gates.max_duplicate_rate", "gates.min_answers_per_prompt",  # curated, pairs,
            "gates.min_distinct_ngram_ratio", "gates.diversity_ngram", "gates.contamination_ngram",  # grpo prompts
            "gates.max_contaminated_share", "gates.seed_share_tolerance")

STEPS: tuple[Step, ...] = (
    Step("prepare", "flywheel.steps.data:make_datasets",
         ("seed", "task.name", "task.params", "data.seed_set", "data.eval_set", "evaluate.per_difficulty"),
         (), ("seed_set", "eval_set")),
    Step("init-model", "flywheel.steps.init_model:init_model", ("seed", "model"), ("seed_set",), ("model",)),
    Step("prompts", "flywheel.steps.data:sample_prompts",
         ("seed", "task", "generate.prompts_per_iteration", "generate.curriculum", "generate.grow_threshold", *_PLAN),
         ("previous summary", "proposed"), ("prompts", "plan (metrics)")),
    Step("propose", "flywheel.steps.propose:propose_problems",
         ("seed", "task", "propose", "verify", *_GATE, "gates.max_prompt_chars", *_DECODE),
         ("model", "prompts", "plan", "eval_set"), ("proposals", "dropped"), gate="proposals"),
    Step("generate", "flywheel.steps.generate:generate_samples",
         ("seed", *_GATE, *_LENGTHS, "gates.max_empty_completion_share", *_DECODE),
         ("model", "prompts", "plan"), ("samples",), gate="samples"),
    Step("verify", "flywheel.steps.verify:verify_samples", ("task", "verify", *_GATE, *_PASS), ("samples",), ("verdicts",),
         gate="verdicts"),
    Step("merge-shards", "flywheel.steps.shards:merge_shards", (), ("prompts", "verdicts of every shard"),
         ("verdicts",)),
    Step("curate", "flywheel.steps.curate:curate_samples",
         ("seed", "curate", *_CURATED, "train.recipe", "train.grpo.prompt_filter"),
         ("verdicts", "seed_set", "eval_set", "previous curated"), ("curated", "dropped"), gate="curated"),
    Step("train", "flywheel.steps.train:train_model",
         ("model", "train", "generate", "verify", "task", *_GATE, *_PASS, "gates.max_empty_completion_share",
          "gates.max_contaminated_share", "cluster", "pipeline.image"),
         ("champion or base model", "curated"), ("model",), gate="rollouts"),
    Step("evaluate", "flywheel.steps.evaluate:evaluate_model",
         ("seed", "task", "evaluate", *_GATE, *_DECODE),
         ("model", "eval_set", "seed_set", "previous metrics"), ("results",), gate="results"),
    Step("promote", "flywheel.steps.promote:promote_model", ("promote",),
         ("champion", "challenger", "their results and metrics", "previous decision"), ("model", "results")),
    Step("record", "flywheel.report:record_iteration", (ALL,), ("every step's metrics", "previous summary"),
         ("summary.json", "report.html")),
)

BY_NAME = {s.name: s for s in STEPS}
NAMES = tuple(BY_NAME)


def row(name: str) -> Step:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"no step {name!r}; steps are {', '.join(NAMES)}") from None


# --- each step's part of the config ----------------------------------------------------------------------

def lookup(data: dict, key: str, default: Any = None) -> Any:
    """The value at dotted `key` in nested dicts ('train.lora.r'), or `default` where a part is missing."""
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _tree(keys: tuple[str, ...]) -> dict | bool:
    """Dotted keys as a tree: ('a.b', 'c') -> {'a': {'b': True}, 'c': True}; ALL -> True."""
    if ALL in keys:
        return True
    tree: dict = {}
    for key in keys:
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if node is True:
                break
        else:
            node[leaf] = True
    return tree


def _pick(data: dict, tree: dict | bool) -> Any:
    if tree is True:
        return data
    return {k: _pick(data[k], sub) for k, sub in tree.items() if k in data}


def config_slice(cfg, name: str) -> str:
    """The keys of step `name`'s row, from `cfg`, as JSON (sorted: equal slices are equal strings). A gated
    step's `gates.warn` keeps only the entries of its own gate ('curated', 'curated.seed_share'), so adding a
    rule of one gate to the list reruns only the step that checks it."""
    step = row(name)
    data = _pick(cfg.model_dump(mode="json"), _tree(step.reads))
    gates = data.get("gates") if ALL not in step.reads else None
    if gates and "warn" in gates:
        gates["warn"] = [w for w in gates["warn"] if w == step.gate or w.startswith(f"{step.gate}.")]
    return json.dumps(data, sort_keys=True)


class ConfigAccessError(AttributeError):
    """A step read a config key that its row in the step table does not list."""


_WHOLE = ("model_dump", "model_dump_json", "to_json", "model_copy")  # a whole section or config, as data


class StepConfig:
    """A read-only view of a config (or one of its sections) that allows the keys of one step's row.

    Reading another key raises `ConfigAccessError`, naming the key and the row to add it to: a step that
    silently read a default it was never given would break the promise that its slice is all it uses."""

    def __init__(self, obj, tree: dict | bool, step: str, prefix: str = ""):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_tree", tree)
        object.__setattr__(self, "_step", step)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name: str):
        obj, tree, step, prefix = self._obj, self._tree, self._step, self._prefix
        if name in _WHOLE and not prefix:
            # the whole config as data (a subprocess's, a TrainJob's copy); it carries what the step was given
            return getattr(obj, name)
        if name.startswith("__") or name not in tree:
            if name.startswith("__"):
                raise AttributeError(name)
            raise ConfigAccessError(
                f"step {step!r} read config key {prefix + name!r}, which its row in flywheel/steps/table.py does "
                f"not list (it lists {', '.join(row(step).reads) or 'nothing'}); add the key to the row")
        value = getattr(obj, name)
        sub = tree[name]
        return value if sub is True else StepConfig(value, sub, step, f"{prefix}{name}.")

    def __setattr__(self, name, value):
        raise AttributeError("a step's config is read-only")

    def __repr__(self) -> str:
        return f"StepConfig({self._step!r}, {self._prefix or 'config'})"


def step_config(text: str, name: str):
    """A step's config from its slice (JSON): the listed keys from the slice, every other key guarded.

    The slice is validated section by section (the cross-section checks ran on the whole config when the
    run started); the keys it lacks keep their defaults, which the view never lets the step read."""
    from flywheel.config import Config, ConfigError, parse_section

    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"step {name}: its config slice is not JSON ({err})") from None
    tree = _tree(row(name).reads)
    if tree is True:  # the whole config: nothing to guard
        from flywheel.config import parse_config

        return parse_config(data, f"<config of step {name}>")
    return StepConfig(parse_section(Config, data, f"<config of step {name}>"), tree, name)


def view(cfg, name: str) -> StepConfig:
    """`cfg` as step `name` may read it (the CLI and tests: same rule as a component's slice)."""
    return step_config(config_slice(cfg, name), name)


def as_markdown() -> str:
    """The table as docs/architecture.md shows it (tests/test_table.py checks the page has exactly this)."""
    def keys(ks):
        return ", ".join(f"`{k}`" for k in ks) or "-"

    lines = ["| step | function | reads | in | out | gate |", "|---|---|---|---|---|---|"]
    lines += [f"| `{s.name}` | `{s.function}` | {keys(s.reads)} | {', '.join(s.inputs) or '-'} | "
              f"{', '.join(s.outputs)} | {s.gate or 'none'} |" for s in STEPS]
    return "\n".join(lines)
