variable "project_id" {
  type        = string
  description = "GCP project to deploy into."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project id."
  }
}

variable "region" {
  type        = string
  description = "GCP region, e.g. us-central1."
  default     = "us-central1"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a GCP region."
  }
}

variable "master_authorized_cidrs" {
  type        = map(string)
  description = "Who may reach the Kubernetes API (name => CIDR)."
  validation {
    condition     = length(var.master_authorized_cidrs) > 0
    error_message = "give at least one network."
  }
}

variable "image_tag" {
  type        = string
  description = "Tag of the components' image pushed to the registry this creates (infra/docker)."
  default     = "0.1.0"
  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a valid image tag."
  }
}
