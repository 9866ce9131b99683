"""Kubernetes placement of the pipeline's tasks, from the config's `cluster` section (kfp-kubernetes).

`placed(components, cfg)` wraps every component so that the task it makes gets its step's resources,
node selectors, tolerations, Kueue label, secrets (as env vars, by Secret name and key) and the model
cache volume. The pipeline body stays one task per statement; all of this lands in the compiled IR
(`resources`, `accelerator`) and its Kubernetes platform spec, and `kfp.local` ignores it.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from kfp import kubernetes

from flywheel.config import Config

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def place(task, step: str, cfg: Config):
    """Apply `cfg.cluster`'s settings for `step` to a KFP task; returns the task."""
    cl = cfg.cluster
    r = cl.resources_for(step)
    if step == "train" and cl.trainjob_nodes > 1:
        # The train task only launches and watches a TrainJob: the GPUs go to the TrainJob's nodes.
        r = cl.defaults.model_copy(update={"timeout_s": None, "gpus": 0})
        kubernetes.mount_pvc(task, pvc_name=cl.train_job.shared_pvc, mount_path=cl.train_job.shared_mount_path)
    if r.cpu:
        task.set_cpu_request(r.cpu)
    if r.cpu_limit:
        task.set_cpu_limit(r.cpu_limit)
    if r.memory:
        task.set_memory_request(r.memory)
    if r.memory_limit:
        task.set_memory_limit(r.memory_limit)
    if r.gpus:
        task.set_accelerator_type(cl.gpu_resource).set_accelerator_limit(r.gpus)
        # NCCL and dataloader workers need more shared memory than the container default of 64 MiB.
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
        if r.gpu_type:
            kubernetes.add_node_selector(task, cl.gpu_type_label, r.gpu_type)
    for key, value in r.node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    for t in r.tolerations:
        kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value, effect=t.effect)
    if r.timeout_s:
        kubernetes.set_timeout(task, r.timeout_s)
    if r.retries:
        task.set_retry(num_retries=r.retries, backoff_duration="60s")
    if cl.queue:
        kubernetes.add_pod_label(task, QUEUE_LABEL, cl.queue)
    by_secret: dict[str, dict[str, str]] = defaultdict(dict)
    for s in cl.secrets:
        by_secret[s.secret][s.key] = s.env
    for secret, key_to_env in by_secret.items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=key_to_env)
    if cl.model_cache.pvc:
        kubernetes.mount_pvc(task, pvc_name=cl.model_cache.pvc, mount_path=cl.model_cache.mount_path)
        task.set_env_variable("HF_HOME", cl.model_cache.mount_path)
    return task


def placed(components: SimpleNamespace, cfg: Config) -> SimpleNamespace:
    """The same components, each calling `place` on the task it creates, by its step's name in the step table
    (`cluster.steps` keys: 'init-model' for the component `init_model`)."""

    def wrap(name, component):
        def make_task(*args, **kwargs):
            return place(component(*args, **kwargs), name.replace("_", "-"), cfg)
        return make_task

    return SimpleNamespace(**{name: wrap(name, comp) for name, comp in vars(components).items()})
