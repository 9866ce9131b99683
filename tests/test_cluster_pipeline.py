"""The compiled pipeline carries the config's cluster section: every task's image, resources, env and
Kubernetes settings (platform spec), secrets by name only. Checked in the IR that a KFP backend loads."""

from __future__ import annotations

import pytest
import yaml

from flywheel.steps.table import NAMES
from kfp import components

from flywheel.config import parse_config
from flywheel.pipelines.flywheel_pipeline import compile_pipeline

SECRET_VALUE = "hf_SECRETVALUE0123456789"
CLUSTER = {
    "queue": "research",
    "defaults": {"cpu": "2", "memory": "8Gi", "node_selector": {"pool": "cpu"}},
    "steps": {
        "generate": {"gpus": 1, "gpu_type": "nvidia-l4", "memory": "32Gi", "node_selector": {"pool": "gpu"},
                     "tolerations": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}], "retries": 2},
        "train": {"gpus": 4, "gpu_type": "nvidia-h100-80gb", "cpu": "32", "memory": "300Gi", "timeout_s": 21600},
        "evaluate": {"gpus": 1, "gpu_type": "nvidia-l4"},
    },
    "secrets": [{"env": "WANDB_API_KEY", "secret": "wandb", "key": "api-key"},
                {"env": "HF_TOKEN", "secret": "hub", "key": "token"},
                {"env": "AWS_SECRET_ACCESS_KEY", "secret": "object-store", "key": "secret-key"}],
    "model_cache": {"pvc": "model-weights"},
}
# a KFP component is named after its step (the step table's name; configure merges the run form)
COMPONENT_STEP = {n: n for n in (*NAMES, "configure")}


def _compile(tmp_path, monkeypatch, **cluster):
    monkeypatch.setenv("HF_TOKEN", SECRET_VALUE)  # in the compiling user's env: must not reach the IR
    cfg = parse_config({"iterations": 2, "pipeline": {"image": "registry.example/flywheel-python:2.0"},
                        "train": {"launch": {"processes_per_node": 4}},  # one process per GPU of the train pod
                        "cluster": {**CLUSTER, **cluster}})
    path = compile_pipeline(cfg, str(tmp_path / "p.yaml"))
    text = open(path).read()
    ir, platform = yaml.safe_load_all(text)
    return cfg, path, text, ir, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _step(executor: str) -> str:
    name = executor.removeprefix("exec-")
    return COMPONENT_STEP[name.rsplit("-", 1)[0] if name[-1].isdigit() else name]


@pytest.mark.parametrize("shards", [1, 3])
def test_every_task_gets_its_steps_resources_env_and_placement(tmp_path, monkeypatch, shards):
    cfg, path, text, ir, k8s = _compile(tmp_path, monkeypatch, shards=shards)
    assert components.load_component_from_file(path).name == cfg.pipeline.name  # the KFP loader accepts it
    executors = ir["deploymentSpec"]["executors"]
    assert set(executors) == set(k8s)  # every task has a platform spec
    assert {_step(e) for e in executors} >= {"generate", "verify", "train", "evaluate", "record"}
    for name, ex in executors.items():
        step, c = _step(name), ex["container"]
        r = cfg.cluster.resources_for(step)
        assert c["image"] == "registry.example/flywheel-python:2.0"
        res = c["resources"]
        assert (res["resourceCpuRequest"], res["resourceMemoryRequest"]) == (r.cpu, r.memory), name
        if r.gpus:
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert int(res["accelerator"]["resourceCount"]) == r.gpus
            assert k8s[name]["nodeSelector"]["labels"]["cloud.google.com/gke-accelerator"] == r.gpu_type
            assert {"mountPath": "/dev/shm", "medium": "Memory", "volumeName": "dshm"} in k8s[name]["emptyDirMounts"]
        else:
            assert "accelerator" not in res and "emptyDirMounts" not in k8s[name]
        assert k8s[name]["nodeSelector"]["labels"]["pool"] == r.node_selector["pool"]
        assert len(k8s[name].get("tolerations", [])) == len(r.tolerations)
        assert k8s[name]["podMetadata"]["labels"] == {"kueue.x-k8s.io/queue-name": "research"}
        secrets = {(s["secretName"], kv["secretKey"], kv["envVar"]) for s in k8s[name]["secretAsEnv"]
                   for kv in s["keyToEnv"]}
        assert secrets == {("wandb", "api-key", "WANDB_API_KEY"), ("hub", "token", "HF_TOKEN"),
                           ("object-store", "secret-key", "AWS_SECRET_ACCESS_KEY")}
        assert k8s[name]["pvcMount"][0]["constant"] == "model-weights"
        assert {"name": "HF_HOME", "value": "/cache/huggingface"} in c["env"]
        assert ("activeDeadlineSeconds" in k8s[name]) == (step == "train")
    assert SECRET_VALUE not in text
    # generate's retries land on its task spec
    tasks = {**ir["root"]["dag"]["tasks"], **{k: v for c in ir["components"].values()
                                              for k, v in c.get("dag", {}).get("tasks", {}).items()}}
    gen = next(t for t in tasks.values() if t["componentRef"]["name"].startswith("comp-generate"))
    assert gen["retryPolicy"]["maxRetryCount"] == 2


def test_fan_out_shape(tmp_path, monkeypatch):
    _, _, _, ir, _ = _compile(tmp_path, monkeypatch, shards=3)
    # iteration 2 sits in the sub-DAG of promote 1's condition: look at every DAG
    root = {k: v for dag in [ir["root"]["dag"], *(c["dag"] for c in ir["components"].values() if "dag" in c)]
            for k, v in dag["tasks"].items()}
    loops = [t for t in root.values() if "parameterIterator" in t]
    assert len(loops) == 2  # one ParallelFor per iteration
    assert all(t["parameterIterator"]["items"]["raw"] == "[0, 1, 2]" for t in loops)
    merges = [n for n in root if n.startswith("merge-shards")]
    assert len(merges) == 2 and all(root[m]["inputs"]["artifacts"]["verdicts"]["taskOutputArtifact"]["producerTask"]
                                    .startswith("for-loop") for m in merges)


def test_multi_node_train_task_only_launches(tmp_path, monkeypatch):
    steps = {**CLUSTER["steps"], "train": {"gpus": 16, "gpu_type": "nvidia-h100-80gb"}}
    _, _, _, ir, k8s = _compile(tmp_path, monkeypatch, steps=steps,
                                train_job={"gpus_per_node": 8, "shared_pvc": "flywheel-shared"})
    train = ir["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert "accelerator" not in train  # the 16 GPUs go to the TrainJob's 2 nodes, not to the launcher pod
    mounts = {m["constant"]: m["mountPath"] for m in k8s["exec-train"]["pvcMount"]}
    assert mounts["flywheel-shared"] == "/mnt/flywheel-shared"


def test_default_config_compiles_without_kubernetes_settings(tmp_path):
    path = compile_pipeline(parse_config({"iterations": 1}), str(tmp_path / "p.yaml"))
    docs = list(yaml.safe_load_all(open(path)))
    assert len(docs) == 1  # no platform spec: the plain DAG of before
    assert all("resources" not in e["container"] for e in docs[0]["deploymentSpec"]["executors"].values())


def test_multi_node_needs_a_shared_volume():
    with pytest.raises(ValueError, match="shared_pvc"):
        parse_config({"cluster": {"steps": {"train": {"gpus": 16}}}})
