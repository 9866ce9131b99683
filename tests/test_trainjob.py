"""Multi-node training through a Kubeflow Trainer TrainJob.

- The manifest (a pure function) is checked against Kubeflow Trainer's own generated API models
  (kubeflow-trainer-api: every field known, every type right) and its pod parts against the Kubernetes
  schemas of a pinned version with kubernetes-validate (strict: unknown fields are errors).
- The launcher runs against a loopback server speaking the Kubernetes custom-objects REST contract
  (a contract test, not a cluster): on success the server plays one node and runs the manifest's own
  command line (without torchrun) in this process, so the command, paths and hand-back are real.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kubernetes_validate
import pytest
from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

from flywheel.cluster.trainjob import (TrainJobFailed, check_placement, run_trainjob, runtime_env, trainjob_manifest,
                                      trainjob_state)
from flywheel.config import parse_config

from conftest import TINY, two_ranks

K8S_VERSION = "1.33"  # the GKE version infra/terraform pins (gke_min_version)
CLUSTER = {
    "queue": "research",
    "steps": {"train": {"gpus": 16, "gpu_type": "nvidia-h100-80gb", "cpu": "96", "memory": "1500Gi",
                        "tolerations": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}},
    "train_job": {"gpus_per_node": 8, "shared_pvc": "flywheel-shared", "poll_s": 0.05},
    "secrets": [{"env": "WANDB_API_KEY", "secret": "wandb", "key": "api-key"}],
    "model_cache": {"pvc": "model-weights"},
}


def _cfg(tmp_path=None, **cluster):
    data = {**TINY, "cluster": {**CLUSTER, **cluster}}
    if tmp_path is not None:
        data["cluster"]["train_job"] = {**CLUSTER["train_job"], "shared_mount_path": str(tmp_path / "shared")}
    return parse_config(data)


def _pod_of(manifest: dict) -> dict:
    """The node pod the TrainJob's patch and trainer section describe, as a core/v1 Pod."""
    patch = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    tpl = patch["template"]["spec"]["template"]
    trainer = manifest["spec"]["trainer"]
    spec = json.loads(json.dumps(tpl["spec"]))
    spec["containers"][0].update(image=trainer["image"], command=trainer["command"], env=trainer["env"],
                                 resources=trainer["resourcesPerNode"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "node-0", **tpl["metadata"]}, "spec": spec}


def test_manifest_is_a_valid_trainjob_with_the_steps_placement():
    cfg = _cfg()
    m = trainjob_manifest(cfg, name="flywheel-train-abc", namespace="team-a", image="reg.example/flywheel-python-cuda:1",
                          job_dir="/mnt/flywheel-shared/trainjobs/flywheel-train-abc")
    parsed = TrainerV1alpha1TrainJob.from_dict(m)
    assert parsed.to_dict() == m  # Trainer's API models know every field we set, with the right types
    kubernetes_validate.validate(_pod_of(m), K8S_VERSION, strict=True)
    bad = _pod_of(m)
    bad["spec"]["containers"][0]["volumeMount"] = []  # a typo must not pass: the check is not vacuous
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    t = m["spec"]["trainer"]
    assert (t["numNodes"], t["numProcPerNode"], t["resourcesPerNode"]["limits"]["nvidia.com/gpu"]) == (2, 8, "8")
    assert t["command"][:4] == ["torchrun", "--module", "flywheel", "train"]
    assert m["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "research"
    pod = _pod_of(m)["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["serviceAccountName"] == "pipeline-runner"
    assert {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v} == \
        {"flywheel-shared", "model-weights"}
    assert {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}}} in t["env"]


@pytest.mark.parametrize("status, expected", [
    ({}, ("Pending", "")),
    ({"jobsStatus": [{"name": "node", "active": 2, "ready": 2, "failed": 0, "succeeded": 0, "suspended": 0}]},
     ("Running", "node: 2 active, 2 ready")),
    ({"conditions": [{"type": "Suspended", "status": "True", "reason": "Suspended", "message": "waiting for Kueue"}]},
     ("Suspended", "Suspended: waiting for Kueue")),
    ({"conditions": [{"type": "Created", "status": "True"}, {"type": "Complete", "status": "True", "reason": "JobsCompleted"}]},
     ("Complete", "JobsCompleted")),
    ({"conditions": [{"type": "Complete", "status": "False"},
                     {"type": "Failed", "status": "True", "reason": "JobsFailed", "message": "node-1 OOMKilled"}]},
     ("Failed", "JobsFailed: node-1 OOMKilled")),
])
def test_state_from_conditions(status, expected):
    assert trainjob_state({"status": status}) == expected


