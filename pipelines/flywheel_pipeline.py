"""The self-improvement loop as one KFP pipeline: prepare, then N unrolled iterations of
generate -> verify -> curate -> train -> evaluate -> promote -> record.

KFP v2 has no loops over artifacts, so iterations are unrolled at compile time by a Python `for`
(`config.iterations` is fixed when the pipeline is built). The champion model (the best so far, chosen by
`promote`) feeds generation in the next iteration. Each iteration after the first runs inside a `dsl.If`
on the previous `promote`'s verdict, so a stop criterion (no promotion for `promote.patience` iterations,
a regression) ends the run. The run form has the knobs people change as typed fields (pipelines/form.py)
beside the whole config as JSON; the first task, `configure`, merges them and hands each step only its slice.

    prepare_data ─> init_model ─> evaluate(0) ─> record(0)
                         │
       ┌─────────────────┴───────────── iteration i = 1..N (while promote says go on) ────────────────┐
       │ sample_prompts ─> generate ─> verify ─> curate ─> train ─> evaluate ─> promote ─> record       │
       │       └─> propose (optional) ──> kept problems join sample_prompts of iteration i+1            │
       └───────────────────────────────────────────────────────────────────────────────────────────────┘
"""

import json
from contextlib import ExitStack

from kfp import dsl

from flywheel.components.steps import make_components
from flywheel.config import Config
from flywheel.pipelines.fanout import generate_and_verify
from flywheel.pipelines.form import FORM, compiled_shape, form_defaults
from flywheel.pipelines.placement import placed
from flywheel.steps.dag import Out, loop_dag
from flywheel.steps.table import row


def build_pipeline(cfg: Config):
    """The `@dsl.pipeline` function for `cfg` (its image, name and iteration count are compile-time)."""
    c = placed(make_components(cfg.pipeline.image), cfg)  # GPUs, nodes, secrets: cfg.cluster
    config_default, form = cfg.to_json(), form_defaults(cfg)
    # Sharded generate/verify run inside a ParallelFor, and kfp.local hands a ParallelFor body the loop item
    # in place of any upstream task's output parameter (kfp 2.17.3: checked with a two-component pipeline).
    # Their slices are therefore fixed when the pipeline is compiled, and `configure` refuses a run whose
    # config changes them (recompile instead), so no setting is ever silently ignored.
    from flywheel.steps.table import config_slice

    slices = {n: config_slice(cfg, n) for n in ("generate", "verify")} if cfg.cluster.shards > 1 else {}
    # iterations, propose, the summary edge, placement: the graph itself; configure refuses a run that changes them
    fixed = {"slices": slices, "shape": compiled_shape(cfg)}

    def flywheel(config: str = config_default, model: str = form["model"], task_data: str = form["task_data"],
                 samples_per_prompt: int = form["samples_per_prompt"], temperature: float = form["temperature"],
                 max_new_tokens: int = form["max_new_tokens"], learning_rate: float = form["learning_rate"],
                 train_steps: int = form["train_steps"], recipe: str = form["recipe"], seed: int = form["seed"]):
        conf = c.configure(config=config, model=model, task_data=task_data, samples_per_prompt=samples_per_prompt,
                           temperature=temperature, max_new_tokens=max_new_tokens, learning_rate=learning_rate,
                           train_steps=train_steps, recipe=recipe, seed=seed,
                           fixed=json.dumps(fixed)).set_display_name("configure")
        s = {**conf.outputs, **slices}  # each step's config slice: its cache key changes only with the keys it reads
        out: dict[str, dict] = {}  # task id -> its outputs

        def arg(v):
            return out[v.task][v.name] if isinstance(v, Out) else v

        with ExitStack() as gates:
            for t in loop_dag(cfg):  # the DAG, described once (flywheel/steps/dag.py)
                if t.step == "prompts" and t.iteration > 1:  # iteration i's first task: it runs
                    said = out[f"promote {t.iteration - 1}"]["Output"]  # only if promote(i-1) said go on
                    gates.enter_context(dsl.If(said == True, name=f"continue-{t.iteration}"))  # noqa: E712
                if t.step == "verify":  # made with its generate, below
                    continue
                inputs = {k: arg(v) for k, v in t.inputs.items()}
                if t.step == "generate":  # with its verify: one pod each, or a ParallelFor over the shards
                    gv = generate_and_verify(c, cfg.cluster.shards, configs=s, **inputs)
                    out[t.id] = {"metrics": gv.generation}
                    out[f"verify {t.iteration}"] = {"verdicts": gv.verdicts, "metrics": gv.verification}
                else:
                    task = getattr(c, row(t.step).ident)(config=s[row(t.step).ident], **inputs)
                    out[t.id] = task.set_display_name(t.id).outputs

    # The UI shows these lines under the form's fields (KFP reads the docstring's Args).
    flywheel.__doc__ = "Run the self-improvement loop.\n\n    Args:\n" + "".join(
        f"        {name}: {line}\n" for name, line in [
            ("config", "The run config as JSON (docs/config.md): everything the fields below do not set. "
                       "`iterations`, `propose.enabled`, `pipeline`, `cluster` and the summary-reading switches "
                       "(adaptive, frontier, grow_threshold) are fixed when the pipeline is compiled: a run that "
                       "changes them is refused."),
            *((name, f"{help_} ({key}; wins over config)") for name, (key, _, help_) in FORM.items())])
    return dsl.pipeline(name=cfg.pipeline.name,
                        description=f"flywheel self-improvement loop: up to {cfg.iterations} iterations of "
                                    "generate, verify, curate, train, evaluate, promote.")(flywheel)


def compile_pipeline(cfg: Config, path: str) -> str:
    from kfp import compiler

    from flywheel.cluster.trainjob import check_placement

    check_placement(cfg)  # GPUs for what the config asks (vLLM, processes per node), before anything is sent
    compiler.Compiler().compile(build_pipeline(cfg), path)
    return path
