"""End to end: `flywheel run` drives the real KFP pipeline through kfp.local (subprocess per task)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from flywheel.cli import main
from flywheel.io import read_table

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    # data.remote: each iteration's curated rows and model are pushed there (the output is in no DVC repo)
    (d / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "data": {"remote": str(d / "dvc-remote")}}))
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as console:  # what a person sees (docs/data.md: the console)
        assert main(["run", str(d / "tiny.yaml"), "--out", str(d / "out")]) == 0
    return {"dir": d, "out": d / "out", "seconds": time.perf_counter() - t0, "console": console.getvalue()}


def test_the_console_has_one_line_per_step_and_ends_with_the_table(run):
    """`flywheel run` prints one line per task, where the logs are, and the per-iteration table last; every
    task's full log is a file. The demo's count follows from its pipeline's tasks (make demo: <= 60 lines)."""
    from flywheel.config import load_config
    from flywheel.console import task_names
    from flywheel.pipelines.flywheel_pipeline import build_pipeline

    lines = run["console"].rstrip("\n").split("\n")
    steps = [ln for ln in lines if re.match(r"^iter \d+ ", ln)]
    tasks = len(set(task_names(build_pipeline(load_config(run["dir"] / "tiny.yaml"))).values()))
    assert len(steps) == tasks == 5 + 8 * 2  # configure, prepare, init, evaluate 0, record 0; 8 per iteration
    assert all(re.search(r" ok ", ln) and re.search(r"\d+\.\d s$", ln) for ln in steps), steps
    assert re.search(r"verify\s+ok\s+pass \d\.\d\d", run["console"]) and "train       ok      loss" in run["console"]
    assert len(list((run["out"] / "logs").glob("iter-*.log"))) == tasks
    train_log = (run["out"] / "logs" / "iter-2-train.log").read_text()
    assert "executor_input" in train_log and "executor_input" not in run["console"]
    assert lines[-1].split()[0] == "2" and lines[-4].split()[0] == "iteration"  # the table is the last thing
    fixed = len(lines) - len(steps) - 3  # header, paths, table head
    demo = len(set(task_names(build_pipeline(load_config(ROOT / "examples" / "arithmetic.yaml"))).values()))
    assert fixed + demo + 4 <= 60, (fixed, demo)  # make demo: 3 iterations, 4 table rows


def test_summary_has_every_iteration_and_step(run):
    summary = json.loads((run["out"] / "summary.json").read_text())
    its = summary["iterations"]
    assert [it["iteration"] for it in its] == [0, 1, 2]
    assert set(its[0]) >= {"iteration", "evaluate", "durations"}
    for it in its[1:]:
        assert {"generate", "verify", "curate", "train", "evaluate"} <= set(it)
        assert 0 <= it["verify"]["pass_rate"] <= 1 and it["curate"]["kept"] > 0 and it["train"]["loss"] >= 0
        assert set(it["evaluate"]["accuracy_by_difficulty"]) == {"1", "2", "3"}
        assert all(v is not None and v >= 0 for v in it["durations"].values())
    # iteration i trains from the champion and compares its model with the champion's
    champion = its[1]["promote"]["champion_iteration"]
    assert its[2]["evaluate"]["previous_accuracy"] == its[champion]["evaluate"]["accuracy"]
    assert its[1]["promote"]["promoted"] == (champion == 1)
    assert {"balance_score", "pass@1", "pass@3", "separation_auc"} <= set(its[1]["health"])
    # accumulate: iteration 2 trains on iteration 1's rows too
    assert its[2]["curate"]["kept_carried"] == its[1]["curate"]["kept_new"]


def test_report_and_model(run):
    html = (run["out"] / "report.html").read_text()
    # accuracy, per difficulty (lines and heatmap), pass rate, health, training data
    # accuracy (with intervals), per difficulty (lines and heatmap), pass rate, health, training data, timings
    assert html.count("<img src=\"data:image/png;base64,") >= 7 and "Sample rows" in html and "Time per step" in html
    assert "Held-out accuracy per difficulty and iteration" in html
    from flywheel.model import load_model

    model, tok = load_model(run["out"] / "model")
    assert model.config.model_type == "llama"


def test_artifacts_are_parquet_with_the_documented_columns(run):
    from flywheel.schema import CURATED_COLUMNS, DROPPED_COLUMNS, VERDICT_COLUMNS

    root = next((run["out"] / "kfp").iterdir())
    assert len(read_table(root / "verify-2" / "verdicts", VERDICT_COLUMNS)) == 24 * 3
    read_table(root / "curate" / "curated", CURATED_COLUMNS)
    read_table(root / "curate-2" / "dropped", DROPPED_COLUMNS)


