output "kfp_api_service" {
  description = "In-cluster KFP API endpoint (what `flywheel trigger` in the CronJob uses)."
  value       = "http://ml-pipeline.${var.namespace}.svc.cluster.local:8888"
}

output "kfp_ui_port_forward" {
  description = "Command that opens the KFP UI on http://localhost:8080."
  value       = "kubectl -n ${var.namespace} port-forward svc/ml-pipeline-ui 8080:80"
}

output "kubernetes_secrets" {
  description = "Kubernetes Secrets the operator keeps in sync, as the flywheel config's cluster.secrets entries name them."
  value       = { for k, s in var.secrets : s.k8s_secret => s.k8s_key }
}

output "kfp_version" {
  description = "Installed Kubeflow Pipelines release."
  value       = var.kfp_version
}

output "trainer_version" {
  description = "Installed Kubeflow Trainer release."
  value       = var.trainer_version
}
