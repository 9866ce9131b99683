"""`flywheel trigger`: new data, schedule and regression causes; one run per cause, ever; every decision
recorded with its reasons. Runs are submitted to the KFP REST contract server (tests/kfp_contract.py)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from flywheel.cli import main
from flywheel.cluster.trigger import TriggerError, data_revision

from kfp_contract import KfpContract

DAY = 24 * 3600


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _dvc_commit(repo, md5):
    """Commit a .dvc file as `dvc add data/prompts.parquet` writes it (DVC 3 format)."""
    (repo / "data").mkdir(exist_ok=True)
    (repo / "data" / "prompts.parquet.dvc").write_text(yaml.safe_dump(
        {"outs": [{"md5": md5, "size": 1234, "hash": "md5", "path": "prompts.parquet"}]}))
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", f"data {md5[:6]}")


@pytest.fixture()
def env(tmp_path, monkeypatch):
    server = KfpContract()
    monkeypatch.setenv("HOME", str(tmp_path))
    repo = tmp_path / "data-repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _dvc_commit(repo, "a" * 32)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"iterations": 1, "pipeline": {"name": "fw"}}))
    yield server, repo, tmp_path
    server.close()


def _trigger(capsys, server, tmp_path, *extra):
    rc = main(["trigger", str(tmp_path / "c.yaml"), "--host", server.url, "--state", str(tmp_path / "state"), *extra])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def test_new_data_submits_once_per_dataset_version(env, capsys):
    server, repo, tmp_path = env
    data = ["--data-repo", str(repo), "--data-file", "data/prompts.parquet.dvc"]
    first = _trigger(capsys, server, tmp_path, *data)
    assert first["submitted"] and first["causes"][0]["key"] == "data:" + "a" * 32
    assert len(server.runs) == 1
    again = _trigger(capsys, server, tmp_path, *data)
    assert not again["submitted"] and again["causes"] == [] and "data unchanged" in again["notes"][0]
    _dvc_commit(repo, "b" * 32)
    third = _trigger(capsys, server, tmp_path, *data)
    assert third["submitted"] and "aaaaaaaaaaaa -> bbbbbbbbbbbb" in third["causes"][0]["why"]
    assert len(server.runs) == 2
    log = [json.loads(line) for line in (tmp_path / "state" / "decisions.jsonl").read_text().splitlines()]
    assert [d["submitted"] for d in log] == [True, False, True]


def test_lost_state_does_not_resubmit_a_run_that_exists(env, capsys):
    server, repo, tmp_path = env
    data = ["--data-repo", str(repo), "--data-file", "data/prompts.parquet.dvc"]
    _trigger(capsys, server, tmp_path, *data)
    (tmp_path / "state" / "state.json").unlink()
    again = _trigger(capsys, server, tmp_path, *data)
    assert not again["submitted"] and "already exists on the backend" in again["notes"][-1]
    assert len(server.runs) == 1


def test_schedule_and_regression(env, capsys):
    from flywheel.cluster.trigger import run_trigger
    from flywheel.config import parse_config

    server, _, tmp_path = env
    cfg = parse_config({"pipeline": {"name": "fw"}})

    state = tmp_path / "st"

    def trigger(**kw):
        return run_trigger(cfg, server.url, state, **kw)

    d1 = trigger(every_hours=24, now=10 * DAY)
    d2 = trigger(every_hours=24, now=10 * DAY + 3600)
    d3 = trigger(every_hours=24, now=11 * DAY + 1)
    assert [d["submitted"] for d in (d1, d2, d3)] == [True, False, True]
    assert "last run 1.0 h ago" in d2["notes"][0]
    fresh = tmp_path / "fresh.json"
    fresh.write_text(json.dumps({"accuracy": 0.95}))
    ok = trigger(fresh_eval=str(fresh), baseline_accuracy=0.96, now=11 * DAY + 2)
    assert not ok["submitted"] and "no regression" in ok["notes"][0]
    fresh.write_text(json.dumps({"accuracy": 0.80}))
    bad = trigger(fresh_eval=str(fresh), now=11 * DAY + 3)  # baseline remembered
    assert bad["submitted"] and "0.800 < baseline 0.960" in bad["causes"][0]["why"]
    same = trigger(fresh_eval=str(fresh), now=11 * DAY + 4)
    assert not same["submitted"] and same["notes"][0].startswith("already submitted for regression:")
    assert len(server.runs) == 3


def test_data_revision_of_a_stage_output_in_dvc_lock(env):
    _, repo, _ = env
    (repo / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"prepare": {
        "cmd": "flywheel prepare ...", "outs": [{"path": "data/seed.parquet", "md5": "c" * 32, "size": 9}]}}}))
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "lock")
    assert data_revision(str(repo), "dvc.lock:data/seed.parquet") == "c" * 32
    assert data_revision(str(repo), "data/prompts.parquet.dvc", "HEAD~1") == "a" * 32
    # a repository given by URL is cloned (shallow) at its default branch or at a branch/tag
    assert data_revision(f"file://{repo}", "dvc.lock:data/seed.parquet") == "c" * 32


def test_dry_run_and_bad_inputs(env, capsys):
    server, repo, tmp_path = env
    d = _trigger(capsys, server, tmp_path, "--every-hours", "6", "--dry-run")
    assert d["causes"] and not d["submitted"] and server.runs == {} and server.requests == []
    with pytest.raises(TriggerError, match="expected one DVC output"):
        data_revision(str(repo), "data/prompts.parquet.dvc:nope", "HEAD")
    assert main(["trigger", str(tmp_path / "c.yaml"), "--host", server.url, "--state", str(tmp_path / "s")]) == 2
    assert "nothing to check" in capsys.readouterr().err
