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

def dvc_params(raw: dict, step: str) -> list[str]:
    """A stage's DVC params: the config keys of its row in the step table (flywheel/steps/table.py), those the
    file sets (DVC refuses params missing from the file; a key left at its default cannot change unseen), or
    for a row that reads every key (record) the file's top-level keys."""
    from flywheel.steps.table import ALL, lookup, row

    reads, missing = row(step).reads, object()  # a key set to null in the file is still set
    keys = list(raw) if ALL in reads else [k for k in reads if lookup(raw, k, missing) is not missing]
    # a key under one already listed would be listed twice (DVC: 'train' and 'train.recipe')
    return [k for k in keys if not any(k.startswith(o + ".") for o in keys if o != k)]


# Where a DVC stage writes each output the DAG names (flywheel/steps/dag.py; {d}: data/iter_I, {m}:
# metrics/iter_I). An output `metrics` not listed is the stage's metrics file, {m}/STEP.json.
_FILES = {
    ("prepare", "seed_set"): "{data}/prepare/seed.parquet", ("prepare", "eval_set"): "{data}/prepare/eval.parquet",
    ("prepare", "metrics"): "{metrics}/prepare.json",
    ("init-model", "model"): "{d}/model", ("train", "model"): "{d}/model",
    ("prompts", "prompts"): "{d}/prompts/prompts.parquet", ("propose", "proposals"): "{d}/propose/proposals.parquet",
    ("generate", "samples"): "{d}/generate/samples.parquet", ("verify", "verdicts"): "{d}/verify/verdicts.parquet",
    ("curate", "curated"): "{d}/curate/curated.parquet", ("curate", "dropped"): "{d}/curate/dropped.parquet",
    ("evaluate", "results"): "{d}/evaluate/results.parquet",
    # promote's folder holds the champion after it (model, results, metrics); its metrics file is the decision
    ("promote", "model"): "{d}/promote/model", ("promote", "results"): "{d}/promote/results.parquet",
    ("promote", "metrics"): "{d}/promote/metrics.json", ("promote", "decision"): "{m}/promote.json",
    ("record", "summary"): "{d}/record/summary.json",
}
# The CLI flag of an input whose name (the KFP component's parameter) is not the flag with dashes.
_FLAGS = {("prompts", "previous"): "--previous-summary", ("evaluate", "previous"): "--previous-metrics",
          ("train", "current_model"): "--model", ("train", "base_model"): "--model", ("train", "curated"): "--data",
          ("record", "previous"): "--previous-summary", ("record", "evaluation"): "--evaluate",
          ("record", "preparation"): "--prepare", ("record", "generation"): "--generate",
          ("record", "verification"): "--verify", ("record", "curation"): "--curate", ("record", "training"): "--train",
          ("record", "promotion"): "--promote", ("record", "proposal"): "--propose"}
# What a stage writes besides its metrics file: its output flags, and its DVC outs (each step's folder).
_WRITES = {
    "prepare": (["--seed-set", "{data}/prepare/seed.parquet", "--eval-set", "{data}/prepare/eval.parquet"],
                ["{data}/prepare/seed.parquet", "{data}/prepare/eval.parquet"]),
    "init-model": (["--out", "{d}/model"], ["{d}/model"]),
    "prompts": (["--out", "{d}/prompts/prompts.parquet"], ["{d}/prompts"]),
    "propose": (["--out", "{d}/propose/proposals.parquet", "--dropped", "{d}/propose/dropped.parquet"],
                ["{d}/propose"]),
    "generate": (["--out", "{d}/generate/samples.parquet"], ["{d}/generate"]),
    "verify": (["--out", "{d}/verify/verdicts.parquet"], ["{d}/verify"]),
    "curate": (["--out", "{d}/curate/curated.parquet", "--dropped", "{d}/curate/dropped.parquet"], ["{d}/curate"]),
    "train": (["--out", "{d}/model"], ["{d}/model"]),
    "evaluate": (["--out", "{d}/evaluate/results.parquet"], ["{d}/evaluate"]),
    "promote": (["--out", "{d}/promote"], ["{d}/promote"]),
    "record": (["--summary", "{d}/record/summary.json", "--report", "{d}/record/report.html"], ["{d}/record"]),
}


