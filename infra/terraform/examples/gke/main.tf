# flywheel on GKE, end to end: `terraform init && terraform apply` (docs/deploy.md walks through it).

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}

module "gke" {
  source                  = "../../modules/gke"
  project_id              = var.project_id
  region                  = var.region
  master_authorized_cidrs = var.master_authorized_cidrs
  gpu_pools = {
    l4   = { machine_type = "g2-standard-16", gpu_type = "nvidia-l4", gpus_per_node = 1, max_nodes = 8, spot = true, zones = [] }
    h100 = { machine_type = "a3-highgpu-8g", gpu_type = "nvidia-h100-80gb", gpus_per_node = 8, max_nodes = 2, spot = false, zones = [] }
  }
}

data "google_client_config" "current" {}

provider "kubernetes" {
  host                   = module.gke.cluster_endpoint
  cluster_ca_certificate = module.gke.cluster_ca_certificate
  token                  = data.google_client_config.current.access_token
}

provider "helm" {
  kubernetes {
    host                   = module.gke.cluster_endpoint
    cluster_ca_certificate = module.gke.cluster_ca_certificate
    token                  = data.google_client_config.current.access_token
  }
}

provider "kustomization" {
  kubeconfig_raw = yamlencode({
    apiVersion      = "v1"
    kind            = "Config"
    current-context = "gke"
    clusters        = [{ name = "gke", cluster = { server = module.gke.cluster_endpoint, certificate-authority-data = base64encode(module.gke.cluster_ca_certificate) } }]
    users           = [{ name = "terraform", user = { token = data.google_client_config.current.access_token } }]
    contexts        = [{ name = "gke", context = { cluster = "gke", user = "terraform" } }]
  })
}

module "kubeflow" {
  source                                       = "../../modules/kubeflow"
  pipeline_root                                = module.gke.pipeline_root
  pipeline_service_account_annotations         = module.gke.pipeline_service_account_annotations
  external_secrets_service_account_annotations = module.gke.external_secrets_service_account_annotations
  secret_store_provider                        = module.gke.secret_store_provider
  secrets                                      = module.gke.secrets
  flywheel_image                               = { name = "${module.gke.image_repository}/flywheel-python-cuda", tag = var.image_tag }
}
