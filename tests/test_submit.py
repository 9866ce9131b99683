"""`flywheel submit | upload | schedule` against a KFP v2beta1 REST contract server (tests/kfp_contract.py).

A contract test, not a cluster test: the server checks requests the way the KFP API server does and
records them; no pipeline runs. What is sent is the real kfp.Client's traffic.
"""

from __future__ import annotations

import json

import pytest
import yaml

from flywheel.cli import main

from kfp_contract import KfpContract, check_pipeline_spec

SECRET = "sk-live-THIS-MUST-NEVER-LEAVE-THE-ENV"
CONFIG = {
    "iterations": 1,
    "pipeline": {"name": "flywheel-contract", "image": "registry.example/flywheel-python:1.2.3"},
    "cluster": {"secrets": [{"env": "WANDB_API_KEY", "secret": "wandb", "key": "api-key"}],
                "steps": {"train": {"gpus": 1, "gpu_type": "nvidia-l4"}}},
}


@pytest.fixture()
def kfp(monkeypatch, tmp_path):
    server = KfpContract()
    monkeypatch.setenv("WANDB_API_KEY", SECRET)  # present in the submitter's env: must not be sent
    monkeypatch.setenv("KFP_TOKEN", "token-for-the-api")
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    yield server, str(tmp_path / "c.yaml")
    server.close()


def _stdout_url(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1].strip()


def test_submit_creates_a_run_with_the_spec_and_no_secret(kfp, capsys):
    server, cfg = kfp
    assert main(["submit", cfg, "--host", server.url, "--run-name", "nightly-1"]) == 0
    (run,) = server.runs.values()
    assert _stdout_url(capsys) == f"{server.url}/#/runs/details/{run['run_id']}"
    assert run["display_name"] == "nightly-1" and run["service_account"] == "pipeline-runner"
    spec = check_pipeline_spec(run["pipeline_spec"])
    assert spec.pipeline_info.name == "flywheel-contract"
    images = {e["container"]["image"] for e in run["pipeline_spec"]["pipeline_spec"]["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/flywheel-python:1.2.3"}
    params = run["runtime_config"]["parameters"]
    assert set(params) == {"config"} and json.loads(params["config"])["pipeline"]["name"] == "flywheel-contract"
    k8s = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train"]["secretAsEnv"][0]["secretName"] == "wandb"  # by name...
    assert SECRET not in server.raw()  # ...never by value
    auth = [{k.lower(): v for k, v in r["headers"].items()}.get("authorization") for r in server.requests]
    assert auth and set(auth) == {"Bearer token-for-the-api"}
    (exp,) = server.experiments.values()
    assert exp["display_name"] == "flywheel" and run["experiment_id"] == exp["experiment_id"]


def test_upload_publishes_a_version_whose_parameters_the_ui_can_show(kfp, capsys):
    server, cfg = kfp
    assert main(["upload", cfg, "--host", server.url, "--version", "v1"]) == 0
    assert main(["upload", cfg, "--host", server.url, "--version", "v2"]) == 0
    (pipeline,) = server.pipelines.values()  # made once, then versions added
    names = sorted(v["display_name"] for v in server.versions.values())
    assert names == ["flywheel-contract", "flywheel-contract v1", "flywheel-contract v2"]
    v2 = next(v for v in server.versions.values() if v["display_name"].endswith("v2"))
    assert _stdout_url(capsys) == (f"{server.url}/#/pipelines/details/{pipeline['pipeline_id']}"
                                   f"/version/{v2['pipeline_version_id']}")
    # every parameter of the run form: typed, defaulted, described
    params = v2["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]
    assert params and all(p["parameterType"] and "defaultValue" in p and p["description"] for p in params.values())
    assert SECRET not in server.raw() and all(SECRET not in u for u in server.uploads)


def test_schedule_creates_a_recurring_run_one_at_a_time_without_backfill(kfp, capsys):
    server, cfg = kfp
    assert main(["schedule", cfg, "--host", server.url, "--cron", "0 0 3 * * *", "--version", "v7"]) == 0
    (job,) = server.recurring.values()
    assert _stdout_url(capsys) == f"{server.url}/#/recurringrun/details/{job['recurring_run_id']}"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True and job["mode"] == "ENABLE"
    version = server.versions[job["pipeline_version_reference"]["pipeline_version_id"]]
    assert version["display_name"] == "flywheel-contract v7"
    assert set(job["runtime_config"]["parameters"]) == {"config"} and SECRET not in server.raw()


def test_five_field_cron_is_refused_before_any_request(kfp, capsys):
    server, cfg = kfp
    assert main(["schedule", cfg, "--host", server.url, "--cron", "0 3 * * *"]) == 2
    assert "6 fields, seconds first" in capsys.readouterr().err and server.requests == []


def test_unreachable_backend_is_one_clear_line(kfp, capsys, monkeypatch):
    import logging
    import socket

    # urllib3 logs each retry; after other tests a root handler can hold a stream capture already closed,
    # whose "--- Logging error ---" is the test run's pollution, not what a fresh `flywheel submit` prints
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(logging, "raiseExceptions", False)

    _, cfg = kfp
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["submit", cfg, "--host", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach KFP" in err and "Traceback" not in err