def dvc_stages(cfg: Config, config: str, raw: dict, data: str = "data", metrics: str = "metrics") -> dict:
    """dvc.yaml for `cfg` (read from the file `config`, a path relative to the repository root): a stage per
    task of the iteration DAG (`flywheel.steps.dag.loop_dag`, which the KFP pipeline walks too), each the
    step's CLI subcommand, an input from another task given as that output's file (a flag and a dep).

    Layout: data/prepare/{seed,eval}.parquet, data/iter_0/model, data/iter_I/{prompts,generate,verify,curate,
    model,evaluate,promote,record}; each step's folder (a DVC output) holds its table and the gate's report
    beside it; the next stage depends on the table alone, so a new report does not rerun it. Metrics
    (git-tracked, not cached) go to metrics/iter_I/STEP.json, so `dvc metrics show` lists the accuracy per
    iteration. The champion (promote's model) feeds the next iteration, as in the pipeline; a stop criterion
    does not skip later stages (DVC has no conditions), but their promote keeps the champion it stopped with.
    """
    from flywheel.steps.dag import Out, loop_dag

    def _stage(step: str, args: list[str], deps: list[str], outs: list[str], m: str | None) -> dict:
        stage = {"cmd": " ".join(["flywheel", step, config, *args, *(["--metrics", m] if m else [])]),
                 "deps": deps, "params": [{config: dvc_params(raw, step)}], "outs": list(outs)}
        # Only evaluate's file is a DVC metric, so `dvc metrics show` is the accuracy per iteration (every
        # step's metrics file as a metric made it a table of ~200 columns); the others are plain outputs,
        # git-tracked like it (cache: false), and `dvc metrics show metrics/iter_1/train.json` still reads one.
        if m and step == "evaluate":
            stage["metrics"] = [{m: {"cache": False}}]
        elif m:
            stage["outs"].append({m: {"cache": False}})
        return stage

    def where(t) -> dict:  # the placeholders of _FILES and _WRITES for task t (prepare, init-model: iteration 0)
        i = t.iteration or 0
        return {"data": data, "metrics": metrics, "d": f"{data}/iter_{i}", "m": f"{metrics}/iter_{i}"}

    def metrics_file(t) -> str | None:  # record writes summary.json, no metrics file
        return None if t.step == "record" else f"{metrics}/prepare.json" if t.step == "prepare" else \
            f"{where(t)['m']}/{t.step}.json"

    dag = loop_dag(cfg)
    by_id = {t.id: t for t in dag}

    def path(ref: Out) -> str:
        t = by_id[ref.task]
        if (t.step, ref.name) not in _FILES and ref.name == "metrics":
            return metrics_file(t)
        return _FILES[t.step, ref.name].format(**where(t))

    st: dict[str, dict] = {}
    for t in dag:
        inputs = dict(t.inputs)
        if t.step == "train":  # the CLI takes the one start train.init_from picks (the component takes both)
            inputs.pop("base_model" if cfg.train.init_from == "current" else "current_model")
        if t.id == "record 0":  # dvc.yaml's record 0 has never passed the first model (KFP's stores it; its
            inputs.pop("model")  # W&B run logs none): passing it changes the committed dvc.yaml, so not here
        args = [a for name, v in inputs.items()
                for a in (_FLAGS.get((t.step, name), "--" + name.replace("_", "-")),
                          path(v) if isinstance(v, Out) else str(v))]
        writes, outs = _WRITES[t.step]
        st[t.id.replace(" ", "_")] = _stage(t.step, args + [w.format(**where(t)) for w in writes],
                                            [path(v) for v in inputs.values() if isinstance(v, Out)],
                                            [o.format(**where(t)) for o in outs], metrics_file(t))
    for s in st.values():
        if not s["deps"]:
            del s["deps"]
        if not s["params"][0][config]:
            del s["params"]
    # `dvc plots show`: accuracy per iteration and per difficulty, from the tables the last record writes
    acc, by_diff = f"{metrics}/plots/accuracy.json", f"{metrics}/plots/accuracy_by_difficulty.json"
    last = st[f"record_{cfg.iterations}"]
    last["cmd"] += f" --plots {metrics}/plots"
    last["outs"] += [{acc: {"cache": False}}, {by_diff: {"cache": False}}]
    plots = [{acc: {"x": "iteration", "y": ["accuracy", "accuracy_beyond_seed"],
                    "title": "held-out accuracy per iteration"}},
             {by_diff: {"x": "difficulty", "y": [f"iteration {i}" for i in range(cfg.iterations + 1)],
                        "title": "held-out accuracy per difficulty, one line per iteration"}}]
    return {"stages": st, "plots": plots}


