"""Champion/challenger: promotion needs a significant paired gain; stop criteria end the loop."""

import json

import pandas as pd
import pytest

from flywheel.io import write_json, write_table
from flywheel.steps.promote import promote_model

from conftest import tiny_config


def _arm(d, name, correct, iteration):
    (d / name).mkdir()
    (d / name / "config.json").write_text(json.dumps({"who": name}))
    write_table(pd.DataFrame({"prompt_id": [f"q{i}" for i in range(len(correct))], "correct": correct}),
                d / f"{name}.parquet")
    write_json({"iteration": iteration, "accuracy": sum(correct) / len(correct)}, d / f"{name}.json")
    return d / name, d / f"{name}.parquet", d / f"{name}.json"


def _promote(d, champ, chall, cfg, previous=None):
    return promote_model(*champ, *chall, d / "out", d / "out.parquet", d / "out.json", cfg, 2,
                         previous_decision=previous, metrics_path=d / "decision.json")


def test_significant_gain_promotes_the_challenger(tmp_path):
    champ = _arm(tmp_path, "champ", [True] * 20 + [False] * 20, 1)
    chall = _arm(tmp_path, "chall", [True] * 38 + [False] * 2, 2)
    m = _promote(tmp_path, champ, chall, tiny_config())
    assert m["promoted"] and m["continue_loop"] and m["p_value"] < 1e-4
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == {"who": "chall"}
    assert json.loads((tmp_path / "out.json").read_text())["iteration"] == 2


def test_small_gain_is_not_significant_and_the_champion_carries_on(tmp_path):
    champ = _arm(tmp_path, "champ", [True] * 20 + [False] * 20, 1)
    chall = _arm(tmp_path, "chall", [True] * 22 + [False] * 18, 2)
    m = _promote(tmp_path, champ, chall, tiny_config())
    assert not m["promoted"] and "not significant" in m["reason"] and m["stale_iterations"] == 1
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == {"who": "champ"}
    assert pd.read_parquet(tmp_path / "out.parquet")["correct"].sum() == 20
    assert m["continue_loop"]  # patience 2: one stale iteration is allowed


def test_patience_stops_the_loop(tmp_path):
    champ = _arm(tmp_path, "champ", [True] * 20 + [False] * 20, 1)
    chall = _arm(tmp_path, "chall", [True] * 20 + [False] * 20, 2)
    write_json({"stale_iterations": 1}, tmp_path / "prev.json")
    m = _promote(tmp_path, champ, chall, tiny_config(), previous=tmp_path / "prev.json")
    assert not m["continue_loop"] and "no promotion for 2" in m["stop_reason"]


def test_regression_stops_the_loop(tmp_path):
    champ = _arm(tmp_path, "champ", [True] * 30 + [False] * 10, 1)
    chall = _arm(tmp_path, "chall", [True] * 10 + [False] * 30, 2)
    m = _promote(tmp_path, champ, chall, tiny_config())
    assert not m["promoted"] and not m["continue_loop"] and m["stop_reason"].startswith("regression")


def test_always_policy(tmp_path):
    champ = _arm(tmp_path, "champ", [True] * 30 + [False] * 10, 1)
    chall = _arm(tmp_path, "chall", [True] * 29 + [False] * 11, 2)
    m = _promote(tmp_path, champ, chall, tiny_config(promote={"policy": "always"}))
    assert m["promoted"]


def test_different_items_are_refused(tmp_path):
    champ = _arm(tmp_path, "champ", [True] * 10, 1)
    chall = _arm(tmp_path, "chall", [True] * 12, 2)
    with pytest.raises(ValueError, match="different items"):
        _promote(tmp_path, champ, chall, tiny_config())


def test_a_loop_that_stopped_stays_stopped_even_when_a_later_iteration_is_better(tmp_path):
    # dvc repro runs the iterations after a stop (no conditions); its champion must be the pipeline's.
    champ = _arm(tmp_path, "champ", [True] * 20 + [False] * 20, 1)
    chall = _arm(tmp_path, "chall", [True] * 38 + [False] * 2, 2)
    write_json({"iteration": 1, "stale_iterations": 2, "continue_loop": False,
                "stop_reason": "no promotion for 2 iteration(s) in a row (patience 2)"}, tmp_path / "prev.json")
    m = _promote(tmp_path, champ, chall, tiny_config(), previous=tmp_path / "prev.json")
    assert not m["promoted"] and not m["continue_loop"] and m["stop_reason"].startswith("no promotion for 2")
    assert "stopped at iteration 1" in m["reason"]
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == {"who": "champ"}
