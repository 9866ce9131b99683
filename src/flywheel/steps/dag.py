"""The iteration DAG, once, as data: which task runs which step and which task's output feeds each input.

    prepare ─> init-model ─> evaluate 0 ─> record 0
    iteration i = 1..N:
      prompts i ─> generate i ─> verify i ─> curate i ─> train i ─> evaluate i ─> promote i ─> record i
          └─> propose i (optional) ─> its kept problems join prompts i+1

Both drivers walk `loop_dag(cfg)` in order: the KFP pipeline (pipelines/flywheel_pipeline.py) turns an `Out`
into the upstream task's `outputs[name]`, the DVC stages (`versions.dvc_stages`) into that output's file
path and a CLI flag. So an edge added or made conditional here is added to both, and they cannot drift (they
had: KFP passed curate the previous curated rows under 'replace' too, DVC only under 'accumulate').
What only one driver has stays in it: KFP's stop (`dsl.If` on promote's verdict), display names, the
sharded generate/verify and the per-step config slices; DVC's paths, metrics files and `params:`.

Input names are the KFP components' parameter names (components/steps.py); the order of `inputs` is the
order of the DVC stage's flags and deps (dvc.yaml is compared byte for byte with its generated form).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Out:
    """Output `name` of the task `task` (a `Task.id`); names are the KFP component's outputs."""
    task: str
    name: str


@dataclass(frozen=True)
class Task:
    step: str  # its row in flywheel/steps/table.py
    iteration: int | None  # None: before the loop (prepare, init-model)
    inputs: dict[str, Out | int] = field(default_factory=dict)  # input name -> an upstream output, or a value

    @property
    def id(self) -> str:
        """'curate 2': the KFP task's display name; the DVC stage is 'curate_2'."""
        return self.step if self.iteration is None else f"{self.step} {self.iteration}"


def loop_dag(cfg) -> list[Task]:
    """The loop's tasks for `cfg`, in step order (each task after every task it reads from)."""
    from flywheel.pipelines.form import reads_summary

    dag: list[Task] = []

    def add(step: str, iteration: int | None, /, **inputs) -> str:  # /: `iteration` is an input too
        dag.append(Task(step, iteration, inputs))
        return dag[-1].id

    prep = add("prepare", None)
    seed_set, eval_set = Out(prep, "seed_set"), Out(prep, "eval_set")
    base = add("init-model", None, seed_set=seed_set)
    ev = add("evaluate", 0, model=Out(base, "model"), eval_set=eval_set, seed_set=seed_set, iteration=0)
    rec = add("record", 0, iteration=0, evaluation=Out(ev, "metrics"), preparation=Out(prep, "metrics"),
              results=Out(ev, "results"), model=Out(base, "model"))  # model: the first champion
    # the champion (the best model so far, its results and metrics): promote's outputs from iteration 1 on
    champion = {"champion": Out(base, "model"), "champion_results": Out(ev, "results"),
                "champion_metrics": Out(ev, "metrics")}
    curated = promoted = proposed = None
    for i in range(1, cfg.iterations + 1):
        carry = {"proposed": Out(proposed, "proposals")} if proposed else {}
        if reads_summary(cfg):  # else a rerun of record (it reads every key) would rerun prompts on
            carry["previous"] = Out(rec, "summary")  # any config change, and everything after it
        prompts = add("prompts", i, iteration=i, **carry)
        plan = Out(prompts, "metrics")  # the sampling plan: the one source of temperature and K
        proposed = None
        if cfg.propose.enabled and i < cfg.iterations:  # the last iteration's proposals would feed nothing
            proposed = add("propose", i, model=champion["champion"], prompts=Out(prompts, "prompts"), plan=plan,
                           eval_set=eval_set, iteration=i)
        gen = add("generate", i, model=champion["champion"], prompts=Out(prompts, "prompts"), plan=plan, iteration=i)
        ver = add("verify", i, samples=Out(gen, "samples"))
        # curate reads the previous curated rows only under 'accumulate' (curate_samples, curate_pairs);
        # under 'replace' the edge would only make curate's cache key depend on a table it ignores
        carry = {"previous": Out(curated, "curated")} if curated and cfg.curate.data_policy == "accumulate" else {}
        cur = add("curate", i, verdicts=Out(ver, "verdicts"), seed_set=seed_set, eval_set=eval_set, iteration=i,
                  **carry)
        # both starts: train.init_from picks one (in the component at run time, in dvc.yaml when generated)
        tr = add("train", i, current_model=champion["champion"], base_model=Out(base, "model"),
                 curated=Out(cur, "curated"))
        ev = add("evaluate", i, model=Out(tr, "model"), eval_set=eval_set, seed_set=seed_set, iteration=i,
                 previous=champion["champion_metrics"])
        last = {"previous_decision": Out(promoted, "decision")} if promoted else {}  # patience counts on
        promoted = add("promote", i, iteration=i, **champion, challenger=Out(tr, "model"),
                       challenger_results=Out(ev, "results"), challenger_metrics=Out(ev, "metrics"), **last)
        rec = add("record", i, iteration=i, generation=Out(gen, "metrics"), verification=Out(ver, "metrics"),
                  curation=Out(cur, "metrics"), training=Out(tr, "metrics"), evaluation=Out(ev, "metrics"),
                  promotion=Out(promoted, "decision"), verdicts=Out(ver, "verdicts"), dropped=Out(cur, "dropped"),
                  curated=Out(cur, "curated"), model=Out(tr, "model"), results=Out(ev, "results"),
                  previous=Out(rec, "summary"), **({"proposal": Out(proposed, "metrics")} if proposed else {}))
        champion = {"champion": Out(promoted, "model"), "champion_results": Out(promoted, "results"),
                    "champion_metrics": Out(promoted, "metrics")}
        curated = cur
    return dag

