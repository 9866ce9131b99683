variable "project_id" {
  type        = string
  description = "GCP project that hosts the cluster, the bucket, the registry and the secrets."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project id: 6-30 lowercase letters, digits and hyphens."
  }
}

variable "region" {
  type        = string
  description = "Region of the (regional) cluster, the bucket and the registry, e.g. us-central1."
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a GCP region such as us-central1 or europe-west4."
  }
}

variable "name" {
  type        = string
  description = "Prefix of every resource's name (cluster, bucket, service accounts)."
  default     = "flywheel"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,18}$", var.name))
    error_message = "name must be 3-19 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels put on every resource that takes labels (cost attribution)."
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k))])
    error_message = "label keys must be lowercase, start with a letter and be at most 63 characters."
  }
}

variable "gke_min_version" {
  type        = string
  description = "Minimum Kubernetes version of the control plane (the tests validate manifests against it)."
  default     = "1.33"
  validation {
    condition     = can(regex("^1\\.[0-9]{2}", var.gke_min_version))
    error_message = "gke_min_version must look like 1.33 or 1.33.5-gke.1080000."
  }
}

variable "release_channel" {
  type        = string
  description = "GKE release channel: how fast the cluster follows new Kubernetes versions."
  default     = "REGULAR"
  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "master_authorized_cidrs" {
  type        = map(string)
  description = "Networks allowed to reach the Kubernetes API (name => CIDR), e.g. the office or the CI runners."
  validation {
    condition     = length(var.master_authorized_cidrs) > 0 && alltrue([for c in values(var.master_authorized_cidrs) : can(cidrhost(c, 0))])
    error_message = "give at least one valid CIDR; an API open to 0.0.0.0/0 is not an option."
  }
}

variable "subnet_cidr" {
  type        = string
  description = "Primary range of the nodes' subnet."
  default     = "10.10.0.0/20"
  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be a CIDR block."
  }
}

variable "pods_cidr" {
  type        = string
  description = "Secondary range for pod IPs."
  default     = "10.20.0.0/14"
  validation {
    condition     = can(cidrhost(var.pods_cidr, 0))
    error_message = "pods_cidr must be a CIDR block."
  }
}

variable "services_cidr" {
  type        = string
  description = "Secondary range for Service IPs."
  default     = "10.30.0.0/20"
  validation {
    condition     = can(cidrhost(var.services_cidr, 0))
    error_message = "services_cidr must be a CIDR block."
  }
}

variable "master_cidr" {
  type        = string
  description = "The /28 the private control plane uses."
  default     = "172.16.0.0/28"
  validation {
    condition     = can(cidrhost(var.master_cidr, 0)) && endswith(var.master_cidr, "/28")
    error_message = "master_cidr must be a /28 CIDR block."
  }
}

variable "cpu_machine_type" {
  type        = string
  description = "Machine type of the CPU pool (KFP's services, prepare, verify, curate, record)."
  default     = "e2-standard-8"
  validation {
    condition     = length(var.cpu_machine_type) > 0
    error_message = "cpu_machine_type must not be empty."
  }
}

variable "cpu_pool_size" {
  type        = object({ min = number, max = number })
  description = "Autoscaling bounds of the CPU pool, per zone. At least one node keeps KFP's own services up."
  default     = { min = 1, max = 4 }
  validation {
    condition     = var.cpu_pool_size.min >= 1 && var.cpu_pool_size.max >= var.cpu_pool_size.min
    error_message = "cpu_pool_size needs 1 <= min <= max."
  }
}

variable "gpu_pools" {
  type = map(object({
    machine_type   = string
    gpu_type       = string
    gpus_per_node  = number
    max_nodes      = number
    spot           = bool
    zones          = list(string)
  }))
  description = "GPU node pools (name => shape). Each scales to zero when no step asks for its GPUs; cluster.steps.X.gpu_type in the flywheel config selects a pool by gpu_type."
  default = {
    l4 = { machine_type = "g2-standard-16", gpu_type = "nvidia-l4", gpus_per_node = 1, max_nodes = 8, spot = true, zones = [] }
  }
  validation {
    condition     = alltrue([for p in values(var.gpu_pools) : p.gpus_per_node >= 1 && p.max_nodes >= 1])
    error_message = "every GPU pool needs gpus_per_node >= 1 and max_nodes >= 1."
  }
}

variable "secrets" {
  type        = map(object({ k8s_secret = string, k8s_key = string }))
  description = "Secret Manager secrets to create (name => the Kubernetes Secret and key they become). Values are added out of band (`gcloud secrets versions add`), never through Terraform."
  default = {
    wandb-api-key = { k8s_secret = "wandb", k8s_key = "api-key" }
    hf-token      = { k8s_secret = "hub", k8s_key = "token" }
  }
  validation {
    condition     = alltrue([for k, v in var.secrets : can(regex("^[a-zA-Z0-9_-]{1,255}$", k))])
    error_message = "secret names may hold letters, digits, underscores and hyphens."
  }
}

variable "pipeline_namespace" {
  type        = string
  description = "Kubernetes namespace of the pipeline's pods (KFP's own, for a standalone install)."
  default     = "kubeflow"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.pipeline_namespace))
    error_message = "pipeline_namespace must be a Kubernetes namespace name."
  }
}

variable "pipeline_service_account" {
  type        = string
  description = "Kubernetes service account the pipeline's pods run as; bound to the bucket through Workload Identity."
  default     = "pipeline-runner"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.pipeline_service_account))
    error_message = "pipeline_service_account must be a Kubernetes name."
  }
}

variable "external_secrets_namespace" {
  type        = string
  description = "Namespace where the External Secrets Operator runs (its service account reads Secret Manager)."
  default     = "external-secrets"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.external_secrets_namespace))
    error_message = "external_secrets_namespace must be a Kubernetes namespace name."
  }
}

variable "noncurrent_version_days" {
  type        = number
  description = "Days a replaced or deleted object version (artifact, DVC blob) is kept before deletion."
  default     = 30
  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "rbac_security_group" {
  type        = string
  description = "Google Group for Kubernetes RBAC (gke-security-groups@YOUR-DOMAIN), or null without Google Workspace."
  default     = null
  validation {
    condition     = var.rbac_security_group == null || can(regex("^gke-security-groups@", var.rbac_security_group))
    error_message = "rbac_security_group must be named gke-security-groups@YOUR-DOMAIN."
  }
}
