variable "kfp_version" {
  type        = string
  description = "Kubeflow Pipelines release installed from its kustomize manifests (the SDK's v2beta1 client talks to >= 2.0)."
  default     = "2.14.3"
  validation {
    condition     = can(regex("^2\\.[0-9]+\\.[0-9]+$", var.kfp_version))
    error_message = "kfp_version must be a KFP 2.x release such as 2.14.3."
  }
}

variable "trainer_version" {
  type        = string
  description = "Kubeflow Trainer (v2, TrainJob) release; its API is what tests/test_trainjob.py validates against."
  default     = "v2.3.0"
  validation {
    condition     = can(regex("^v2\\.[0-9]+\\.[0-9]+$", var.trainer_version))
    error_message = "trainer_version must be a Trainer v2 release tag such as v2.3.0."
  }
}

variable "external_secrets_version" {
  type        = string
  description = "Helm chart version of the External Secrets Operator."
  default     = "0.20.4"
  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.external_secrets_version))
    error_message = "external_secrets_version must be a chart version such as 0.20.4."
  }
}

variable "namespace" {
  type        = string
  description = "Namespace of KFP (standalone install) and of the pipeline's pods."
  default     = "kubeflow"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a Kubernetes namespace name."
  }
}

variable "pipeline_root" {
  type        = string
  description = "Default pipeline root of runs in the namespace (object-store URL from the cloud module)."
  validation {
    condition     = can(regex("^(gs|s3|minio)://", var.pipeline_root))
    error_message = "pipeline_root must be a gs://, s3:// or minio:// URL."
  }
}

variable "pipeline_service_account_annotations" {
  type        = map(string)
  description = "Annotations for KFP's pipeline-runner service account that bind it to the cloud identity (Workload Identity, IRSA)."
  validation {
    condition     = length(var.pipeline_service_account_annotations) > 0
    error_message = "without an identity binding the pipeline cannot reach the bucket."
  }
}

variable "external_secrets_namespace" {
  type        = string
  description = "Namespace of the External Secrets Operator."
  default     = "external-secrets"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.external_secrets_namespace))
    error_message = "external_secrets_namespace must be a Kubernetes namespace name."
  }
}

variable "external_secrets_service_account_annotations" {
  type        = map(string)
  description = "Annotations that bind the operator's service account to the cloud identity that reads the secrets."
  validation {
    condition     = length(var.external_secrets_service_account_annotations) > 0
    error_message = "the operator needs an identity to read the secret manager."
  }
}

variable "secret_store_provider" {
  type        = any
  description = "The `provider` block of the ClusterSecretStore, from the cloud module (e.g. { gcpsm = { projectID = ... } })."
  validation {
    condition     = length(keys(var.secret_store_provider)) == 1
    error_message = "secret_store_provider must name exactly one provider."
  }
}

variable "secrets" {
  type        = map(object({ k8s_secret = string, k8s_key = string }))
  description = "Remote secret name => Kubernetes Secret and key in the pipeline namespace (named in the flywheel config's cluster.secrets)."
  validation {
    condition     = alltrue([for s in values(var.secrets) : can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", s.k8s_secret))])
    error_message = "k8s_secret must be a Kubernetes Secret name."
  }
}

variable "flywheel_image" {
  type        = object({ name = string, tag = string })
  description = "The components' image (registry path and tag) for flywheel's own workloads (the trigger CronJob); the config's pipeline.image."
  validation {
    condition     = length(var.flywheel_image.name) > 0 && length(var.flywheel_image.tag) > 0
    error_message = "flywheel_image needs a name and a tag."
  }
}

variable "enable_trigger" {
  type        = bool
  description = "Install the `flywheel trigger` CronJob (needs the flywheel-config and flywheel-trigger ConfigMaps, docs/deploy.md)."
  default     = false
}
