"""W&B tracking, offline for real: what the record step logs is read back from wandb's own files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flywheel.io import write_json, write_table
from flywheel.report import record_iteration

from conftest import tiny_config
from wandb_log import read_runs

KEY = "local-0123456789abcdef0123456789abcdef01234567"  # a fake key: must never be written anywhere


def _iteration_files(d: Path, acc: float) -> dict:
    gate = {"enabled": True, "passed": True, "rules": 3, "failed": [], "warnings": ["curated.seed_share"],
            "observed": {"curated.duplicate_rate": 0.01, "curated.seed_share": 0.3}, "seconds": 0.1,
            "hashes": {"output": {"path": "c", "md5": "abc", "size": 1}}}
    write_json({"samples": 4, "duration_s": 1.0}, d / "gen.json")
    write_json({"pass_rate": 0.5, "prompts_with_correct": 1.0, "duration_s": 0.1}, d / "ver.json")
    write_json({"kept": 2, "kept_new": 2, "kept_carried": 0, "kept_seed": 0, "gate": gate, "duration_s": 0.1}, d / "cur.json")
    write_json({"loss": 0.2, "duration_s": 2.0, "steps": 4,  # the Trainer's own curve (train.log_history)
                "log_history": [{"step": 2, "loss": 0.5, "grad_norm": 1.5, "learning_rate": 1e-3},
                                {"step": 4, "loss": 0.2, "grad_norm": 0.7, "learning_rate": 5e-4}]}, d / "train.json")
    write_json({"promoted": True, "p_value": 0.01, "stop_reason": None, "champion_iteration": 1,
                "duration_s": 0.1}, d / "promote.json")
    write_json({"accuracy": acc, "accuracy_by_difficulty": {"1": acc}, "duration_s": 1.0}, d / "ev.json")
    base = {"prompt_id": "a", "prompt": "1+1=", "reference": "2", "difficulty": 1, "prompt_tokens": 4,
            "completion_tokens": 2, "finished": True, "model": "m"}
    verdicts = pd.DataFrame([{**base, "sample_id": 0, "completion": "2", "correct": True, "score": 1.0, "reason": "correct"},
                             {**base, "sample_id": 1, "completion": "3", "correct": False, "score": 0.0, "reason": "wrong"}])
    write_table(verdicts, d / "verdicts.parquet")
    write_table(verdicts.iloc[1:].assign(drop_reason="rejected by verifier: wrong", duplicate_of=""), d / "dropped.parquet")
    write_table(pd.DataFrame({"prompt_id": ["a"], "prompt": ["1+1="], "completion": ["2"], "difficulty": [1],
                              "source": ["self"], "iteration": [1], "score": [1.0]}), d / "curated.parquet")
    (d / "model").mkdir()
    (d / "model" / "config.json").write_text("{}")
    write_table(pd.DataFrame({"prompt_id": ["e"], "prompt": ["2+2="], "difficulty": [1], "correct": [True]}),
                d / "results.parquet")
    return dict(generate=d / "gen.json", verify=d / "ver.json", curate=d / "cur.json", train=d / "train.json",
                promote=d / "promote.json",
                evaluate=d / "ev.json", verdicts=d / "verdicts.parquet", dropped=d / "dropped.parquet",
                curated=d / "curated.parquet", model=d / "model", results=d / "results.parquet")


def test_each_iteration_is_a_wandb_run_of_the_pipeline_group_read_back_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)  # present, but tracking.wandb: offline wins
    monkeypatch.delenv("WANDB_DIR", raising=False)
    cfg = tiny_config(tracking={"wandb": "offline", "log_models": "upload"})
    write_json({"accuracy": 0.25, "accuracy_by_difficulty": {"1": 0.25}, "duration_s": 1.0}, tmp_path / "ev0.json")
    write_json({"seed_rows": 3, "inputs": {"seed_set": {"repo": ".", "path": "s.parquet", "commit": "c0ffee",
                                                        "md5": "d41d"}}}, tmp_path / "prep.json")
    record_iteration(cfg, 0, tmp_path / "s0.json", tmp_path / "r0.html", evaluate=tmp_path / "ev0.json",
                     prepare=tmp_path / "prep.json")
    files = _iteration_files(tmp_path, 0.75)
    summary = record_iteration(cfg, 1, tmp_path / "s1.json", tmp_path / "r1.html", previous_summary=tmp_path / "s0.json",
                               **files)

    assert summary["inputs"]["seed_set"]["commit"] == "c0ffee"
    runs = {it["iteration"]: it["tracking"] for it in summary["iterations"]}
    assert runs[0]["mode"] == runs[1]["mode"] == "offline" and runs[0]["group"] == runs[1]["group"] == summary["run_id"]
    history, artifacts, groups = {}, [], set()
    logged = read_runs(tmp_path / "wandb")
    for run_id, run in logged.items():
        groups.add(run["group"])
        artifacts += [(a["name"], a["type"], a["metadata"]) for a in run["artifacts"]]
    assert groups == {summary["run_id"]}
    last = logged[f"{summary['run_id']}-it1"]
    for row in last["history"]:  # iteration 1's run holds the whole trajectory: a chart over iterations
        if "evaluate/accuracy" in row:
            history.setdefault(int(row["iteration"]), {}).update(row)
    assert last["metrics"]["evaluate/*"] == "iteration" and last["metrics"]["train_curve/*"] == "train_curve/step"
    # the trainer's curve, on the run's step axis
    curve = [(float(r["train_curve/step"]), float(r["train_curve/loss"])) for r in last["history"]
             if "train_curve/loss" in r]
    assert curve == [(2.0, 0.5), (4.0, 0.2)]
    assert float(history[0]["evaluate/accuracy"]) == 0.25 and float(history[1]["evaluate/accuracy"]) == 0.75
    assert float(history[1]["verify/pass_rate"]) == 0.5 and float(history[1]["gates/curate/passed"]) == 1.0
    assert float(history[1]["gates/curate/curated.seed_share"]) == 0.3
    assert {"samples", "gate_results"} <= {k.split("/")[0] for k in history[1]}
    # loop health is charted too, not only buried in the summary
    health = summary["iterations"][1]["health"]
    assert float(history[1]["health/pass@1"]) == pytest.approx(health["pass@1"])
    assert float(history[1]["health/balance_score"]) == pytest.approx(health["balance_score"])
    group = summary["run_id"]
    names = {(n, t) for n, t, _ in artifacts}
    assert {(f"curated-{group}", "dataset"), (f"model-{group}", "model"), (f"eval-results-{group}", "evaluation")} <= names
    lineage = {n: m for n, _, m in artifacts}
    assert lineage[f"model-{group}"]["inputs"]["curated"] == f"curated-{group}:iteration-1"
    assert lineage[f"eval-results-{group}"]["inputs"]["model"] == f"model-{group}:iteration-1"
    manifest = summary["iterations"][1]["manifest"]
    assert manifest["hashes"]["curate.output"]["md5"] == "abc" and manifest["libraries"]["wandb"]
    # the key never lands in a file: summary, report, wandb's own files
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


def test_tracking_disabled_writes_nothing(tmp_path):
    cfg = tiny_config(tracking={"wandb": "disabled"})
    write_json({"accuracy": 0.5, "accuracy_by_difficulty": {"1": 0.5}, "duration_s": 1.0}, tmp_path / "ev0.json")
    s = record_iteration(cfg, 0, tmp_path / "s0.json", tmp_path / "r0.html", evaluate=tmp_path / "ev0.json")
    assert s["iterations"][0]["tracking"] == {"mode": "disabled"} and not (tmp_path / "wandb").exists()


def test_models_are_references_to_the_dvc_remote_and_the_champion_has_the_alias(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_DIR", raising=False)
    remote = tmp_path / "dvc-remote"
    cfg = tiny_config(tracking={"wandb": "offline"}, data={"remote": str(remote)})  # log_models: reference
    (tmp_path / "m0").mkdir()
    (tmp_path / "m0" / "config.json").write_text('{"base": true}')
    write_json({"accuracy": 0.25, "accuracy_by_difficulty": {"1": 0.25}, "duration_s": 1.0}, tmp_path / "ev0.json")
    record_iteration(cfg, 0, tmp_path / "s0.json", tmp_path / "r0.html", evaluate=tmp_path / "ev0.json",
                     model=tmp_path / "m0", store=True)
    files = _iteration_files(tmp_path, 0.75)
    (files["model"] / "model.safetensors").write_bytes(b"\0" * 200_000)  # must not be uploaded to W&B
    summary = record_iteration(cfg, 1, tmp_path / "s1.json", tmp_path / "r1.html",
                               previous_summary=tmp_path / "s0.json", store=True, **files)

    models = {a["metadata"]["iteration"]: a for run in read_runs(tmp_path / "wandb").values()
              for a in run["artifacts"] if a["type"] == "model"}
    assert set(models) == {0, 1}
    for i, art in models.items():
        pointer = summary["iterations"][i]["manifest"]["stored"]["artifacts"]["model"]
        ((_, ref, _),) = art["entries"]  # one entry: the reference, no files
        assert ref.startswith("file://") and ref.endswith(f"{pointer['md5'][:2]}/{pointer['md5'][2:]}")
        assert Path(ref.removeprefix("file://")).is_file()  # the .dir listing DVC pushed
    # the first champion, then the promoted challenger (W&B moves the alias to the newest claimant)
    assert "champion" in models[0]["aliases"] and "champion" in models[1]["aliases"]
    weights = [p for p in (tmp_path / "wandb").rglob("*") if p.is_file() and p.stat().st_size >= 200_000]
    assert not weights, weights


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_auto_falls_back_to_offline_when_the_service_is_unreachable(tmp_path, monkeypatch, capsys):
    import time

    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    write_json({"accuracy": 0.5, "accuracy_by_difficulty": {"1": 0.5}, "duration_s": 1.0}, tmp_path / "ev0.json")
    t0 = time.perf_counter()
    s = record_iteration(tiny_config(tracking={"wandb": "auto"}), 0, tmp_path / "s0.json", tmp_path / "r0.html",
                         evaluate=tmp_path / "ev0.json")
    assert time.perf_counter() - t0 < 30  # wandb itself tried for ~92 s, then failed the step
    assert s["iterations"][0]["tracking"]["mode"] == "offline" and list((tmp_path / "wandb").glob("offline-run-*"))
    assert "cannot be reached" in capsys.readouterr().err
    # 'online' insists: one clear message, at once
    with pytest.raises(ValueError, match="tracking.wandb is 'online' but the W&B service cannot be reached"):
        record_iteration(tiny_config(tracking={"wandb": "online"}), 0, tmp_path / "t0.json", tmp_path / "t0.html",
                         evaluate=tmp_path / "ev0.json")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


def test_service_check_answers_fast_both_ways(monkeypatch):
    import socket
    import time

    from flywheel.tracking import service_unreachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert service_unreachable() is None
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    t0 = time.perf_counter()
    assert "127.0.0.1" in service_unreachable(timeout=1.0) and time.perf_counter() - t0 < 2
