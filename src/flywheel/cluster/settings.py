"""The config's `cluster` section: where and how each step's pod runs on Kubernetes.

Everything here is fixed when the pipeline is compiled (it lands in the KFP platform spec, not in a run
parameter), and `kfp.local` ignores it: the same config runs a laptop loop and a GPU cluster. Secrets are
named (Kubernetes Secret name and key), never given: their values never enter a config, a pipeline
parameter or a log.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Steps a `cluster.steps` entry may name: the components of components/steps.py.
STEP_NAMES = ("prepare_data", "init_model", "sample_prompts", "generate", "verify", "merge_shards", "curate",
              "train", "evaluate", "record")


class _Section(BaseModel):
    # Same rules as flywheel.config.Section (defined here to keep this module free of import cycles).
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Toleration(_Section):
    key: str | None = Field(None, description="Taint key to tolerate, e.g. 'nvidia.com/gpu' (None with Exists: every taint).")
    operator: Literal["Equal", "Exists"] = Field("Exists", description="'Exists' matches any value; 'Equal' needs `value`.")
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="Taint effect to tolerate (None: all).")


class SecretEnv(_Section):
    env: str = Field(description="Environment variable set in the pod, e.g. WANDB_API_KEY.")
    secret: str = Field(description="Name of the Kubernetes Secret in the run's namespace, e.g. 'wandb'.")
    key: str = Field(description="Key inside that Secret, e.g. 'api-key'.")


class Resources(_Section):
    cpu: str | None = Field(None, description="CPU request, e.g. '4' or '500m' (None: the namespace default).")
    cpu_limit: str | None = Field(None, description="CPU limit (None: none).")
    memory: str | None = Field(None, description="Memory request, e.g. '16Gi'.")
    memory_limit: str | None = Field(None, description="Memory limit (None: none; set it equal to `memory` for Guaranteed QoS).")
    gpus: int = Field(0, ge=0, description="GPUs per pod. For `train`, more than `train_job.gpus_per_node` makes the train step launch a multi-node TrainJob.")
    gpu_type: str | None = Field(None, description="GPU model, e.g. 'nvidia-l4' or 'nvidia-h100-80gb'; a node selector on `cluster.gpu_type_label`.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Extra node labels the pod must match.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pod tolerates (e.g. a dedicated GPU pool's).")
    timeout_s: int | None = Field(None, gt=0, description="Kill the pod after this many seconds (activeDeadlineSeconds).")
    retries: int = Field(0, ge=0, le=10, description="Retries of a failed pod (spot preemption, OOM), with a 60 s backoff.")


class ModelCache(_Section):
    pvc: str | None = Field(None, description="PersistentVolumeClaim holding downloaded model weights (HF_HOME), shared by every step; None: no cache.")
    mount_path: str = Field("/cache/huggingface", description="Where the claim is mounted; HF_HOME points there.")


class TrainJobSettings(_Section):
    gpus_per_node: int = Field(8, gt=0, description="GPUs one node has. `steps.train.gpus` above this launches a Kubeflow Trainer TrainJob over ceil(gpus / gpus_per_node) nodes.")
    runtime: str = Field("torch-distributed", description="ClusterTrainingRuntime the TrainJob uses (installed with Kubeflow Trainer).")
    shared_pvc: str | None = Field(None, description="ReadWriteMany claim through which the train step hands data and checkpoints to the TrainJob's nodes (required for multi-node training).")
    shared_mount_path: str = Field("/mnt/flywheel-shared", description="Where `shared_pvc` is mounted, in the train step and on every node.")
    poll_s: float = Field(15.0, gt=0, description="Seconds between status checks of the TrainJob.")
    timeout_s: int = Field(24 * 3600, gt=0, description="Fail (and delete) the TrainJob after this many seconds.")


class ClusterConfig(_Section):
    namespace: str = Field("kubeflow", description="Kubernetes namespace of runs (KFP profile namespace in multi-user installs).")
    service_account: str = Field("pipeline-runner", description="Service account the pipeline's pods (and TrainJobs) run as; bound to the cloud identity by infra/terraform.")
    shards: int = Field(1, ge=1, le=256, description="Fan generate and verify out over this many pods (dsl.ParallelFor), each on a slice of the prompts; 1 keeps one pod each. Also used by `flywheel run`.")
    queue: str | None = Field(None, description="Kueue LocalQueue name; every pod gets the label kueue.x-k8s.io/queue-name (None: no Kueue).")
    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource name of a GPU.")
    gpu_type_label: str = Field("cloud.google.com/gke-accelerator", description="Node label that carries the GPU model (GKE; 'nvidia.com/gpu.product' with NVIDIA GPU feature discovery).")
    defaults: Resources = Field(default_factory=Resources, description="Resources and placement of every step's pod.")
    steps: dict[str, Resources] = Field(default_factory=dict, description="Per-step overrides of `defaults`, keyed by step (generate, verify, train, evaluate, ...); fields given replace the default's, node selectors and tolerations add to it.")
    secrets: list[SecretEnv] = Field(default_factory=list, description="Kubernetes Secret keys exposed as environment variables in every pod (W&B key, object-store credentials, hub token).")
    model_cache: ModelCache = Field(default_factory=ModelCache, description="A shared volume for model weights.")
    train_job: TrainJobSettings = Field(default_factory=TrainJobSettings, description="Multi-node training through Kubeflow Trainer.")

    @model_validator(mode="after")
    def _check(self) -> "ClusterConfig":
        unknown = sorted(set(self.steps) - set(STEP_NAMES))
        if unknown:
            raise ValueError(f"cluster.steps has unknown step(s) {', '.join(unknown)}; steps are {', '.join(STEP_NAMES)}")
        if self.trainjob_nodes > 1 and not self.train_job.shared_pvc:
            raise ValueError(f"cluster.steps.train.gpus is {self.resources_for('train').gpus}, more than "
                             f"cluster.train_job.gpus_per_node ({self.train_job.gpus_per_node}), so training runs as a "
                             "multi-node TrainJob; set cluster.train_job.shared_pvc to a ReadWriteMany claim")
        envs = [s.env for s in self.secrets]
        dupes = sorted({e for e in envs if envs.count(e) > 1})
        if dupes:
            raise ValueError(f"cluster.secrets sets {', '.join(dupes)} more than once")
        return self

    def resources_for(self, step: str) -> Resources:
        """`defaults` with the step's overrides applied (node selectors merged, tolerations added)."""
        override = self.steps.get(step)
        if override is None:
            return self.defaults
        merged = self.defaults.model_dump()
        for name in override.model_fields_set:
            merged[name] = getattr(override, name)
        merged["node_selector"] = {**self.defaults.node_selector, **override.node_selector}
        merged["tolerations"] = [t.model_dump() for t in (*self.defaults.tolerations, *override.tolerations)]
        return Resources.model_validate(merged)

    @property
    def trainjob_nodes(self) -> int:
        """Nodes the train step needs: 1 means it trains in its own pod; more means a TrainJob."""
        gpus = self.resources_for("train").gpus
        return max(1, math.ceil(gpus / self.train_job.gpus_per_node))