def test_gates_tracking_and_manifest_in_a_pipeline_run(run):
    """Every gated step passed and published its report (KFP Markdown output); summary, report and the
    W&B offline runs show the gates; every iteration has its manifest."""
    root = next((run["out"] / "kfp").iterdir())
    for task, gate in (("generate", "samples"), ("verify-2", "verdicts"), ("curate", "curated"), ("evaluate", "results")):
        assert (root / task / "gate").read_text().startswith(f"# Quality gate `{gate}`: passed")
    summary = json.loads((run["out"] / "summary.json").read_text())
    for it in summary["iterations"][1:]:
        assert all(it[k]["gate"]["passed"] for k in ("generate", "verify", "curate", "evaluate"))
        assert it["manifest"]["hashes"]["curate.output"]["md5"] and it["tracking"]["mode"] == "offline"
    assert "Quality gates" in (run["out"] / "report.html").read_text()
    assert len(list((run["out"] / "wandb").glob("offline-run-*"))) == 3


def test_iteration_data_and_model_come_back_from_the_dvc_remote_by_their_pointers(run, tmp_path):
    """data.store: every iteration's curated rows and model went into the DVC remote; `flywheel fetch` gets
    iteration 2's back, by the pointer in summary.json, into an empty folder, byte for byte."""
    from flywheel.versions import content_hash

    summary_path = run["out"] / "summary.json"
    its = json.loads(summary_path.read_text())["iterations"]
    # iteration 0 has no curated rows; its model (init_model's, the first champion) is stored for W&B's reference
    assert set(its[0]["manifest"]["stored"]["artifacts"]) == {"model"}
    for it in its[1:]:
        stored, hashes = it["manifest"]["stored"], it["manifest"]["hashes"]
        assert stored["remote"] == str(run["dir"] / "dvc-remote") and stored["cache"] is None
        assert stored["artifacts"]["curated"]["md5"] == hashes["curate.output"]["md5"]
        assert stored["artifacts"]["model"]["md5"] == hashes["evaluate.model"]["md5"]  # DVC's .dir md5 = ours
    for artifact in ("curated", "model"):
        assert main(["fetch", str(summary_path), "--iteration", "2", "--artifact", artifact,
                     "--out", str(tmp_path / "it2")]) == 0
    original = its[2]["manifest"]["hashes"]
    assert (tmp_path / "it2" / "curated.parquet").read_bytes() == open(original["curate.output"]["path"], "rb").read()
    fetched, trained = tmp_path / "it2" / "model", original["evaluate.model"]["path"]
    assert sorted(p.name for p in fetched.rglob("*")) == sorted(p.name for p in Path(trained).rglob("*"))
    assert content_hash(fetched)["md5"] == content_hash(trained)["md5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["it2"]  # nothing else written


def test_rerun_resumes_from_the_cache(run, capsys):
    before = (run["out"] / "summary.json").read_text()
    t0 = time.perf_counter()
    assert main(["run", str(run["dir"] / "tiny.yaml"), "--out", str(run["out"])]) == 0
    seconds = time.perf_counter() - t0
    summary_after = json.loads((run["out"] / "summary.json").read_text())
    assert summary_after == json.loads(before)  # every step came from the cache: same numbers
    assert seconds < run["seconds"] / 2


def test_a_stop_criterion_ends_the_loop(tmp_path):
    """min_delta 1.0 can never be met: promote 1 keeps the champion, patience 1 stops the run there."""
    cfg = {**TINY, "promote": {"min_delta": 1.0, "patience": 1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [it["iteration"] for it in summary["iterations"]] == [0, 1]  # iteration 2 was skipped
    last = summary["iterations"][-1]["promote"]
    assert not last["promoted"] and "no promotion for 1" in last["stop_reason"]
    root = next((tmp_path / "out" / "kfp").iterdir())
    assert not list(root.glob("generate-2"))


def test_a_run_killed_during_training_resumes_with_the_same_command(tmp_path):
    """SIGKILL the whole run while iteration 1 trains; the same command then reuses every finished step
    (kfp.local cache), starts training again, and finishes."""
    import os
    import signal
    import subprocess
    import sys

    cfg = {**TINY, "iterations": 1, "train": {"max_steps": 300, "batch_size": 16}}  # long enough to be caught
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "flywheel", "run", str(tmp_path / "c.yaml"), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("kfp/*/train")):
        assert proc.poll() is None, "the run ended before training started"
        time.sleep(0.5)
    time.sleep(3)  # well inside the 400 training steps
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    assert not list(out.glob("kfp/*/train/model/config.json"))  # no half-written checkpoint

    # --verbose: kfp.local's own stream, whose "Executing task" lines say which tasks ran (not cached)
    done = subprocess.run([*cmd, "--verbose"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    executed = re.findall(r"Executing task \x1b\[96m'([\w-]+)'", done.stdout + done.stderr)
    # training ran again; the steps it depends on came from the cache. Iteration 0's evaluate (which
    # kfp.local runs before train) was seen to run again once on CI, under load: a kfp.local cache miss
    # not yet understood, and not an upstream of train, so not asserted here
    assert "train" in executed, executed
    assert not {"configure", "prepare", "init-model", "prompts", "generate", "verify", "curate"} & set(executed)
    summary = json.loads((out / "summary.json").read_text())
    assert [it["iteration"] for it in summary["iterations"]] == [0, 1]
