# One bucket: KFP's pipeline root (gs://BUCKET/kfp) and the DVC remote (gs://BUCKET/dvc). Private
# (uniform access, public access prevented), versioned, encrypted with the module's KMS key.

resource "google_storage_bucket" "access_logs" {
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name}-access-logs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels
  versioning {
    enabled = true
  }
  encryption {
    default_kms_key_name = google_kms_crypto_key.data.id
  }
  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type = "Delete"
    }
  }
  # checkov:skip=CKV_GCP_62:This bucket receives the access logs of the data bucket; logging it into itself would loop.
  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_storage_bucket" "data" {
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels
  versioning {
    enabled = true # a DVC remote and pipeline artifacts must survive an accidental overwrite
  }
  encryption {
    default_kms_key_name = google_kms_crypto_key.data.id
  }
  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = var.name
  format        = "DOCKER"
  description   = "flywheel components' images (infra/docker)"
  kms_key_name  = google_kms_crypto_key.data.id
  labels        = local.labels
  docker_config {
    immutable_tags = true # a tag the pipeline names always means the same image
  }
  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}
