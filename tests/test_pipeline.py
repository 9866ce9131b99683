"""The pipeline compiles to KFP IR, and the IR loads back with every task on the configured image."""

from __future__ import annotations

import yaml
from kfp import components

from flywheel.cli import main
from flywheel.config import parse_config
from flywheel.pipelines.flywheel_pipeline import compile_pipeline


def all_tasks(spec: dict) -> dict:
    """Tasks of the root DAG and of every sub-DAG (conditions compile to sub-DAGs)."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {name: t for dag in dags for name, t in dag["tasks"].items()}


def test_compile_and_load_back(tmp_path):
    cfg = parse_config({"iterations": 2, "pipeline": {"image": "registry.example/flywheel-python:9.9"}})
    path = compile_pipeline(cfg, str(tmp_path / "p.yaml"))
    loaded = components.load_component_from_file(path)  # the KFP SDK's own loader
    assert loaded.name == cfg.pipeline.name
    spec = yaml.safe_load(open(path))
    tasks = all_tasks(spec)
    # configure, prepare, init, evaluate 0, record 0, then 8 tasks per iteration (+ the condition of iteration 2)
    assert len(tasks) == 5 + 8 * cfg.iterations + 1
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {"registry.example/flywheel-python:9.9"}
    # install_kfp_package=False: no task pip-installs anything at run time
    assert not any("pip install" in " ".join(e["container"].get("command", [])) for e in executors.values())
    # the model of iteration 1 feeds generation in iteration 2
    # the champion chosen by promote 1 feeds generation in iteration 2, inside promote 1's condition
    gen2 = next(t for t in tasks.values() if t["taskInfo"]["name"] == "generate 2")
    assert gen2["inputs"]["artifacts"]["model"]["componentInputArtifact"].startswith("pipelinechannel--promote")
    cond = next(t for t in tasks.values() if t["taskInfo"]["name"] == "continue-2")
    assert "promote-Output" in cond["triggerPolicy"]["condition"]
    # the UI form's full config (the typed fields: tests/test_table.py)
    param = spec["root"]["inputDefinitions"]["parameters"]["config"]
    assert param["parameterType"] == "STRING" and param["isOptional"] and "description" in param
    assert parse_config(yaml.safe_load(param["defaultValue"])) == cfg


def test_compile_cli(tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("iterations: 1\n")
    assert main(["compile", str(cfg_file), "-o", str(tmp_path / "out.yaml")]) == 0
    assert (tmp_path / "out.yaml").stat().st_size > 1000
