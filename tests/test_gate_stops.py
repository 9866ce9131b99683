"""A broken iteration stops at the step that broke, with one message, and leaves every artifact in place:
a curated set with evaluation prompts inside (contamination) and a verifier that passes everything."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flywheel.cli import main
from flywheel.gates import GateError
from flywheel.io import read_table, write_table
from flywheel.steps.curate import curate_samples

from conftest import TINY

TESTS = Path(__file__).parent


def test_contaminated_curated_set_stops_curate(tmp_path, cfg, prepared):
    evals = read_table(prepared["eval"])
    leaked = evals.head(3)  # three held-out problems answered correctly by "the model"
    rows = [{**r, "sample_id": 0, "completion": r["reference"], "prompt_tokens": 8, "completion_tokens": 4,
             "finished": True, "model": "m", "correct": True, "score": 1.0, "reason": "correct"}
            for r in leaked.to_dict("records")]
    clean = {"prompt_id": "x", "prompt": "123+456=", "reference": "579", "difficulty": 3, "sample_id": 0,
             "completion": "579", "prompt_tokens": 8, "completion_tokens": 4, "finished": True, "model": "m",
             "correct": True, "score": 1.0, "reason": "correct"}
    write_table(pd.DataFrame(rows + [clean]), tmp_path / "verdicts.parquet")
    with pytest.raises(GateError) as info:
        curate_samples(tmp_path / "verdicts.parquet", prepared["seed"], tmp_path / "curated.parquet",
                       tmp_path / "dropped.parquet", cfg, 1, eval_path=prepared["eval"])
    msg = str(info.value)
    assert msg.startswith("quality gate 'curated' failed")
    assert "curated.contamination_exact: no training prompt is an evaluation prompt: observed 3 of" in msg
    assert repr(leaked["prompt"].iloc[0]) in msg and "threshold <= 0% of rows (gates.max_contaminated_share)" in msg
    # nothing deleted: the step's outputs and its input are there to inspect, with the validation result
    assert len(read_table(tmp_path / "curated.parquet")) >= 4 and (tmp_path / "dropped.parquet").exists()
    assert (tmp_path / "curated.gate.json").exists() and "FAIL" in (tmp_path / "curated.gate.md").read_text()
    assert len(read_table(tmp_path / "verdicts.parquet")) == 4
    # the same curated rows without the evaluation set to compare against are not checked for contamination
    m = curate_samples(tmp_path / "verdicts.parquet", prepared["seed"], tmp_path / "c2.parquet",
                       tmp_path / "d2.parquet", cfg, 1)
    assert m["gate"]["passed"] and not any("contamination" in r for r in m["gate"]["observed"])


@pytest.mark.slow
def test_a_verifier_that_passes_everything_stops_the_pipeline_at_verify(tmp_path, monkeypatch, capfd):
    config = {**TINY, "iterations": 1, "verify": {"verifier": "verifiers:pass_all"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    # kfp.local runs each task as a subprocess: let them import the test verifier
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out"), "--no-cache"]) == 1
    out = capfd.readouterr()
    log = out.out + out.err
    assert "quality gate 'verdicts' failed" in log
    assert "verdicts.pass_rate: verifier pass rate inside the window" in log and "observed 1; threshold 0.0..0.98" in log
    root = next((tmp_path / "out" / "kfp").iterdir())
    # earlier steps finished and kept their artifacts; the failing step's output is there with its report;
    # nothing after verify ran
    assert len(read_table(root / "generate" / "samples")) == 24 * 3
    assert read_table(root / "verify" / "verdicts")["correct"].all()
    assert "| FAIL | `verdicts.pass_rate`" in (root / "verify" / "verdicts.gate.md").read_text()
    # (tasks off verify's path, such as evaluate 0, may or may not have run: kfp.local orders them freely)
    assert (root / "init-model" / "model" / "config.json").exists() and (root / "prompts" / "prompts").exists()
    assert not (root / "curate").exists() and not (root / "train").exists()
