# Workload Identity: the pipeline's Kubernetes service account acts as a Google service account that
# may read and write the bucket (artifacts, DVC) and nothing else; the External Secrets Operator's acts
# as one that may read the flywheel secrets only. No key files anywhere.

resource "google_service_account" "pipeline" {
  project      = var.project_id
  account_id   = "${var.name}-pipeline"
  display_name = "flywheel pipeline pods (${var.pipeline_namespace}/${var.pipeline_service_account})"
}

resource "google_storage_bucket_iam_member" "pipeline" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.pipeline.email}"
}

resource "google_service_account_iam_member" "pipeline_wi" {
  service_account_id = google_service_account.pipeline.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.pipeline_namespace}/${var.pipeline_service_account}]"
  depends_on         = [google_container_cluster.this] # the identity pool exists once the cluster does
}

resource "google_service_account" "external_secrets" {
  project      = var.project_id
  account_id   = "${var.name}-secrets"
  display_name = "External Secrets Operator (reads the flywheel secrets)"
}

resource "google_service_account_iam_member" "external_secrets_wi" {
  service_account_id = google_service_account.external_secrets.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.external_secrets_namespace}/external-secrets]"
  depends_on         = [google_container_cluster.this]
}
