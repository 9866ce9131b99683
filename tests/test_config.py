from pathlib import Path

import pytest
import yaml

from flywheel.config import Config, ConfigError, config_from_json, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid():
    cfg = Config()
    assert cfg.task.name == "arithmetic" and cfg.iterations >= 1


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert config_from_json(cfg.to_json()) == cfg  # the pipeline parameter round-trips


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"generate": {"temprature": 0.7}}))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert str(p) in msg and "generate.temprature" in msg and "unknown key" in msg


def test_bad_value_names_field_and_value(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  max_steps: -3\n")
    with pytest.raises(ConfigError, match=r"train\.max_steps.*greater than 0.*-3"):
        load_config(p)


def test_greedy_with_many_samples_is_refused(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("generate:\n  temperature: 0\n  samples_per_prompt: 4\n")
    with pytest.raises(ConfigError, match="greedy"):
        load_config(p)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("iterations: 2\n")
    cfg = load_config(p, ["train.max_steps=7", "curate.data_policy=replace"])
    assert cfg.train.max_steps == 7 and cfg.curate.data_policy == "replace" and cfg.iterations == 2
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(p, ["train.max_steps"])


def test_config_reference_is_up_to_date():
    from flywheel.config import config_reference

    assert (ROOT / "docs" / "config.md").read_text() == config_reference(), \
        "docs/config.md is stale: run `python -m flywheel.config > docs/config.md`"
