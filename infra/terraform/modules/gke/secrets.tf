# The secrets' containers only: values are added with `gcloud secrets versions add NAME --data-file=-`
# (docs/deploy.md), so they never pass through Terraform or its state.

resource "google_secret_manager_secret" "this" {
  for_each  = var.secrets
  project   = var.project_id
  secret_id = "${var.name}-${each.key}"
  labels    = local.labels
  replication {
    user_managed {
      replicas {
        location = var.region
        customer_managed_encryption {
          kms_key_name = google_kms_crypto_key.data.id
        }
      }
    }
  }
  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_secret_manager_secret_iam_member" "external_secrets" {
  for_each  = google_secret_manager_secret.this
  project   = var.project_id
  secret_id = each.value.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.external_secrets.email}"
}
