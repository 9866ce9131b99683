"""The KFP pipeline and dvc.yaml are both built from one description of the iteration DAG
(flywheel/steps/dag.py): every edge of the compiled IR and every dep of a DVC stage is one that `loop_dag`
names, and no other. Fast: compiles, runs nothing."""

from __future__ import annotations

import yaml

from flywheel.pipelines.flywheel_pipeline import compile_pipeline
from flywheel.steps.dag import Out, loop_dag
from flywheel.versions import dvc_stages

from conftest import tiny_config

# propose and the summary edge on (adaptive): every optional edge of the DAG is present
CFG = tiny_config(iterations=3, propose__enabled=True, propose__max_new_tokens=8, generate__adaptive=True)


def _ir_sources(spec: dict) -> dict[str, dict]:
    """For each task of the IR (by display name): input name -> (producer's display name, output), or the
    constant it is given; a sub-DAG's (a condition's) inputs are followed out to the task that made them."""
    comps = spec["components"]
    dags = {"root": spec["root"]["dag"], **{n: c["dag"] for n, c in comps.items() if "dag" in c}}
    names = {name: t["taskInfo"]["name"] for d in dags.values() for name, t in d["tasks"].items()}
    parent = {t["componentRef"]["name"]: (owner, t) for owner, d in dags.items() for t in d["tasks"].values()
              if t["componentRef"]["name"] in dags}  # sub-DAG component -> (the DAG it is in, its task there)

    def source(owner: str, spec_: dict):
        if "taskOutputArtifact" in spec_ or "taskOutputParameter" in spec_:
            o = spec_.get("taskOutputArtifact") or spec_["taskOutputParameter"]
            return names[o["producerTask"]], o.get("outputArtifactKey") or o["outputParameterKey"]
        if "runtimeValue" in spec_:
            return spec_["runtimeValue"]["constant"]
        channel = spec_.get("componentInputArtifact") or spec_["componentInputParameter"]
        if owner == "root":
            return ("pipeline input", channel)
        up, task = parent[owner]
        kind = "artifacts" if "componentInputArtifact" in spec_ else "parameters"
        return source(up, task["inputs"][kind][channel])

    return {t["taskInfo"]["name"]: {k: source(owner, v) for kind in ("artifacts", "parameters")
                                    for k, v in t.get("inputs", {}).get(kind, {}).items()}
            for owner, d in dags.items() for t in d["tasks"].values() if t["componentRef"]["name"] not in dags}


def test_kfp_tasks_read_exactly_what_the_dag_names(tmp_path):
    spec = yaml.safe_load(open(compile_pipeline(CFG, str(tmp_path / "p.yaml"))))
    ir = _ir_sources(spec)
    dag = loop_dag(CFG)
    assert {t.id for t in dag} | {"configure"} == set(ir)  # one KFP task per DAG task
    assert "propose 2" in ir and "propose 3" not in ir and "previous" in ir["prompts 2"]  # the optional edges
    for t in dag:
        got = dict(ir[t.id])
        assert got.pop("config") == ("configure", t.step.replace("-", "_"))  # its slice: driver-specific
        want = {k: (v.task, v.name) if isinstance(v, Out) else v for k, v in t.inputs.items()}
        assert got == want, t.id


def test_dvc_stages_depend_on_exactly_the_tasks_the_dag_names():
    stages = dvc_stages(CFG, "c.yaml", CFG.model_dump(mode="json"))["stages"]
    dag = loop_dag(CFG)
    assert list(stages) == [t.id.replace(" ", "_") for t in dag]  # one stage per DAG task, in its order

    def files(stage: dict) -> list[str]:
        return [o if isinstance(o, str) else next(iter(o)) for o in stage["outs"] + stage.get("metrics", [])]

    writers = [(f, name) for name, s in stages.items() for f in files(s)]
    for t in dag:
        deps = stages[t.id.replace(" ", "_")].get("deps", [])
        made_by = {next(n for f, n in writers if d == f or d.startswith(f + "/")) for d in deps}
        inputs = dict(t.inputs)
        # the two edges dvc.yaml leaves out on purpose (versions.dvc_stages says why)
        if t.step == "train":
            inputs.pop("base_model" if CFG.train.init_from == "current" else "current_model")
        if t.id == "record 0":
            inputs.pop("model")
        assert made_by == {v.task.replace(" ", "_") for v in inputs.values() if isinstance(v, Out)}, t.id
        assert len(deps) == sum(isinstance(v, Out) for v in inputs.values()), t.id  # one dep per input edge

