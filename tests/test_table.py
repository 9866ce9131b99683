"""The step table is the one list of steps: components, CLI, DVC stages and cluster placement agree with it;
each step reads only its row's config keys (a view refuses the others); the run form's fields reach the
steps; and a changed field reruns exactly the steps that read it, in kfp.local and in DVC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flywheel.config import ConfigError, parse_config
from flywheel.steps.table import NAMES, ConfigAccessError, config_slice, view

from conftest import TINY, tiny_config


def test_every_list_of_steps_is_the_table():
    from flywheel.cli import make_parser
    from flywheel.components.steps import STEPS

    assert [f.__name__ for f in STEPS] == ["configure", *(n.replace("-", "_") for n in NAMES)]
    helps = make_parser().epilog
    assert all(f"  {n} " in helps for n in NAMES if n != "merge-shards")
    # cluster placement takes every step, propose and promote included, and names them on a typo
    parse_config({"cluster": {"steps": {"propose": {"gpus": 1}, "promote": {"cpu": "1"}}}})
    with pytest.raises(ConfigError, match="unknown step.*steps are prepare, init-model"):
        parse_config({"cluster": {"steps": {"init_model": {"gpus": 1}}}})


def test_a_step_sees_only_its_rows_keys():
    cfg = tiny_config()
    assert "train" not in json.loads(config_slice(cfg, "init-model"))  # warm start: model.embedded, not train.*
    assert set(json.loads(config_slice(cfg, "curate"))["train"]) == {"recipe", "grpo"}
    v = view(cfg, "curate")
    assert v.train.recipe == "sft" and v.curate.max_per_prompt == cfg.curate.max_per_prompt
    with pytest.raises(ConfigAccessError, match="'curate' read config key 'train.learning_rate'.*add the key"):
        v.train.learning_rate
    with pytest.raises(ConfigAccessError, match="'init-model' read config key 'train'"):
        view(cfg, "init-model").train


def test_a_gate_setting_reaches_only_the_step_whose_gate_reads_it():
    # the case: a curated rule failed, its advice is to list it in gates.warn; the rerun must not
    # redo generate, verify or evaluate (their slices, hence their cache keys and DVC params, are unchanged)
    from flywheel.steps.table import NAMES

    cfg = tiny_config()
    before = {n: config_slice(cfg, n) for n in NAMES}

    def changed(**gates) -> set[str]:
        new = parse_config({**json.loads(cfg.to_json()), "gates": {**cfg.gates.model_dump(), **gates}})
        return {n for n in NAMES if config_slice(new, n) != before[n]}

    assert changed(warn=["curated.seed_share"]) == {"curate", "record"}
    assert changed(warn=["samples"]) == {"generate", "record"}
    assert changed(max_pass_rate=0.9) == {"verify", "train", "record"}  # train: grpo's rollouts gate
    assert changed(max_duplicate_rate=0.5) == {"curate", "record"}
    assert changed(enabled=False) == {"propose", "generate", "verify", "curate", "train", "evaluate", "record"}
    assert json.loads(config_slice(parse_config({**json.loads(cfg.to_json()), "gates": {
        "warn": ["curated.seed_share", "samples", "results"]}}), "curate"))["gates"]["warn"] == ["curated.seed_share"]


def test_the_run_form_has_typed_fields_with_defaults_and_help(tmp_path):
    from flywheel.pipelines.flywheel_pipeline import compile_pipeline

    cfg = tiny_config()
    ir = yaml.safe_load(Path(compile_pipeline(cfg, str(tmp_path / "p.yaml"))).read_text())
    params = ir["root"]["inputDefinitions"]["parameters"]
    want = {"config": "STRING", "model": "STRING", "task_data": "STRING", "samples_per_prompt": "NUMBER_INTEGER",
            "temperature": "NUMBER_DOUBLE", "max_new_tokens": "NUMBER_INTEGER", "learning_rate": "NUMBER_DOUBLE",
            "train_steps": "NUMBER_INTEGER", "recipe": "STRING", "seed": "NUMBER_INTEGER"}
    assert {k: v["parameterType"] for k, v in params.items()} == want
    assert params["temperature"]["defaultValue"] == cfg.generate.temperature
    assert params["train_steps"]["defaultValue"] == cfg.train.max_steps == 20
    assert params["model"]["defaultValue"] == "embedded"
    assert json.loads(params["config"]["defaultValue"]) == cfg.model_dump(mode="json")
    assert all(v.get("description") for v in params.values())
    assert "generate.temperature" in params["temperature"]["description"]



def test_a_run_form_config_that_changes_the_compiled_graph_is_refused():
    # iterations, propose, the summary edge (adaptive / frontier / grow_threshold), pipeline and cluster build
    # the graph when it is compiled: a run setting them in the form's config would be run with the old graph
    from flywheel.components.steps import configure
    from flywheel.pipelines.flywheel_pipeline import build_pipeline
    from flywheel.pipelines.form import form_defaults

    cfg = tiny_config()
    spec = build_pipeline(cfg).pipeline_spec  # the configure task's compiled `fixed` constant, as KFP passes it
    task = spec.root.dag.tasks["configure"]
    fixed = task.inputs.parameters["fixed"].runtime_value.constant.string_value
    form = form_defaults(cfg)
    assert configure(cfg.to_json(), **form, fixed=fixed).train  # the compiled config itself runs
    configure(parse_config({**json.loads(cfg.to_json()), "train": {**cfg.train.model_dump(), "learning_rate": 0.5}}
                           ).to_json(), **form, fixed=fixed)  # a step's own setting is the form's to change
    for change, says in (({"iterations": cfg.iterations + 1}, "iterations: compiled 2, this run 3"),
                         ({"generate": {**cfg.generate.model_dump(), "adaptive": True}}, "reads the summary"),
                         ({"propose": {**cfg.propose.model_dump(), "enabled": True, "max_new_tokens": 8}}, "propose.enabled"),
                         ({"cluster": {"shards": 2}}, "cluster")):
        data = {**json.loads(cfg.to_json()), **change}
        with pytest.raises(ConfigError, match=f"changes what the pipeline was compiled from.*{says}.*recompile"):
            configure(json.dumps(data), **form, fixed=fixed)


def _flywheel(*args) -> list[str]:
    """`flywheel ARGS` in this process's environment: its console lines."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run([sys.executable, "-m", "flywheel", *args], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout.splitlines()


