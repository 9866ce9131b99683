"""Multi-node training: the train step as a Kubeflow Trainer v2 `TrainJob`.

When `cluster.steps.train.gpus` exceeds `cluster.train_job.gpus_per_node`, one pod cannot hold the job.
The train component then becomes a launcher (its own pod needs no GPU):

1. copy the starting model, the curated rows and the config onto a ReadWriteMany volume
   (`cluster.train_job.shared_pvc`) that every node mounts;
2. create a TrainJob (`trainjob_manifest`, a pure function) on the `torch-distributed` runtime: N nodes x
   M GPUs, each node running `torchrun --module flywheel train ...` (the runtime sets torchrun's PET_*
   rendezvous variables, `runtime_env`), with the step's node selector, tolerations, secrets (by name),
   volumes and Kueue queue. Every rank then finds WORLD_SIZE/RANK set and trains as that rank, whatever the
   recipe (sft, dpo, spin) and `train.deepspeed` (ZeRO-2/3): it starts no launcher of its own
   (flywheel/train/distributed.py). Its checkpoints go to the shared claim, so a restarted node resumes;
3. poll its status, logging every change; fail the KFP step with the job's own reason (`trainjob_state`);
4. copy the checkpoint back into the step's output, and always delete the TrainJob and the scratch dir.

Outside a cluster (no service-account token), or when one node suffices, `train_model_or_trainjob` runs
the ordinary in-process train step: `flywheel run` on a laptop never needs Kubernetes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from flywheel.config import Config
from flywheel.io import atomic_dir, read_json
from flywheel.steps import step

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
MANAGER = "flywheel.ai/train-launcher"  # owner of our runtimePatches entry
NODE = "node"  # the trainer's replicated job and container in Kubeflow Trainer's torch runtimes
# What the torch-distributed runtime's torch plugin puts into every node's environment (Kubeflow Trainer
# pkg/constants: TorchEnvNumNodes, ...); torchrun reads PET_<ARG> as its --<arg> default, so the command
# carries no rendezvous flags.
RUNTIME_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SA_DIR / "token").is_file()


def trainjob_manifest(cfg: Config, *, name: str, namespace: str, image: str, job_dir: str) -> dict:
    """The TrainJob that trains `job_dir/model-in` on `job_dir/curated.parquet` into `job_dir/model-out`."""
    cl, tj = cfg.cluster, cfg.cluster.train_job
    r = cl.resources_for("train")
    nodes = cl.trainjob_nodes
    gpus_per_node = -(-r.gpus // nodes)
    requests = {k: v for k, v in (("cpu", r.cpu), ("memory", r.memory)) if v}
    limits = {k: v for k, v in (("cpu", r.cpu_limit), ("memory", r.memory_limit)) if v}
    limits[cl.gpu_resource] = str(gpus_per_node)
    env = [{"name": s.env, "valueFrom": {"secretKeyRef": {"name": s.secret, "key": s.key}}} for s in cl.secrets]
    volumes = [{"name": "shared", "persistentVolumeClaim": {"claimName": tj.shared_pvc}},
               {"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    mounts = [{"name": "shared", "mountPath": tj.shared_mount_path}, {"name": "dshm", "mountPath": "/dev/shm"}]
    if cl.model_cache.pvc:
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {"claimName": cl.model_cache.pvc}})
        mounts.append({"name": "model-cache", "mountPath": cl.model_cache.mount_path})
        env.append({"name": "HF_HOME", "value": cl.model_cache.mount_path})
    node_selector = dict(r.node_selector)
    if r.gpu_type:
        node_selector[cl.gpu_type_label] = r.gpu_type
    pod_spec = {"serviceAccountName": cl.service_account, "volumes": volumes,
                "containers": [{"name": NODE, "volumeMounts": mounts}]}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if r.tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in r.tolerations]
    labels = {"app.kubernetes.io/name": "flywheel", "app.kubernetes.io/component": "train",
              "app.kubernetes.io/managed-by": "flywheel"}
    if cl.queue:
        labels["kueue.x-k8s.io/queue-name"] = cl.queue
    command = ["torchrun", "--module", "flywheel", "train", f"{job_dir}/config.json", "--model", f"{job_dir}/model-in",
               "--data", f"{job_dir}/curated.parquet", "--out", f"{job_dir}/model-out",
               "--metrics", f"{job_dir}/metrics.json"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "runtimeRef": {"name": tj.runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "activeDeadlineSeconds": tj.timeout_s,
            "trainer": {"image": image, "command": command, "numNodes": nodes, "numProcPerNode": gpus_per_node,
                        "resourcesPerNode": {"requests": requests, "limits": limits}, "env": env},
            "runtimePatches": [{"manager": MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
                {"name": NODE, "template": {"spec": {"template": {"metadata": {"labels": labels},
                                                                  "spec": pod_spec}}}}]}}}}],
        },
    }


def runtime_env(manifest: dict, node_rank: int, master_addr: str, master_port: int = 29500) -> dict[str, str]:
    """The PET_* variables the torch-distributed runtime gives node `node_rank` of this TrainJob (the master
    address is node 0's pod, `<name>-node-0-0.<name>`, on a cluster)."""
    t = manifest["spec"]["trainer"]
    return dict(zip(RUNTIME_ENV, (str(t["numNodes"]), str(t["numProcPerNode"]), str(node_rank), master_addr,
                                  str(master_port))))


def job_config(cfg: Config, job_dir: str | Path) -> Config:
    """The config the TrainJob's ranks read: checkpoints on the shared claim (every node sees them, and a
    restarted node resumes from them)."""
    train = cfg.train.model_copy(update={"checkpoint_dir": str(Path(job_dir) / "checkpoints")})
    return cfg.model_copy(update={"train": train})


def trainjob_state(obj: dict) -> tuple[str, str]:
    """('Complete' | 'Failed' | 'Suspended' | 'Running' | 'Pending', detail) from a TrainJob's conditions."""
    conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []
                  if c.get("status") == "True"}
    for state in ("Failed", "Complete", "Suspended"):  # Suspended: e.g. waiting for Kueue to admit it
        if state in conditions:
            c = conditions[state]
            return state, ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
    jobs = (obj.get("status") or {}).get("jobsStatus") or []
    if any(j.get("active") for j in jobs):
        return "Running", ", ".join(f"{j['name']}: {j.get('active', 0)} active, {j.get('ready', 0)} ready" for j in jobs)
    return "Pending", ""


