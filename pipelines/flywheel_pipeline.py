"""The self-improvement loop as one KFP pipeline: prepare, then N unrolled iterations of
generate -> verify -> curate -> train -> evaluate -> record.

KFP v2 has no loops over artifacts, so iterations are unrolled at compile time by a Python `for`
(`config.iterations` is fixed when the pipeline is built); the model of iteration i feeds generation
in iteration i+1. The whole config travels as one JSON string parameter, so the run form in the KFP UI
shows (and lets a researcher edit) every setting in one place, and nothing is configured twice.

    prepare_data ─> init_model ─> evaluate(0) ─> record(0)
                         │
       ┌─────────────────┴──────── iteration i = 1..N ─────────────────────────────┐
       │ sample_prompts ─> generate ─> verify ─> curate ─> train ─> evaluate ─> record │
       └──────────────────────────────────────────────────────────────────────────────┘
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Model

from flywheel.components.steps import make_components
from flywheel.config import Config


class Outputs(NamedTuple):
    summary: Artifact
    report: HTML
    model: Model


def build_pipeline(cfg: Config):
    """The `@dsl.pipeline` function for `cfg` (its image, name and iteration count are compile-time)."""
    c = make_components(cfg.pipeline.image)
    config_default = cfg.to_json()

    @dsl.pipeline(name=cfg.pipeline.name,
                  description=f"flywheel self-improvement loop: {cfg.iterations} iterations of "
                              "generate, verify, curate, train, evaluate.")
    def flywheel(config: str = config_default) -> Outputs:
        """Run the self-improvement loop.

        Args:
            config: The run config as JSON (see docs/config.md). Every step reads its section from it.
                `iterations`, `pipeline.image` and `pipeline.name` are fixed when the pipeline is compiled.
        """
        data = c.prepare_data(config=config).set_display_name("prepare data")
        seed_set, eval_set = data.outputs["seed_set"], data.outputs["eval_set"]
        base = c.init_model(config=config, seed_set=seed_set).set_display_name("init model")
        model = base.outputs["model"]
        ev = c.evaluate(config=config, iteration=0, model=model, eval_set=eval_set, seed_set=seed_set)
        ev.set_display_name("evaluate 0")
        rec = c.record(config=config, iteration=0, evaluation=ev.outputs["metrics"],
                       preparation=data.outputs["metrics"], results=ev.outputs["results"])
        rec.set_display_name("record 0")
        curated = None

        for i in range(1, cfg.iterations + 1):
            prompts = c.sample_prompts(config=config, iteration=i).set_display_name(f"prompts {i}")
            gen = c.generate(config=config, iteration=i, model=model, prompts=prompts.outputs["prompts"])
            gen.set_display_name(f"generate {i}")
            ver = c.verify(config=config, samples=gen.outputs["samples"]).set_display_name(f"verify {i}")
            carry = {"previous": curated} if curated is not None else {}
            cur = c.curate(config=config, iteration=i, verdicts=ver.outputs["verdicts"], seed_set=seed_set,
                           eval_set=eval_set, **carry)
            cur.set_display_name(f"curate {i}")
            tr = c.train(config=config, current_model=model, base_model=base.outputs["model"],
                         curated=cur.outputs["curated"]).set_display_name(f"train {i}")
            ev = c.evaluate(config=config, iteration=i, model=tr.outputs["model"], eval_set=eval_set,
                            seed_set=seed_set, previous=ev.outputs["metrics"]).set_display_name(f"evaluate {i}")
            rec = c.record(config=config, iteration=i, evaluation=ev.outputs["metrics"],
                           previous=rec.outputs["summary"], generation=gen.outputs["metrics"],
                           verification=ver.outputs["metrics"], curation=cur.outputs["metrics"],
                           training=tr.outputs["metrics"], verdicts=ver.outputs["verdicts"],
                           dropped=cur.outputs["dropped"], curated=cur.outputs["curated"], model=tr.outputs["model"],
                           results=ev.outputs["results"])
            rec.set_display_name(f"record {i}")
            model, curated = tr.outputs["model"], cur.outputs["curated"]

        return Outputs(summary=rec.outputs["summary"], report=rec.outputs["report"], model=model)

    return flywheel


def compile_pipeline(cfg: Config, path: str) -> str:
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(cfg), path)
    return path