def write_plots(summary: dict, folder: str | Path) -> None:
    """The tables `dvc plots show` draws (dvc.yaml's `plots:`): accuracy per iteration, and per difficulty
    with one column per iteration."""
    from flywheel.io import write_json

    its = summary["iterations"]
    write_json([{"iteration": it["iteration"], "accuracy": it["evaluate"]["accuracy"],
                 "accuracy_beyond_seed": it["evaluate"].get("accuracy_beyond_seed")} for it in its],
               Path(folder) / "accuracy.json")
    diffs = sorted({int(k) for it in its for k in it["evaluate"].get("accuracy_by_difficulty", {})})
    write_json([{"difficulty": d, **{f"iteration {it['iteration']}": it["evaluate"]["accuracy_by_difficulty"].get(str(d))
                                     for it in its}} for d in diffs], Path(folder) / "accuracy_by_difficulty.json")


def dvc_yaml(config: str) -> str:
    """dvc.yaml for the config file `config` (a path relative to the repository root)."""
    from flywheel.config import load_config

    raw = yaml.safe_load(Path(config).read_text()) or {}
    head = (f"# Generated from {config} by `flywheel dvc-yaml {config} > dvc.yaml`: edit the config, not this\n"
            f"# file (a test fails when it is stale). Run with `dvc repro`; see docs/data.md.\n")
    return head + yaml.safe_dump(dvc_stages(load_config(config), config, raw), sort_keys=False, width=120)


# --- content hashes ------------------------------------------------------------------------------------

def _md5_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()  # streamed: models are GBs


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

def read_dvc_bytes(repo: str, path: str, rev: str = "", remote: str = "") -> tuple[bytes, dict]:
    """The bytes of `path` in the DVC (or git) repository `repo` at `rev`, read with `dvc.api`, and what was
    actually used: the resolved commit and the md5 of the bytes. DVC's own exceptions pass through (it
    raises many types: PathMissingError, RevError, NoRemoteError, ...); callers name the fix."""
    import dvc.api
    from dvc.repo import Repo

    raw = dvc.api.read(path, mode="rb", repo=repo or None, rev=rev or None, remote=remote or None)
    with Repo.open(repo or None, rev=rev or None, uninitialized=True) as r:
        commit = r.scm.get_rev() if r.scm else None
    return raw, {"repo": repo or ".", "path": path, "rev": rev or "HEAD", "commit": commit,
                 "md5": hashlib.md5(raw).hexdigest(), "size": len(raw)}


def read_dvc_table(repo: str, path: str, rev: str = "", remote: str = "") -> tuple[Any, dict]:
    """Read a Parquet/JSONL/CSV table tracked by DVC (or git) in `repo` at `rev`; return it with what was
    actually used (`read_dvc_bytes`)."""
    import pandas as pd

    try:
        raw, record = read_dvc_bytes(repo, path, rev, remote)
    except Exception as err:
        raise ValueError(f"cannot read {path!r} from DVC repository {repo or '.'!r} at revision {rev or 'HEAD'!r}: "
                         f"{type(err).__name__}: {err}") from None
    suffix = Path(path).suffix
    buf = io.BytesIO(raw)
    df = (pd.read_parquet(buf) if suffix == ".parquet" else pd.read_json(buf, lines=True) if suffix == ".jsonl"
          else pd.read_csv(buf, dtype=str, keep_default_na=False))
    return df, record


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
    from flywheel.steps.table import STEPS

    # every gated step's hashes (summary keys: the step names); train: recipe grpo's rollouts
    for step in (s.name for s in STEPS if s.gate):
        for role, h in ((entry.get(step) or {}).get("gate") or {}).get("hashes", {}).items():
            hashes[f"{step}.{role}"] = h
    verifier = cfg.verify.verifier
    return {
        "iteration": entry["iteration"],
        "seeds": {"seed": cfg.seed, "train.seed": cfg.train.seed,
                  "sampling seed": cfg.seed + entry["iteration"]},
        # the plan (the prompts step's) is what generate sampled with: it wins over the config's values
        "sampling": {**cfg.generate.model_dump(), **_plan_values(entry), "evaluate": cfg.evaluate.model_dump()},
        "verifier": {"name": verifier if verifier != "task" else f"task {cfg.task.name!r}",
                     "task": cfg.task.model_dump(), "version": _verifier_version(cfg)},
        "libraries": library_versions(),
        "image": cfg.pipeline.image, "image_digest": image_digest or os.environ.get("FLYWHEEL_IMAGE_DIGEST"),
        "hashes": hashes,
    }


def _plan_values(entry: dict) -> dict:
    plan = (entry.get("generate") or {}).get("plan") or {}
    return {k: plan[k] for k in ("temperature", "samples_per_prompt") if k in plan} | ({"plan": plan} if plan else {})


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


# --- KFP runs: iteration artifacts into the DVC cache and remote ----------------------------------------

# What each stored artifact is called in its pointer (the `path` of the .dvc entry that fetches it back).
STORED_NAMES = {"curated": "curated.parquet", "model": "model"}


