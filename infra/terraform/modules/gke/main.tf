# flywheel on GKE: network, KMS, cluster with a CPU pool and GPU pools that scale to zero, the bucket
# for KFP's pipeline root and the DVC remote, an image registry, Workload Identity for the pipeline's
# service account, and Secret Manager secrets for the External Secrets Operator to sync.
# The cloud-agnostic part (KFP, Kubeflow Trainer, secret sync) is modules/kubeflow.

locals {
  labels = merge({ app = "flywheel", managed-by = "terraform" }, var.labels)
  services = [
    "container.googleapis.com", "compute.googleapis.com", "storage.googleapis.com", "cloudkms.googleapis.com",
    "secretmanager.googleapis.com", "artifactregistry.googleapis.com", "file.googleapis.com", "iam.googleapis.com",
  ]
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "apis" {
  for_each           = toset(local.services)
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# --- network: private nodes, egress through Cloud NAT --------------------------------------------------

resource "google_compute_network" "vpc" {
  project                 = var.project_id
  name                    = "${var.name}-vpc"
  auto_create_subnetworks = false
  depends_on              = [google_project_service.apis]
}

# Explicit default-deny for ingress from outside the VPC (GKE adds its own narrower allow rules for the
# control plane and health checks at higher priority).
resource "google_compute_firewall" "deny_external_ingress" {
  project       = var.project_id
  name          = "${var.name}-deny-external-ingress"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  priority      = 65534
  source_ranges = ["0.0.0.0/0"]
  deny {
    protocol = "all"
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_subnetwork" "nodes" {
  project                  = var.project_id
  name                     = "${var.name}-nodes"
  region                   = var.region
  network                  = google_compute_network.vpc.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = var.pods_cidr
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = var.services_cidr
  }
  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "nat" {
  project = var.project_id
  name    = "${var.name}-router"
  region  = var.region
  network = google_compute_network.vpc.id
}

resource "google_compute_router_nat" "nat" {
  project                            = var.project_id
  name                               = "${var.name}-nat"
  router                             = google_compute_router.nat.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"
  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# --- KMS: one key for the bucket, the registry, Secret Manager and GKE's etcd secrets ---------------

resource "google_kms_key_ring" "this" {
  project    = var.project_id
  name       = "${var.name}-keys"
  location   = var.region
  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key" "data" {
  name            = "${var.name}-data"
  key_ring        = google_kms_key_ring.this.id
  rotation_period = "7776000s" # 90 days
  labels          = local.labels
  lifecycle {
    prevent_destroy = true # destroying the key makes every object encrypted with it unreadable
  }
}

resource "google_project_service_identity" "secretmanager" {
  provider = google-beta
  project  = var.project_id
  service  = "secretmanager.googleapis.com"
}

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

resource "google_kms_crypto_key_iam_member" "service_agents" {
  for_each = {
    gcs            = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
    gke            = "serviceAccount:service-${data.google_project.this.number}@container-engine-robot.iam.gserviceaccount.com"
    registry       = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
    secret_manager = "serviceAccount:${google_project_service_identity.secretmanager.email}"
  }
  crypto_key_id = google_kms_crypto_key.data.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}
