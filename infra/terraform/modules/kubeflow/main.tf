# Cloud-agnostic platform layer: Kubeflow Pipelines, Kubeflow Trainer and its runtimes, the External
# Secrets Operator syncing the cloud's secret manager into Kubernetes Secrets, and flywheel's own
# manifests (infra/k8s). Inputs come from a cloud module (modules/gke today).

locals {
  kfp     = "github.com/kubeflow/pipelines/manifests/kustomize"
  trainer = "https://github.com/kubeflow/trainer.git/manifests/overlays"
}

# --- Kubeflow Pipelines (standalone, kustomize) -----------------------------------------------------

data "kustomization_build" "kfp_cluster" {
  path = "${local.kfp}/cluster-scoped-resources?ref=${var.kfp_version}"
}

resource "kustomization_resource" "kfp_cluster" {
  for_each = data.kustomization_build.kfp_cluster.ids
  manifest = data.kustomization_build.kfp_cluster.manifests[each.value]
}

data "kustomization_build" "kfp" {
  path = "${local.kfp}/env/platform-agnostic?ref=${var.kfp_version}"
}

resource "kustomization_resource" "kfp" {
  for_each   = data.kustomization_build.kfp.ids
  manifest   = data.kustomization_build.kfp.manifests[each.value]
  depends_on = [kustomization_resource.kfp_cluster]
}

# Runs write their artifacts to the cloud bucket, not to the in-cluster MinIO: the KFP v2 launcher
# reads the namespace's default pipeline root from this ConfigMap.
resource "kubernetes_config_map_v1" "kfp_launcher" {
  metadata {
    name      = "kfp-launcher"
    namespace = var.namespace
  }
  data       = { defaultPipelineRoot = var.pipeline_root }
  depends_on = [kustomization_resource.kfp]
}

resource "kubernetes_annotations" "pipeline_runner" {
  api_version = "v1"
  kind        = "ServiceAccount"
  metadata {
    name      = "pipeline-runner"
    namespace = var.namespace
  }
  annotations = var.pipeline_service_account_annotations
  depends_on  = [kustomization_resource.kfp]
}

# --- Kubeflow Trainer v2 (controller, then the ClusterTrainingRuntimes such as torch-distributed) -------

data "kustomization_build" "trainer" {
  path = "${local.trainer}/manager?ref=${var.trainer_version}"
}

resource "kustomization_resource" "trainer" {
  for_each = data.kustomization_build.trainer.ids
  manifest = data.kustomization_build.trainer.manifests[each.value]
}

data "kustomization_build" "trainer_runtimes" {
  path = "${local.trainer}/runtimes?ref=${var.trainer_version}"
}

resource "kustomization_resource" "trainer_runtimes" {
  for_each   = data.kustomization_build.trainer_runtimes.ids
  manifest   = data.kustomization_build.trainer_runtimes.manifests[each.value]
  depends_on = [kustomization_resource.trainer]
}

# --- Secrets: cloud secret manager -> Kubernetes Secrets, by the External Secrets Operator -----------

resource "helm_release" "external_secrets" {
  name             = "external-secrets"
  repository       = "https://charts.external-secrets.io"
  chart            = "external-secrets"
  version          = var.external_secrets_version
  namespace        = var.external_secrets_namespace
  create_namespace = true
  values = [yamlencode({
    serviceAccount = { name = "external-secrets", annotations = var.external_secrets_service_account_annotations }
  })]
}

resource "kubernetes_manifest" "secret_store" {
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "ClusterSecretStore"
    metadata   = { name = "flywheel" }
    spec       = { provider = var.secret_store_provider }
  }
  depends_on = [helm_release.external_secrets]
}

resource "kubernetes_manifest" "external_secret" {
  for_each = var.secrets
  manifest = {
    apiVersion = "external-secrets.io/v1"
    kind       = "ExternalSecret"
    metadata   = { name = each.value.k8s_secret, namespace = var.namespace }
    spec = {
      refreshInterval = "1h"
      secretStoreRef  = { kind = "ClusterSecretStore", name = "flywheel" }
      target          = { name = each.value.k8s_secret }
      data            = [{ secretKey = each.value.k8s_key, remoteRef = { key = each.key } }]
    }
  }
  depends_on = [kubernetes_manifest.secret_store, kustomization_resource.kfp]
}

# --- flywheel's manifests (infra/k8s): TrainJob RBAC, RWX volumes, the trigger CronJob ------------------

data "kustomization_overlay" "flywheel" {
  namespace = var.namespace
  resources = concat(
    ["${path.module}/../../../k8s/pipeline-runner-rbac.yaml", "${path.module}/../../../k8s/volumes.yaml"],
    var.enable_trigger ? ["${path.module}/../../../k8s/trigger-cronjob.yaml"] : [],
  )
  images {
    name     = "flywheel-python"
    new_name = var.flywheel_image.name
    new_tag  = var.flywheel_image.tag
  }
}

resource "kustomization_resource" "flywheel" {
  for_each   = data.kustomization_overlay.flywheel.ids
  manifest   = data.kustomization_overlay.flywheel.manifests[each.value]
  depends_on = [kustomization_resource.kfp, kustomization_resource.trainer_runtimes]
}
