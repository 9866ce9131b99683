"""Weights & Biases tracking, one W&B run per iteration, grouped by pipeline run.

The `record` step of each iteration calls `track_iteration`: it starts the W&B run `iteration-I` in the group
of the pipeline run (`summary['run_id']`, made by record 0 and carried in summary.json, so every record step,
each in its own process or pod, lands in the same group), logs every step's metrics, the gate results, a
table of sample rows (prompt, completion, verdict, kept or why dropped), and the iteration's artifacts
(curated data, model, evaluation results) with lineage metadata, then finishes.

Mode (`tracking.wandb`): 'auto' is online when WANDB_API_KEY is in the environment and offline otherwise;
'offline' writes `wandb/offline-run-*` under the run's output folder (upload later with `wandb sync`);
'disabled' does nothing. The key is read by wandb from the environment only: it is never a config field,
a pipeline parameter or logged (on a cluster: `kubernetes.use_secret_as_env`, see docs/data.md).
Offline, `use_artifact` is impossible (wandb raises), so the inputs of each artifact (names and content
hashes) are in its metadata; online, the input edges are recorded with `use_artifact` as well.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from flywheel.config import Config
from flywheel.io import read_table

STEPS = ("generate", "verify", "curate", "train", "eval")
# Entries of a summary iteration charted besides the steps: loop health (pass@k, diversity, balance score,
# verifier error rates) and the promotion decision (accuracies, p-value), each as its own W&B chart.
CHARTED = STEPS + ("health", "promote")


@contextlib.contextmanager
def wandb_dir(path: str | Path):
    """Set WANDB_DIR to `path` for the block (unless the user set it), then restore the environment."""
    before = os.environ.get("WANDB_DIR")
    os.environ["WANDB_DIR"] = before or str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("WANDB_DIR", None)


def wandb_mode(cfg: Config) -> str:
    mode = cfg.tracking.wandb
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested metrics as 'step/key/sub' (W&B charts need scalars)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, bool):
            out[key] = float(v)
        elif isinstance(v, (int, float)):
            out[key] = v
    return out


def sample_rows(verdicts: str | Path, dropped: str | Path | None, limit: int) -> tuple[list[str], list[list]]:
    """Up to `limit` sample rows: prompt, completion, reference, correct, verdict reason, kept or why dropped."""
    v = read_table(verdicts, ("prompt_id", "sample_id", "prompt", "completion", "reference", "correct", "reason"),
                   what="verdicts")
    why = {}
    if dropped:
        d = read_table(dropped, ("prompt_id", "sample_id", "drop_reason"), what="dropped rows")
        why = dict(zip(zip(d["prompt_id"], d["sample_id"]), d["drop_reason"]))
    # correct and wrong samples alike, spread over prompts
    picks = v.sort_values(["sample_id", "prompt_id"]).head(limit)
    cols = ["prompt", "completion", "reference", "correct", "reason", "curated"]
    rows = [[r.prompt, r.completion, r.reference, bool(r.correct), r.reason,
             why.get((r.prompt_id, r.sample_id), "kept")] for r in picks.itertuples()]
    return cols, rows


def track_iteration(cfg: Config, summary: dict, entry: dict, run_dir: str | Path, *,
                    verdicts: str | Path | None = None, dropped: str | Path | None = None,
                    curated: str | Path | None = None, model: str | Path | None = None,
                    results: str | Path | None = None) -> dict[str, Any]:
    """Log one iteration to W&B (see the module docstring); returns {'mode', 'run_id', 'dir', 'artifacts'}."""
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return {"mode": "disabled"}
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    import wandb

    i, group = entry["iteration"], summary["run_id"]
    run = wandb.init(mode=mode, dir=str(run_dir), settings=wandb.Settings(silent=True, console="off"),
                     project=cfg.tracking.project, entity=cfg.tracking.entity or None, group=group,
                     job_type="iteration", name=f"iteration-{i}", id=f"{group}-it{i}", resume="allow",
                     config={"flywheel": cfg.model_dump(), "iteration": i, "inputs": summary.get("inputs", {}),
                             "manifest": entry.get("manifest", {})})
    metrics = {"iteration": i}
    for step in CHARTED:
        if isinstance(entry.get(step), dict):
            metrics.update(flatten({k: v for k, v in entry[step].items() if k != "gate"}, f"{step}/"))
            gate = entry[step].get("gate") or {}
            if gate.get("enabled"):
                metrics[f"gates/{step}/passed"] = float(gate["passed"])
                metrics[f"gates/{step}/warnings"] = len(gate.get("warnings", []))
                metrics.update({f"gates/{step}/{rule}": v for rule, v in gate.get("observed", {}).items()})
    gate_rows = [[step, rule, value, rule not in (entry[step].get("gate") or {}).get("warnings", [])]
                 for step in STEPS if step in entry
                 for rule, value in ((entry[step].get("gate") or {}).get("observed") or {}).items()]
    if gate_rows:
        metrics["gate_results"] = wandb.Table(columns=["step", "rule", "observed", "passed"], data=gate_rows)
    if verdicts:
        cols, rows = sample_rows(verdicts, dropped, cfg.tracking.sample_rows)
        metrics["samples"] = wandb.Table(columns=cols, data=rows)
    run.log(metrics)  # one history row per iteration: scalars and tables together

    hashes = (entry.get("manifest") or {}).get("hashes", {})
    logged = []

    def log_artifact(name: str, kind: str, path, inputs: dict[str, Any]):
        if not path:
            return None
        from flywheel.versions import content_hash

        art = wandb.Artifact(f"{name}-{group}", type=kind, metadata={
            "iteration": i, "content": content_hash(path), "inputs": inputs, "run_id": group})
        p = Path(path)
        if p.is_dir():
            art.add_dir(str(p))
        else:
            art.add_file(str(p), name=p.name if p.suffix else f"{p.name}.parquet")
        run.log_artifact(art, aliases=[f"iteration-{i}", "latest"])
        logged.append(art.name)
        return art

    # lineage: curated data -> model -> evaluation (offline the edges live in the metadata)
    log_artifact("curated", "dataset", curated, {"verdicts": hashes.get("curate.verdicts"),
                                                 "seed_set": hashes.get("curate.seed_set"),
                                                 "previous": hashes.get("curate.previous")})
    if model and cfg.tracking.log_model_files:
        log_artifact("model", "model", model, {"curated": f"curated-{group}:iteration-{i}",
                                               "curated_md5": hashes.get("curate.output", {}).get("md5")})
    log_artifact("eval-results", "evaluation", results, {"model": f"model-{group}:iteration-{i}",
                                                         "model_md5": hashes.get("eval.model", {}).get("md5")})
    if mode == "online" and i > 1:
        # the input edge from the previous iteration's model, where W&B can record it
        run.use_artifact(f"model-{group}:iteration-{i - 1}")
    out = {"mode": mode, "run_id": run.id, "group": group, "dir": run.dir, "artifacts": logged}
    run.finish()
    return out
