"""The pipeline compiles to KFP IR, and the IR loads back with every task on the configured image."""

from __future__ import annotations

import yaml
from kfp import components

from flywheel.cli import main
from flywheel.config import parse_config
from flywheel.pipelines.flywheel_pipeline import compile_pipeline


def test_compile_and_load_back(tmp_path):
    cfg = parse_config({"iterations": 2, "pipeline": {"image": "registry.example/flywheel-python:9.9"}})
    path = compile_pipeline(cfg, str(tmp_path / "p.yaml"))
    loaded = components.load_component_from_file(path)  # the KFP SDK's own loader
    assert loaded.name == cfg.pipeline.name
    spec = yaml.safe_load(open(path))
    tasks = spec["root"]["dag"]["tasks"]
    # prepare, init, evaluate 0, record 0, then 7 tasks per iteration
    assert len(tasks) == 4 + 7 * cfg.iterations
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {"registry.example/flywheel-python:9.9"}
    # install_kfp_package=False: no task pip-installs anything at run time
    assert not any("pip install" in " ".join(e["container"].get("command", [])) for e in executors.values())
    # the model of iteration 1 feeds generation in iteration 2
    gen2 = next(t for name, t in tasks.items() if t["taskInfo"]["name"] == "generate 2")
    assert gen2["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "train"
    # the UI form: one parameter, typed, with a default and a description
    param = spec["root"]["inputDefinitions"]["parameters"]["config"]
    assert param["parameterType"] == "STRING" and param["isOptional"] and "description" in param
    assert parse_config(yaml.safe_load(param["defaultValue"])) == cfg


def test_compile_cli(tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("iterations: 1\n")
    assert main(["compile", str(cfg_file), "-o", str(tmp_path / "out.yaml")]) == 0
    assert (tmp_path / "out.yaml").stat().st_size > 1000
