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
from flywheel.pipelines.form import FORM, compiled_shape, form_defaults, reads_summary
from flywheel.pipelines.placement import placed


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
        data = c.prepare(config=s["prepare"]).set_display_name("prepare")
        seed_set, eval_set = data.outputs["seed_set"], data.outputs["eval_set"]
        base = c.init_model(config=s["init_model"], seed_set=seed_set).set_display_name("init-model")
        ev = c.evaluate(config=s["evaluate"], iteration=0, model=base.outputs["model"], eval_set=eval_set,
                        seed_set=seed_set).set_display_name("evaluate 0")
        rec = c.record(config=s["record"], iteration=0, evaluation=ev.outputs["metrics"],  # model: the first champion
                       preparation=data.outputs["metrics"], results=ev.outputs["results"],
                       model=base.outputs["model"]).set_display_name("record 0")
        champion = {"champion": base.outputs["model"], "champion_results": ev.outputs["results"],
                    "champion_metrics": ev.outputs["metrics"]}
        curated = decision = proposed = None

        with ExitStack() as gates:
            for i in range(1, cfg.iterations + 1):
                if decision is not None:  # iteration i runs only if promote(i-1) said go on
                    gates.enter_context(dsl.If(decision.outputs["Output"] == True, name=f"continue-{i}"))  # noqa: E712
                carry = {"proposed": proposed.outputs["proposals"]} if proposed is not None else {}
                if reads_summary(cfg):  # else a rerun of record (it reads every key) would rerun prompts on
                    carry["previous"] = rec.outputs["summary"]  # any config change, and everything after it
                prompts = c.prompts(config=s["prompts"], iteration=i, **carry)
                prompts.set_display_name(f"prompts {i}")
                plan = prompts.outputs["metrics"]  # the sampling plan: the one source of temperature and K
                # the last iteration's proposals would feed no iteration: not written
                proposed = None
                if cfg.propose.enabled and i < cfg.iterations:
                    proposed = c.propose(config=s["propose"], iteration=i, model=champion["champion"],
                                         prompts=prompts.outputs["prompts"], eval_set=eval_set, plan=plan)
                    proposed.set_display_name(f"propose {i}")
                gv = generate_and_verify(c, cfg.cluster.shards, configs=s, iteration=i, model=champion["champion"],
                                         prompts=prompts.outputs["prompts"], plan=plan)
                carry = {"previous": curated} if curated is not None else {}
                cur = c.curate(config=s["curate"], iteration=i, verdicts=gv.verdicts, seed_set=seed_set,
                               eval_set=eval_set, **carry).set_display_name(f"curate {i}")
                tr = c.train(config=s["train"], current_model=champion["champion"], base_model=base.outputs["model"],
                             curated=cur.outputs["curated"]).set_display_name(f"train {i}")
                ev = c.evaluate(config=s["evaluate"], iteration=i, model=tr.outputs["model"], eval_set=eval_set,
                                seed_set=seed_set, previous=champion["champion_metrics"]).set_display_name(f"evaluate {i}")
                last = {"previous_decision": decision.outputs["decision"]} if decision is not None else {}
                decision = c.promote(config=s["promote"], iteration=i, **champion, challenger=tr.outputs["model"],
                                     challenger_results=ev.outputs["results"],
                                     challenger_metrics=ev.outputs["metrics"], **last).set_display_name(f"promote {i}")
                rec = c.record(config=s["record"], iteration=i, evaluation=ev.outputs["metrics"],
                               previous=rec.outputs["summary"], generation=gv.generation,
                               verification=gv.verification, curation=cur.outputs["metrics"],
                               training=tr.outputs["metrics"], promotion=decision.outputs["decision"],
                               verdicts=gv.verdicts, dropped=cur.outputs["dropped"], curated=cur.outputs["curated"],
                               model=tr.outputs["model"], results=ev.outputs["results"],
                               **({"proposal": proposed.outputs["metrics"]} if proposed is not None else {})
                               ).set_display_name(f"record {i}")
                champion = {"champion": decision.outputs["model"], "champion_results": decision.outputs["results"],
                            "champion_metrics": decision.outputs["metrics"]}
                curated = cur.outputs["curated"]

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