class KubeContract:
    """Loopback Kubernetes API, custom objects only: create, get, delete TrainJobs. `node` plays the job."""

    def __init__(self, node):
        self.objects, self.calls, self.node = {}, [], node
        contract = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status, obj):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _name(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                assert parts[:5] == ["apis", "trainer.kubeflow.org", "v1alpha1", "namespaces", "team-a"], parts
                assert parts[5] == "trainjobs"
                return parts[6] if len(parts) > 6 else None

            def do_POST(self):
                obj = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                contract.calls.append(("POST", self._name(), obj))
                TrainerV1alpha1TrainJob.from_dict(obj)  # what the API server's schema would check
                contract.objects[obj["metadata"]["name"]] = obj
                self._reply(201, obj)

            def do_GET(self):
                name = self._name()
                contract.calls.append(("GET", name, None))
                obj = contract.objects[name]
                obj.setdefault("status", contract.node(obj))
                self._reply(200, obj)

            def do_DELETE(self):
                name = self._name()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                contract.calls.append(("DELETE", name, body))
                contract.objects.pop(name, None)
                self._reply(200, {"kind": "Status", "status": "Success"})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def api(self):
        from kubernetes import client

        conf = client.Configuration()
        conf.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        return client.CustomObjectsApi(client.ApiClient(conf))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_launcher_runs_the_manifests_command_and_cleans_up(tmp_path, prepared):
    from flywheel.cli import main
    from flywheel.io import write_table
    from flywheel.model import load_model
    import pandas as pd

    cfg = _cfg(tmp_path, steps={"train": {"gpus": 16}})
    seed = pd.read_parquet(prepared["seed"]).head(64)
    rows = seed.assign(source="seed", iteration=0, score=1.0)
    write_table(rows, tmp_path / "curated.parquet")

    def one_node(obj):  # run the node's command as the TrainJob's single rank, minus the torchrun launcher
        cmd = obj["spec"]["trainer"]["command"]
        assert cmd[:3] == ["torchrun", "--module", "flywheel"]
        assert main(cmd[3:] + ["--set", "train.max_steps=2"]) == 0
        return {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted"}]}

    kube = KubeContract(one_node)
    try:
        metrics = run_trainjob(prepared["model"], tmp_path / "curated.parquet", tmp_path / "out", cfg,
                               api=kube.api(), namespace="team-a", log=lambda *a, **k: None)
    finally:
        kube.close()
    assert metrics["steps"] == 2 and metrics["nodes"] == 2 and metrics["trainjob"].startswith("flywheel-train-")
    load_model(tmp_path / "out")  # the checkpoint came back
    verbs = [c[0] for c in kube.calls]
    assert verbs[0] == "POST" and verbs[-1] == "DELETE" and kube.calls[-1][2]["propagationPolicy"] == "Foreground"
    assert list((tmp_path / "shared" / "trainjobs").iterdir()) == []  # scratch removed


def test_launcher_fails_with_the_jobs_reason_and_cleans_up(tmp_path, prepared):
    cfg = _cfg(tmp_path)
    failed = {"conditions": [{"type": "Failed", "status": "True", "reason": "JobsFailed",
                              "message": "node-1: OOMKilled"}]}
    kube = KubeContract(lambda obj: failed)
    try:
        with pytest.raises(TrainJobFailed, match="JobsFailed: node-1: OOMKilled"):
            run_trainjob(prepared["model"], prepared["seed"], tmp_path / "out", cfg, api=kube.api(),
                         namespace="team-a", log=lambda *a, **k: None)
    finally:
        kube.close()
    assert [c[0] for c in kube.calls] == ["POST", "GET", "DELETE"]
    assert not (tmp_path / "out").exists() and list((tmp_path / "shared" / "trainjobs").iterdir()) == []


@two_ranks
@pytest.mark.slow
def test_two_cpu_ranks_train_through_the_trainjobs_own_command_and_env(tmp_path, prepared):
    """The rank side of a TrainJob for real: 2 nodes x 1 process, each node started as the torch-distributed
    runtime starts it (the manifest's command, its env, the PET_* variables), ZeRO-2 on CPU (gloo)."""
    import os
    import signal
    import subprocess
    import sys

    import pandas as pd
    import torch

    from flywheel.io import write_table
    from flywheel.model import load_model
    from flywheel.train.distributed import free_port

    cfg = parse_config({**TINY, "train": {"max_steps": 4, "batch_size": 16, "learning_rate": 3e-3,
                                          "deepspeed": "zero2", "save_steps": 0},
                        "cluster": {"steps": {"train": {"gpus": 2}},
                                    "train_job": {"gpus_per_node": 1, "shared_pvc": "flywheel-shared", "poll_s": 0.05,
                                                  "shared_mount_path": str(tmp_path / "shared")}}})
    write_table(pd.read_parquet(prepared["seed"]).head(64).assign(source="seed", iteration=0, score=1.0),
                tmp_path / "curated.parquet")
    port, seen = free_port(), {}

    def two_nodes(obj):
        trainer = obj["spec"]["trainer"]
        seen["command"] = trainer["command"]
        env = {**os.environ, **{e["name"]: e["value"] for e in trainer["env"] if "value" in e},
               "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
               "GLOO_SOCKET_IFNAME": "lo"}  # both "nodes" are this machine (pods would use their own address)
        env.pop("WORLD_SIZE", None), env.pop("RANK", None)
        procs = [subprocess.Popen(trainer["command"], env={**env, **runtime_env(obj, i, "127.0.0.1", port)},
                                  stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"node-{i}.log", "w"),
                                  start_new_session=True)
                 for i in range(trainer["numNodes"])]
        try:
            rcs = [p.wait(timeout=600) for p in procs]
        finally:  # a hung node (torchrun and its rank) must not outlive the test
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
        if any(rcs):
            return {"conditions": [{"type": "Failed", "status": "True", "reason": "JobsFailed",
                                    "message": f"node exit codes {rcs}: " + (tmp_path / "node-0.log").read_text()[-3000:]}]}
        return {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted"}]}

    kube = KubeContract(two_nodes)
    try:
        metrics = run_trainjob(prepared["model"], tmp_path / "curated.parquet", tmp_path / "out", cfg,
                               api=kube.api(), namespace="team-a", log=lambda *a, **k: None)
    finally:
        kube.close()
    assert seen["command"][:4] == ["torchrun", "--module", "flywheel", "train"]  # no rendezvous flags: PET_*
    # world 2 = the ranks trained as torchrun's world; a second launcher per rank would have made worlds of 1
    assert (metrics["world_size"], metrics["zero_stage"], metrics["steps"], metrics["nodes"]) == (2, 2, 4, 2)
    assert metrics["loss"] < metrics["loss_first"]
    before, _ = load_model(prepared["model"])
    after, _ = load_model(tmp_path / "out")
    changed = [not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values())]
    assert all(changed)
    assert list((tmp_path / "shared" / "trainjobs").iterdir()) == []


def test_placement_asks_for_what_the_gpus_can_run(tmp_path):
    from flywheel.config import ConfigError
    from flywheel.pipelines.flywheel_pipeline import compile_pipeline
    from flywheel.train.distributed import check_devices

    vllm_no_gpu = parse_config({**TINY, "generate": {**TINY["generate"], "backend": "vllm"},
                                "cluster": {"steps": {"generate": {"gpus": 1}}}})
    with pytest.raises(ConfigError, match=r"generate.backend is 'vllm' but cluster.steps.evaluate.gpus is 0"):
        compile_pipeline(vllm_no_gpu, str(tmp_path / "p.yaml"))
    assert not (tmp_path / "p.yaml").exists()
    idle = parse_config({**TINY, "cluster": {"steps": {"train": {"gpus": 4}}}})
    with pytest.raises(ConfigError, match="train.launch.processes_per_node is 1 but cluster.steps.train.gpus"):
        check_placement(idle)
    too_many = parse_config({**TINY, "train": {"launch": {"processes_per_node": 16}},
                             "cluster": {"steps": {"train": {"gpus": 32}}, "train_job": {"shared_pvc": "x"}}})
    with pytest.raises(ConfigError, match="more GPUs than a node has"):
        check_placement(too_many)
    grpo_vllm = parse_config({**TINY, "train": {"recipe": "grpo", "batch_size": 6, "grpo": {"use_vllm": True}}})
    with pytest.raises(ConfigError, match="train.grpo.use_vllm is true but cluster.steps.train.gpus is 0"):
        check_placement(grpo_vllm)
    with pytest.raises(ValueError, match="train.grpo.use_vllm is true but (vllm is not installed|no CUDA GPU)"):
        check_devices(grpo_vllm.train)  # at the step's start, on this machine (no vLLM, no GPU)
    check_placement(parse_config({**TINY, "train": {"launch": {"processes_per_node": 4}},
                                  "cluster": {"steps": {"train": {"gpus": 4}}}}))  # consistent: no error
