"""Versions: the DVC pipeline that drives the same steps through the CLI, input datasets read by DVC
coordinates, content hashes, and the reproducibility manifest of an iteration.

    flywheel dvc-yaml examples/arithmetic.yaml > dvc.yaml     # the stages, generated from the config
    dvc repro                                                 # runs them; dvc.lock records every hash

The run config is the one source of parameters: every stage names the config sections it reads as DVC
params of that YAML file (`params: - examples/arithmetic.yaml: [generate, seed]`), so `dvc repro` reruns
exactly the stages whose sections changed, and `dvc exp run -S examples/arithmetic.yaml:train.max_steps=100`
works on the same file. `iterations` shapes the DAG (as it does the KFP pipeline), and DVC templating has no
arithmetic to chain iteration i to i-1, so dvc.yaml is generated; a test fails when it is stale.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from flywheel.config import Config

# The config sections each step reads (its DVC params): a change elsewhere does not rerun it.
STEP_PARAMS = {
    "prepare": ["seed", "task", "evaluate.per_difficulty", "data"],
    "init-model": ["seed", "task", "model", "train"],
    "prompts": ["seed", "task", "generate.prompts_per_iteration"],
    "propose": ["seed", "task", "propose", "generate", "verify"],
    "generate": ["seed", "generate", "gates"],
    "verify": ["task", "verify", "gates"],
    "curate": ["seed", "curate", "gates"],
    "train": ["train"],
    "evaluate": ["seed", "task", "verify", "evaluate", "generate.max_new_tokens", "generate.top_p", "gates"],
    "record": ["tracking"],
}


def _has(raw: dict, key: str) -> bool:
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def dvc_stages(cfg: Config, config: str, raw: dict, data: str = "data", metrics: str = "metrics") -> dict:
    """dvc.yaml for `cfg` (read from the file `config`, a path relative to the repository root).

    Layout: data/prepare/{seed,eval}.parquet, data/iter_0/model, data/iter_I/{prompts,generate,verify,curate,
    model,evaluate}; each step's folder (a DVC output) holds its table and the gate's report beside it; the
    next stage depends on the table alone, so a new report does not rerun it. Metrics (git-tracked, not
    cached) go to metrics/iter_I/STEP.json, so `dvc metrics show` lists the accuracy per iteration.
    """
    def _stage(config: str, cmd: list[str], step: str, deps: list[str], outs: list[str], metrics: str) -> dict:
        # DVC refuses params missing from the file: sections left at their defaults are not listed
        params = [k for k in STEP_PARAMS[step] if _has(raw, k)]
        return {"cmd": " ".join(["flywheel", step, config, *cmd, "--metrics", metrics]), "deps": deps,
                "params": [{config: params}], "outs": outs, "metrics": [{metrics: {"cache": False}}]}

    seed, ev = f"{data}/prepare/seed.parquet", f"{data}/prepare/eval.parquet"
    st: dict[str, dict] = {}
    st["prepare"] = _stage(config, ["--seed-set", seed, "--eval-set", ev], "prepare", [], [seed, ev],
                           f"{metrics}/prepare.json")
    base = f"{data}/iter_0/model"
    st["init_model"] = _stage(config, ["--seed-set", seed, "--out", base], "init-model", [seed], [base],
                              f"{metrics}/iter_0/init_model.json")
    st["evaluate_0"] = _stage(config, ["--model", base, "--eval-set", ev, "--seed-set", seed, "--iteration", "0",
                                       "--out", f"{data}/iter_0/evaluate/results.parquet"], "evaluate",
                              [base, ev, seed], [f"{data}/iter_0/evaluate"], f"{metrics}/iter_0/evaluate.json")
    def _record(i: int, inputs: dict[str, str]) -> dict:
        """summary.json (with the manifest), report.html and the W&B run of iteration i, in data/iter_i/record."""
        out = f"{data}/iter_{i}/record"
        args = [f"--{k} {v}" for k, v in inputs.items()]
        return {"cmd": " ".join(["flywheel", "record", config, "--iteration", str(i), *args,
                                 "--summary", f"{out}/summary.json", "--report", f"{out}/report.html"]),
                "deps": list(inputs.values()), "params": [{config: [k for k in STEP_PARAMS["record"] if _has(raw, k)]}],
                "outs": [out]}

    st["record_0"] = _record(0, {"evaluate": f"{metrics}/iter_0/evaluate.json", "prepare": f"{metrics}/prepare.json",
                                 "results": f"{data}/iter_0/evaluate/results.parquet"})
    model, curated, proposed = base, None, None
    for i in range(1, cfg.iterations + 1):
        d, m = f"{data}/iter_{i}", f"{metrics}/iter_{i}"
        carry = ["--proposed", proposed] if proposed else []
        st[f"prompts_{i}"] = _stage(config, ["--iteration", str(i), *carry, "--out", f"{d}/prompts/prompts.parquet"],
                                    "prompts", carry[1:], [f"{d}/prompts"], f"{m}/prompts.json")
        proposed = None
        if cfg.propose.enabled and i < cfg.iterations:  # the last iteration's proposals would feed nothing
            proposed = f"{d}/propose/proposals.parquet"
            st[f"propose_{i}"] = _stage(config, ["--model", model, "--prompts", f"{d}/prompts/prompts.parquet",
                                                 "--eval-set", ev, "--iteration", str(i), "--out", proposed,
                                                 "--dropped", f"{d}/propose/dropped.parquet"], "propose",
                                        [model, f"{d}/prompts/prompts.parquet", ev], [f"{d}/propose"],
                                        f"{m}/propose.json")
        st[f"generate_{i}"] = _stage(config, ["--model", model, "--prompts", f"{d}/prompts/prompts.parquet",
                                              "--iteration", str(i), "--out", f"{d}/generate/samples.parquet"],
                                     "generate", [model, f"{d}/prompts/prompts.parquet"], [f"{d}/generate"], f"{m}/generate.json")
        st[f"verify_{i}"] = _stage(config, ["--samples", f"{d}/generate/samples.parquet",
                                            "--out", f"{d}/verify/verdicts.parquet"], "verify",
                                   [f"{d}/generate/samples.parquet"], [f"{d}/verify"], f"{m}/verify.json")
        prev = ["--previous", curated] if curated and cfg.curate.data_policy == "accumulate" else []
        st[f"curate_{i}"] = _stage(config, ["--verdicts", f"{d}/verify/verdicts.parquet", "--seed-set", seed,
                                            "--eval-set", ev, "--iteration", str(i), *prev,
                                            "--out", f"{d}/curate/curated.parquet",
                                            "--dropped", f"{d}/curate/dropped.parquet"], "curate",
                                   [f"{d}/verify/verdicts.parquet", seed, ev, *prev[1:]], [f"{d}/curate"],
                                   f"{m}/curate.json")
        start = model if cfg.train.init_from == "current" else base
        st[f"train_{i}"] = _stage(config, ["--model", start, "--data", f"{d}/curate/curated.parquet",
                                           "--out", f"{d}/model"], "train", [start, f"{d}/curate/curated.parquet"],
                                  [f"{d}/model"], f"{m}/train.json")
        st[f"evaluate_{i}"] = _stage(config, ["--model", f"{d}/model", "--eval-set", ev, "--seed-set", seed,
                                              "--iteration", str(i), "--previous-metrics",
                                              f"{metrics}/iter_{i - 1}/evaluate.json",
                                              "--out", f"{d}/evaluate/results.parquet"], "evaluate",
                                     [f"{d}/model", ev, seed, f"{metrics}/iter_{i - 1}/evaluate.json"],
                                     [f"{d}/evaluate"], f"{m}/evaluate.json")
        st[f"record_{i}"] = _record(i, {"generate": f"{m}/generate.json", "verify": f"{m}/verify.json",
                                        "curate": f"{m}/curate.json", "train": f"{m}/train.json",
                                        "evaluate": f"{m}/evaluate.json", "verdicts": f"{d}/verify/verdicts.parquet",
                                        "dropped": f"{d}/curate/dropped.parquet",
                                        "curated": f"{d}/curate/curated.parquet", "model": f"{d}/model",
                                        "results": f"{d}/evaluate/results.parquet",
                                        "previous-summary": f"{data}/iter_{i - 1}/record/summary.json",
                                        **({"propose": f"{m}/propose.json"} if proposed else {})})
        model, curated = f"{d}/model", f"{d}/curate/curated.parquet"
    for s in st.values():
        if not s["deps"]:
            del s["deps"]
        if not s["params"][0][config]:
            del s["params"]
    return {"stages": st}


def dvc_yaml(config: str) -> str:
    """dvc.yaml for the config file `config` (a path relative to the repository root)."""
    from flywheel.config import load_config

    raw = yaml.safe_load(Path(config).read_text()) or {}
    head = (f"# Generated from {config} by `flywheel dvc-yaml {config} > dvc.yaml`: edit the config, not this\n"
            f"# file (a test fails when it is stale). Run with `dvc repro`; see docs/data.md.\n")
    return head + yaml.safe_dump(dvc_stages(load_config(config), config, raw), sort_keys=False, width=120)


# --- content hashes ------------------------------------------------------------------------------------

def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(path: str | Path) -> dict[str, Any]:
    """{'md5', 'size', 'path'} of a file (the md5 DVC records for it), or of a folder (md5 of the sorted
    listing of its files' relative paths and md5s, with DVC's '.dir' suffix; 'nfiles' too)."""
    p = Path(path)
    if not p.exists():  # e.g. a hub model id
        return {"path": str(path), "md5": None}
    if p.is_file():
        return {"path": str(p), "md5": _md5_file(p), "size": p.stat().st_size}
    files = sorted(f for f in p.rglob("*") if f.is_file())
    listing = [{"md5": _md5_file(f), "relpath": f.relative_to(p).as_posix()} for f in files]
    md5 = hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"
    return {"path": str(p), "md5": md5, "size": sum(f.stat().st_size for f in files), "nfiles": len(files)}


# --- input datasets by DVC coordinates -----------------------------------------------------------------

def read_dvc_table(repo: str, path: str, rev: str = "", remote: str = "") -> tuple[Any, dict]:
    """Read a Parquet/JSONL/CSV table tracked by DVC (or git) in `repo` at `rev` with `dvc.api`; return it
    with what was actually used: the resolved commit and the md5 of the bytes read."""
    import dvc.api
    import pandas as pd
    from dvc.repo import Repo

    kwargs = {"repo": repo or None, "rev": rev or None, "remote": remote or None}
    try:
        raw = dvc.api.read(path, mode="rb", **kwargs)
        with Repo.open(repo or None, rev=rev or None, uninitialized=True) as r:
            commit = r.scm.get_rev() if r.scm else None
    except Exception as err:  # dvc raises many types (PathMissingError, RevError, NoRemoteError, ...)
        raise ValueError(f"cannot read {path!r} from DVC repository {repo or '.'!r} at revision {rev or 'HEAD'!r}: "
                         f"{type(err).__name__}: {err}") from None
    suffix = Path(path).suffix
    buf = io.BytesIO(raw)
    df = (pd.read_parquet(buf) if suffix == ".parquet" else pd.read_json(buf, lines=True) if suffix == ".jsonl"
          else pd.read_csv(buf, dtype=str, keep_default_na=False))
    return df, {"repo": repo or ".", "path": path, "rev": rev or "HEAD", "commit": commit,
                "md5": hashlib.md5(raw).hexdigest(), "size": len(raw)}


# --- the reproducibility manifest ----------------------------------------------------------------------

LIBRARIES = ("llm-flywheel", "torch", "transformers", "trl", "accelerate", "datasets", "tokenizers", "kfp",
             "pandas", "pyarrow", "great_expectations", "datasketch", "dvc", "wandb")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def manifest(cfg: Config, entry: dict, image_digest: str | None = None) -> dict:
    """What it takes to reproduce an iteration: seeds, sampling parameters, library versions, the image
    (and its digest on a cluster), the verifier, and the content hash of every input and output that the
    iteration's steps recorded (`gate.hashes` in their metrics)."""
    import os

    hashes = {}
    for step in ("generate", "verify", "curate", "eval"):
        for role, h in ((entry.get(step) or {}).get("gate") or {}).get("hashes", {}).items():
            hashes[f"{step}.{role}"] = h
    verifier = cfg.verify.verifier
    return {
        "iteration": entry["iteration"],
        "seeds": {"seed": cfg.seed, "train.seed": cfg.train.seed,
                  "sampling seed": cfg.seed + entry["iteration"]},
        "sampling": {**cfg.generate.model_dump(), "evaluate": cfg.evaluate.model_dump()},
        "verifier": {"name": verifier if verifier != "task" else f"task {cfg.task.name!r}",
                     "task": cfg.task.model_dump(), "version": _verifier_version(cfg)},
        "libraries": library_versions(),
        "image": cfg.pipeline.image, "image_digest": image_digest or os.environ.get("FLYWHEEL_IMAGE_DIGEST"),
        "hashes": hashes,
    }


def _verifier_version(cfg: Config) -> str:
    """The verifier's version: its package's version for a user verifier/task, else flywheel's."""
    name = cfg.verify.verifier if cfg.verify.verifier != "task" else cfg.task.name
    module = name.partition(":")[0] if ":" in name else "flywheel"
    top = module.split(".")[0]
    try:
        dist = metadata.packages_distributions().get(top, [top])[0]
        return f"{dist} {metadata.version(dist)}"
    except (metadata.PackageNotFoundError, IndexError):
        return f"{module} (not an installed package)"
