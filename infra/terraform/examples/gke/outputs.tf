output "get_credentials" {
  description = "Command that points kubectl at the cluster."
  value       = "gcloud container clusters get-credentials ${module.gke.cluster_name} --region ${var.region} --project ${var.project_id}"
}

output "image_repository" {
  description = "Push the components' images here; set pipeline.image to IMAGE_REPOSITORY/flywheel-python-cuda:TAG."
  value       = module.gke.image_repository
}

output "pipeline_root" {
  description = "Where run artifacts land."
  value       = module.gke.pipeline_root
}

output "dvc_remote" {
  description = "DVC remote URL for the project's datasets."
  value       = module.gke.dvc_remote
}

output "secrets" {
  description = "Secret Manager secrets to fill (gcloud secrets versions add NAME --data-file=-) and the Kubernetes Secret each becomes."
  value       = module.gke.secrets
}

output "kfp_ui" {
  description = "How to open the KFP UI."
  value       = module.kubeflow.kfp_ui_port_forward
}

output "kfp_api_in_cluster" {
  description = "KFP API endpoint inside the cluster."
  value       = module.kubeflow.kfp_api_service
}