def _store_target(cfg: Config, near: Path) -> tuple[str | None, str | None, str]:
    """(remote URL, cache dir, where they came from): data.remote if set, else the default remote and the
    cache of the DVC repository that holds `near` (the run's output folder)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        root = Repo.find_root(str(near))
    except NotDvcRepoError:
        root = None
    cache = remote = None
    if root:
        with Repo(root) as repo:
            cache = repo.cache.local_cache_dir
            name = repo.config["core"].get("remote")
            remote = repo.config["remote"][name]["url"] if name else None
    if cfg.data.remote:  # a folder is taken relative to the working directory, not to DVC's config file
        url = cfg.data.remote if "://" in cfg.data.remote else str(Path(cfg.data.remote).resolve())
        return url, cache, "data.remote"
    return remote, cache, (f"default remote of the DVC repository {root}" if remote else
                           f"{near} is in no DVC repository" if not root else
                           f"the DVC repository {root} has no default remote")


def store_artifacts(cfg: Config, iteration: int, artifacts: dict[str, str | Path], near: str | Path) -> dict:
    """Put an iteration's artifacts (role -> file or folder; roles in STORED_NAMES) into the DVC cache and
    push them to the DVC remote, with DVC itself (`dvc add` + `dvc push` in a scratch repository that uses
    that cache and remote): content-addressed, as `dvc repro` stores its outputs. Returns the pointers
    ({role: {md5, size, nfiles, path}}, the remote and the cache), which `fetch_stored` turns back into
    the exact bytes. Without a remote nothing is stored: the reason is returned and printed to stderr."""
    import shutil
    import sys
    import tempfile

    from dvc.repo import Repo

    if not cfg.data.store:
        return {"skipped": "data.store is false"}
    remote, cache, source = _store_target(cfg, Path(near).resolve())
    if not remote:
        reason = (f"no DVC remote ({source}; data.remote is empty): iteration {iteration}'s "
                  f"{' and '.join(artifacts)} are hashed in the manifest but not stored")
        print(f"record: data.store: {reason}", file=sys.stderr, flush=True)
        return {"skipped": reason}
    with tempfile.TemporaryDirectory(prefix="flywheel-store-") as tmp:
        Repo.init(tmp, no_scm=True)
        with Repo(tmp) as repo:
            with repo.config.edit() as conf:
                conf["remote"]["store"] = {"url": remote}
                conf["core"]["remote"] = "store"
                if cache:  # the run's repository's cache, so its `dvc checkout`/`pull` find them too
                    conf["cache"]["dir"] = cache
        targets = []
        for role, src in artifacts.items():
            dst = Path(tmp) / STORED_NAMES[role]
            # copies, not links: DVC makes cached files read-only, which must not reach the KFP artifacts
            if Path(src).is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copyfile(src, dst)
            targets.append(str(dst))
        with Repo(tmp) as repo:
            stages = repo.add(targets)
            pushed = repo.push(remote="store")
            pointers = {}
            for role, stage in zip(artifacts, stages):
                (out,) = stage.outs
                pointers[role] = {"md5": out.hash_info.value, "size": out.meta.size, "path": str(out.def_path),
                                  **({"nfiles": out.meta.nfiles} if out.meta.nfiles is not None else {})}
    return {"remote": remote, "remote_from": source, "cache": cache, "pushed_files": pushed, "artifacts": pointers}


def fetch_stored(pointer: dict, out_dir: str | Path, remote: str) -> Path:
    """Fetch one stored artifact (a pointer from `store_artifacts`) from `remote` into `out_dir`, with DVC
    (`dvc pull` of a .dvc file that holds the pointer); returns its path. DVC checks the md5."""
    import shutil
    import tempfile

    import yaml
    from dvc.repo import Repo

    out = Path(out_dir) / pointer["path"]
    if out.exists():
        raise ValueError(f"{out} exists; fetch into an empty folder")
    remote = remote if "://" in remote else str(Path(remote).resolve())
    with tempfile.TemporaryDirectory(prefix="flywheel-fetch-") as tmp:
        Repo.init(tmp, no_scm=True)
        entry = {"md5": pointer["md5"], "size": pointer["size"], "hash": "md5", "path": pointer["path"]}
        if "nfiles" in pointer:
            entry["nfiles"] = pointer["nfiles"]
        (Path(tmp) / f"{pointer['path']}.dvc").write_text(yaml.safe_dump({"outs": [entry]}, sort_keys=False))
        with Repo(tmp) as repo:
            with repo.config.edit() as conf:
                conf["remote"]["store"] = {"url": remote}
                conf["core"]["remote"] = "store"
        with Repo(tmp) as repo:
            repo.pull()
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / pointer["path"]), out)
    return out
