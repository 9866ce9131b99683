# The contract with modules/kubeflow (a second cloud's module provides the same outputs).

output "cluster_name" {
  description = "Name of the GKE cluster (gcloud container clusters get-credentials NAME --region REGION)."
  value       = google_container_cluster.this.name
}

output "cluster_endpoint" {
  description = "HTTPS endpoint of the Kubernetes API."
  value       = "https://${google_container_cluster.this.endpoint}"
}

output "cluster_ca_certificate" {
  description = "PEM CA certificate of the Kubernetes API."
  value       = base64decode(google_container_cluster.this.master_auth[0].cluster_ca_certificate)
  sensitive   = true
}

output "pipeline_root" {
  description = "KFP pipeline root: where every run's artifacts go."
  value       = "gs://${google_storage_bucket.data.name}/kfp"
}

output "dvc_remote" {
  description = "URL for `dvc remote add -d storage URL`."
  value       = "gs://${google_storage_bucket.data.name}/dvc"
}

output "bucket" {
  description = "Name of the data bucket."
  value       = google_storage_bucket.data.name
}

output "image_repository" {
  description = "Registry path for the components' images; pipeline.image = IMAGE_REPOSITORY/flywheel-python:TAG."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "pipeline_service_account_annotations" {
  description = "Annotations that bind the pipeline's Kubernetes service account to its cloud identity."
  value       = { "iam.gke.io/gcp-service-account" = google_service_account.pipeline.email }
}

output "external_secrets_service_account_annotations" {
  description = "Annotations that bind the External Secrets Operator's service account to its cloud identity."
  value       = { "iam.gke.io/gcp-service-account" = google_service_account.external_secrets.email }
}

output "secret_store_provider" {
  description = "The `provider` block of an External Secrets ClusterSecretStore for this cloud's secret manager."
  value       = { gcpsm = { projectID = var.project_id } }
}

output "secrets" {
  description = "Remote secret name => the Kubernetes Secret and key it becomes (for ExternalSecrets)."
  value       = { for k, s in google_secret_manager_secret.this : s.secret_id => var.secrets[k] }
}

output "gpu_node_labels" {
  description = "GPU pool => the node label value a step's cluster.steps.X.gpu_type must name (label cloud.google.com/gke-accelerator)."
  value       = { for k, p in var.gpu_pools : k => p.gpu_type }
}
