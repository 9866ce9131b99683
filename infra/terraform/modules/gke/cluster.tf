# Regional, private GKE cluster. CPU pool: KFP's services and the CPU steps. GPU pools: min 0 nodes, so
# an idle platform pays for no GPU; the cluster autoscaler adds a node when a pod asks for its GPU type.

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-nodes"
  display_name = "flywheel GKE nodes (logs, metrics, image pulls only)"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset(["roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer",
  "roles/stackdriver.resourceMetadata.writer", "roles/artifactregistry.reader"])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "this" {
  # checkov:skip=CKV_GCP_12:Network policies are enforced by Dataplane V2 (datapath_provider ADVANCED_DATAPATH); GKE rejects the separate network_policy block with it.
  project             = var.project_id
  name                = var.name
  location            = var.region
  network             = google_compute_network.vpc.id
  subnetwork          = google_compute_subnetwork.nodes.id
  min_master_version  = var.gke_min_version
  resource_labels     = local.labels
  deletion_protection = true

  # Node pools are managed below; GKE needs a default pool at creation only.
  remove_default_node_pool = true
  initial_node_count       = 1

  release_channel {
    channel = var.release_channel
  }
  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }
  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }
  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false # reachable from master_authorized_cidrs only
    master_ipv4_cidr_block  = var.master_cidr
  }
  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_cidrs
      content {
        display_name = cidr_blocks.key
        cidr_block   = cidr_blocks.value
      }
    }
  }
  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }
  database_encryption {
    state    = "ENCRYPTED"
    key_name = google_kms_crypto_key.data.id
  }
  datapath_provider           = "ADVANCED_DATAPATH" # Dataplane V2: network policies enforced
  enable_intranode_visibility = true
  enable_shielded_nodes       = true
  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }
  addons_config {
    gcp_filestore_csi_driver_config {
      enabled = true # ReadWriteMany volumes: TrainJob hand-off, model-weights cache
    }
    gce_persistent_disk_csi_driver_config {
      enabled = true
    }
  }
  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }
  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
  }
  dynamic "authenticator_groups_config" {
    for_each = var.rbac_security_group == null ? [] : [var.rbac_security_group]
    content {
      security_group = authenticator_groups_config.value
    }
  }
  node_config {
    # Only the bootstrap node; it is removed (remove_default_node_pool) but is checked like the others.
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    metadata = { disable-legacy-endpoints = "true" }
  }
  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_container_node_pool" "cpu" {
  project  = var.project_id
  name     = "cpu"
  cluster  = google_container_cluster.this.id
  location = var.region
  autoscaling {
    min_node_count = var.cpu_pool_size.min
    max_node_count = var.cpu_pool_size.max
  }
  management {
    auto_repair  = true
    auto_upgrade = true
  }
  node_config {
    machine_type    = var.cpu_machine_type
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    labels          = merge(local.labels, { pool = "cpu" })
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    metadata = { disable-legacy-endpoints = "true" }
  }
}

resource "google_container_node_pool" "gpu" {
  for_each       = var.gpu_pools
  project        = var.project_id
  name           = "gpu-${each.key}"
  cluster        = google_container_cluster.this.id
  location       = var.region
  node_locations = length(each.value.zones) > 0 ? each.value.zones : null
  autoscaling {
    # Scale to zero: GPUs cost money only while a step runs on them.
    min_node_count = 0
    max_node_count = each.value.max_nodes
  }
  management {
    auto_repair  = true
    auto_upgrade = true
  }
  node_config {
    machine_type    = each.value.machine_type
    spot            = each.value.spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    # GKE taints GPU nodes nvidia.com/gpu=present:NoSchedule and adds the toleration to pods that
    # request nvidia.com/gpu, so CPU pods never land on (and keep awake) a GPU node.
    labels = merge(local.labels, { pool = "gpu-${each.key}" })
    guest_accelerator {
      type  = each.value.gpu_type
      count = each.value.gpus_per_node
      gpu_driver_installation_config {
        gpu_driver_version = "DEFAULT" # GKE installs the NVIDIA driver; no operator to run
      }
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    metadata = { disable-legacy-endpoints = "true" }
  }
}