class TrainJobFailed(RuntimeError):
    pass


def run_trainjob(start_dir: str | Path, data_path: str | Path, out_dir: str | Path, cfg: Config, *,
                 api=None, namespace: str | None = None, log=print) -> dict:
    """Train through a TrainJob and wait for it (see the module docstring); returns the train metrics."""
    from kubernetes import client, config as kube_config
    from kubernetes.client.exceptions import ApiException

    if api is None:
        kube_config.load_incluster_config()
        api = client.CustomObjectsApi()
    if namespace is None:
        ns_file = SA_DIR / "namespace"
        namespace = ns_file.read_text().strip() if ns_file.is_file() else cfg.cluster.namespace
    from flywheel.train.distributed import batch_split

    tj = cfg.cluster.train_job
    r = cfg.cluster.resources_for("train")
    batch_split(cfg.train, -(-r.gpus // cfg.cluster.trainjob_nodes) * cfg.cluster.trainjob_nodes)  # before GPUs wait
    name = f"flywheel-train-{uuid.uuid4().hex[:10]}"
    job_dir = Path(tj.shared_mount_path) / "trainjobs" / name
    job_dir.mkdir(parents=True)
    created = False
    try:
        shutil.copytree(start_dir, job_dir / "model-in")
        shutil.copyfile(data_path, job_dir / "curated.parquet")
        (job_dir / "config.json").write_text(job_config(cfg, job_dir).to_json())
        manifest = trainjob_manifest(cfg, name=name, namespace=namespace, image=cfg.pipeline.image, job_dir=str(job_dir))
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
        created = True
        trainer = manifest["spec"]["trainer"]
        log(f"TrainJob {namespace}/{name}: {trainer['numNodes']} nodes x {trainer['numProcPerNode']} GPUs "
            f"(runtime {tj.runtime})", flush=True)
        deadline, last = time.monotonic() + tj.timeout_s, None
        while True:
            state, detail = trainjob_state(api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
            if (state, detail) != last:
                log(f"TrainJob {name}: {state}{' - ' + detail if detail else ''}", flush=True)
                last = (state, detail)
            if state == "Complete":
                break
            if state == "Failed":
                raise TrainJobFailed(f"TrainJob {namespace}/{name} failed: {detail or 'no reason given'} "
                                     f"(kubectl -n {namespace} logs -l jobset.sigs.k8s.io/jobset-name={name})")
            if time.monotonic() > deadline:
                raise TrainJobFailed(f"TrainJob {namespace}/{name} did not finish in {tj.timeout_s} s "
                                     "(cluster.train_job.timeout_s); deleted")
            time.sleep(tj.poll_s)
        if not (job_dir / "model-out").is_dir():
            raise TrainJobFailed(f"TrainJob {name} completed but wrote no checkpoint to {job_dir / 'model-out'}")
        with atomic_dir(out_dir) as tmp:
            shutil.copytree(job_dir / "model-out", tmp, dirs_exist_ok=True)
        metrics = read_json(job_dir / "metrics.json", "train metrics")
        metrics.update(trainjob=name, nodes=trainer["numNodes"], gpus_per_node=trainer["numProcPerNode"])
        return metrics
    finally:
        if created:
            try:
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                    body=client.V1DeleteOptions(propagation_policy="Foreground"))
            except ApiException as err:
                if err.status != 404:
                    log(f"warning: could not delete TrainJob {namespace}/{name}: {err.status} {err.reason}")
        shutil.rmtree(job_dir, ignore_errors=True)


@step
def train_model_or_trainjob(model_dir: str | Path, data_path: str | Path, out_dir: str | Path, cfg: Config) -> dict:
    """The train step: in this process, or as a multi-node TrainJob when the config asks for more GPUs
    than one node has and we run inside a cluster."""
    from flywheel.steps.train import train_model

    if cfg.cluster.trainjob_nodes > 1:
        if in_cluster():
            metrics = run_trainjob(model_dir, data_path, out_dir, cfg)
            metrics["init_from"] = str(model_dir)
            return metrics
        print(f"train: the config asks for {cfg.cluster.resources_for('train').gpus} GPUs "
              f"({cfg.cluster.trainjob_nodes} nodes); not in a cluster, so training here in-process", flush=True)
    return train_model(model_dir, data_path, out_dir, cfg)


def check_placement(cfg: Config) -> None:
    """Compile-time check that the GPUs the config asks for can run what it asks of them; raises ConfigError
    with the field to change. (At a step's start the same is checked against the devices it sees:
    `vllm_backend.select_backend`, `distributed.check_devices`.)"""
    from flywheel.config import ConfigError

    cl = cfg.cluster
    decoding = ["generate", "evaluate"] + (["propose"] if cfg.propose.enabled else [])
    if cfg.generate.backend == "vllm":
        for name in decoding:
            if cl.resources_for(name).gpus == 0:
                raise ConfigError(f"generate.backend is 'vllm' but cluster.steps.{name}.gpus is 0: vLLM needs a CUDA GPU "
                                  f"in every decoding step's pod ({', '.join(decoding)}); give it "
                                  f"cluster.steps.{name}.gpus: 1 (and the CUDA image as pipeline.image), or set "
                                  "generate.backend: auto")
    if cfg.train.recipe == "grpo" and cfg.train.grpo.use_vllm and cl.resources_for("train").gpus == 0:
        raise ConfigError("train.grpo.use_vllm is true but cluster.steps.train.gpus is 0: vLLM rollouts need a CUDA "
                          "GPU in the train pod; give it cluster.steps.train.gpus, or set train.grpo.use_vllm: false")
    gpus, per_node, procs = cl.resources_for("train").gpus, cl.train_job.gpus_per_node, cfg.train.launch.processes_per_node
    if gpus and cl.trainjob_nodes == 1 and procs != gpus:
        raise ConfigError(f"train.launch.processes_per_node is {procs} but cluster.steps.train.gpus gives the train pod "
                          f"{gpus} GPU(s): one process per GPU; set train.launch.processes_per_node: {gpus}")
    if procs > per_node:
        raise ConfigError(f"train.launch.processes_per_node is {procs}, more GPUs than a node has "
                          f"(cluster.train_job.gpus_per_node: {per_node}); use at most {per_node} per node and ask "
                          "for more with cluster.steps.train.gpus (a multi-node TrainJob)")