def _statuses(lines: list[str]) -> dict[str, str]:
    """'iter 1  train  cached ...' -> {'train 1': 'cached'}"""
    return {f"{w[2]} {w[1]}": w[3] for w in (ln.split() for ln in lines) if len(w) > 3 and w[0] == "iter"}


COMPUTE = ("prepare 0", "init-model 0", "evaluate 0", "prompts 1", "generate 1", "verify 1", "curate 1", "train 1",
           "evaluate 1", "promote 1")


@pytest.mark.slow
def test_a_changed_field_reruns_exactly_the_steps_that_read_it_in_kfp_local_and_dvc(tmp_path):
    config = {**TINY, "iterations": 1, "tracking": {"wandb": "disabled"}, "data": {"store": False}}
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tiny.yaml").write_text(yaml.safe_dump(config))
    out = str(tmp_path / "run")
    first = _statuses(_flywheel("run", str(repo / "tiny.yaml"), "--out", out))
    assert all(first[s] == "ok" for s in COMPUTE)
    again = _statuses(_flywheel("run", str(repo / "tiny.yaml"), "--out", out, "--set", "tracking.project=other"))
    assert [s for s in COMPUTE if again[s] != "cached"] == []  # record reads every key: it alone reruns
    lr = _statuses(_flywheel("run", str(repo / "tiny.yaml"), "--out", out, "--set", "train.learning_rate=0.002"))
    assert [s for s in COMPUTE if lr[s] == "cached"] == list(COMPUTE[:7])
    kfp_summary = json.loads(Path(out, "summary.json").read_text())

    # the same loop as DVC stages, from the same DAG: same accuracy per iteration and champion
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    _flywheel("dvc-yaml", str(repo / "tiny.yaml"), "-o", str(repo / "dvc.yaml"))
    # dvc.yaml names the config by the path given: regenerate it relative to the repository
    text = (repo / "dvc.yaml").read_text().replace(str(repo / "tiny.yaml"), "tiny.yaml")
    (repo / "dvc.yaml").write_text(text)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=repo, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    dvc_summary = json.loads((repo / "data/iter_1/record/summary.json").read_text())
    for k, d in zip(kfp_summary["iterations"], dvc_summary["iterations"]):
        assert k["evaluate"]["accuracy"] == d["evaluate"]["accuracy"]
        assert k.get("promote", {}).get("champion_iteration") == d.get("promote", {}).get("champion_iteration")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", "run"], cwd=repo, check=True, capture_output=True)

    def changed(key: str, value) -> set[str]:
        cfg = yaml.safe_load((repo / "tiny.yaml").read_text())
        section, _, field = key.partition(".")
        cfg.setdefault(section, {})[field] = value
        (repo / "tiny.yaml").write_text(yaml.safe_dump(cfg))
        status = json.loads(subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, env=env,
                                           capture_output=True, text=True, check=True).stdout or "{}")
        subprocess.run(["git", "checkout", "-q", "tiny.yaml"], cwd=repo, check=True)
        return set(status)

    assert changed("tracking.project", "other") == {"record_0", "record_1"}
    # dvc status lists the stages whose own params or deps changed (evaluate_1 onward follow once train_1 reruns)
    assert changed("train.learning_rate", 0.002) == {"train_1", "record_0", "record_1"}


def test_the_architecture_page_shows_the_table_as_it_is():
    from flywheel.steps.table import as_markdown

    page = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    assert as_markdown() in page, "docs/architecture.md: paste flywheel.steps.table.as_markdown() over its table"
