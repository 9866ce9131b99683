"""Weights & Biases tracking: one W&B run per iteration, grouped by pipeline run, each charting the whole
trajectory so far over `iteration`.

The `record` step of each iteration calls `track_iteration`: it starts the W&B run `iteration-I` in the group
of the pipeline run (`summary['run_id']`, made by record 0 and carried in summary.json, so every record step,
each in its own process or pod, lands in the same group), and logs:
- one history row per iteration 0..I (the earlier ones from summary.json), every metric charted against
  `iteration` (`define_metric`): the run of the last iteration draws each metric over the whole run, and
  the group view draws the same lines. Why not one W&B run resumed by id in every record step: offline
  (the default) wandb cannot resume, so each process would write its own copy of the run with the same id
  and the same `_step`s, and `wandb sync` of them would collide; per-iteration runs sync without conflicts,
  online and offline alike.
- the trainers' curves (loss, grad norm, learning rate; for dpo/spin the reward margins and accuracies):
  the train step returns the Trainer's own `log_history` (the numbers `report_to="wandb"` would log), charted
  against `train_curve/step`, the optimizer step counted over the whole run (iteration 2's first step
  follows iteration 1's last).
- the gate results, a table of sample rows (prompt, completion, verdict, kept or why dropped), and the
  iteration's artifacts with lineage metadata: curated data (uploaded: small), evaluation results, and the
  model, by default as a *reference* to its copy in the DVC remote (`tracking.log_models`), so W&B holds no
  second copy of every model. The champion's model carries the alias `champion` (W&B moves an alias to
  the newest version that claims it: the champion changes only when a challenger is promoted).

Mode (`tracking.wandb`): 'auto' is online when WANDB_API_KEY is in the environment and the service answers
(a TCP connect to WANDB_BASE_URL, default api.wandb.ai:443, within `REACH_TIMEOUT` s), offline otherwise,
with a warning that says why; 'offline' writes `wandb/offline-run-*` under the run's output folder (upload
later with `wandb sync`); 'online' insists (an unreachable service stops the record step at once, with the
reason); 'disabled' does nothing. The key is read by wandb from the environment only: it is never a config
field, a pipeline parameter or logged (on a cluster: `kubernetes.use_secret_as_env`, see docs/data.md).
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

STEPS = ("generate", "verify", "curate", "train", "evaluate")
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


# Seconds to wait for the W&B service to accept a TCP connection: a reachable service answers in well under a
# second; without network wandb itself retried for ~92 s and then failed the record step.
REACH_TIMEOUT = 3.0


def service_unreachable(timeout: float = REACH_TIMEOUT) -> str | None:
    """None when the W&B service (WANDB_BASE_URL, default https://api.wandb.ai) accepts a TCP connection
    within `timeout` seconds, else why not. Name resolution runs in a thread: getaddrinfo has no timeout of
    its own, and a resolver that does not answer can hold it for tens of seconds."""
    import socket
    import threading
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    host, port = url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)
    result: list[str | None] = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as err:
            result.append(f"{host}:{port}: {err.strerror or err}")

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result[0] if result else f"{host}:{port}: no answer within {timeout:g} s"


def wandb_mode(cfg: Config) -> str:
    """The mode this record step logs in (see the module docstring); a fallback is said on stderr."""
    import sys

    mode = cfg.tracking.wandb
    if mode == "auto" and not os.environ.get("WANDB_API_KEY"):
        return "offline"
    if mode in ("auto", "online"):
        why = service_unreachable()
        if why and mode == "online":
            raise ValueError(f"tracking.wandb is 'online' but the W&B service cannot be reached ({why}); "
                             "set tracking.wandb: auto (falls back to offline) or offline, and `wandb sync` later")
        if why:
            print(f"record: tracking.wandb auto: the W&B service cannot be reached ({why}); logging offline "
                  "under the run's wandb/ folder (upload later: wandb sync)", file=sys.stderr, flush=True)
            return "offline"
        return "online"
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


def iteration_row(entry: dict) -> dict[str, float]:
    """The scalars of one summary iteration, as W&B keys: every step's metrics, loop health, promotion, gates."""
    row: dict[str, float] = {"iteration": entry["iteration"]}
    for step in CHARTED:
        if isinstance(entry.get(step), dict):
            row.update(flatten({k: v for k, v in entry[step].items() if k != "gate"}, f"{step}/"))
            gate = entry[step].get("gate") or {}
            if gate.get("enabled"):
                row[f"gates/{step}/passed"] = float(gate["passed"])
                row[f"gates/{step}/warnings"] = len(gate.get("warnings", []))
                row.update({f"gates/{step}/{rule}": v for rule, v in gate.get("observed", {}).items()})
    row.update({f"durations/{k}": v for k, v in (entry.get("durations") or {}).items() if v is not None})
    return row


def train_curve(iterations: list[dict]) -> list[dict[str, float]]:
    """The trainers' logged steps of every iteration (`train.log_history`), on one step axis over the run."""
    rows, offset = [], 0
    for it in iterations:
        history = (it.get("train") or {}).get("log_history") or []
        for h in history:
            rows.append({"train_curve/step": offset + h["step"], "train_curve/iteration": it["iteration"],
                         **{f"train_curve/{k}": v for k, v in h.items() if k != "step" and isinstance(v, (int, float))}})
        offset += max((h["step"] for h in history), default=0)
    return rows


def dvc_object_uri(remote: str, md5: str) -> str:
    """Where DVC 3 keeps an object in a remote: `files/md5/<2 hex>/<rest>` (a folder: its `.dir` listing)."""
    if "://" in remote:
        return f"{remote.rstrip('/')}/files/md5/{md5[:2]}/{md5[2:]}"
    return (Path(remote).resolve() / "files" / "md5" / md5[:2] / md5[2:]).as_uri()


def track_iteration(cfg: Config, summary: dict, entry: dict, run_dir: str | Path, *,
                    verdicts: str | Path | None = None, dropped: str | Path | None = None,
                    curated: str | Path | None = None, model: str | Path | None = None,
                    results: str | Path | None = None) -> dict[str, Any]:
    """Log one iteration to W&B (see the module docstring); returns {'mode', 'run_id', 'dir', 'artifacts'}."""
    import sys

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
    run.define_metric("iteration")
    for prefix in (*CHARTED, "gates", "durations"):
        run.define_metric(f"{prefix}/*", step_metric="iteration")
    run.define_metric("train_curve/step")
    run.define_metric("train_curve/*", step_metric="train_curve/step")
    earlier = [it for it in summary["iterations"] if it["iteration"] < i]
    # resumed (online, a rerun of this record step): the rows are there already
    for row in ([] if run.resumed else train_curve(earlier + [entry])):
        run.log(row)
    for it in ([] if run.resumed else earlier):
        run.log(iteration_row(it))

    metrics: dict[str, Any] = iteration_row(entry)
    gate_rows = [[step, rule, value, rule not in (entry[step].get("gate") or {}).get("warnings", [])]
                 for step in STEPS if step in entry
                 for rule, value in ((entry[step].get("gate") or {}).get("observed") or {}).items()]
    if gate_rows:
        metrics["gate_results"] = wandb.Table(columns=["step", "rule", "observed", "passed"], data=gate_rows)
    if verdicts:
        cols, rows = sample_rows(verdicts, dropped, cfg.tracking.sample_rows)
        metrics["samples"] = wandb.Table(columns=cols, data=rows)
    run.log(metrics)  # this iteration's row: scalars and tables together

    hashes = (entry.get("manifest") or {}).get("hashes", {})
    logged = []

    def log_artifact(name: str, kind: str, path, inputs: dict[str, Any], aliases=(), reference: str | None = None):
        from flywheel.versions import content_hash

        art = wandb.Artifact(f"{name}-{group}", type=kind, metadata={
            "iteration": i, "content": content_hash(path), "inputs": inputs, "run_id": group,
            **({"reference": reference} if reference else {})})
        p = Path(path)
        if reference:
            art.add_reference(reference, name=p.name, checksum=False)
        elif p.is_dir():
            art.add_dir(str(p))
        else:
            art.add_file(str(p), name=p.name if p.suffix else f"{p.name}.parquet")
        run.log_artifact(art, aliases=[f"iteration-{i}", "latest", *aliases])
        logged.append(art.name)
        return art

    # lineage: curated data -> model -> evaluation (offline the edges live in the metadata)
    if curated:
        log_artifact("curated", "dataset", curated, {"verdicts": hashes.get("curate.verdicts"),
                                                     "seed_set": hashes.get("curate.seed_set"),
                                                     "previous": hashes.get("curate.previous")})
    rollouts = Path(model) / "rollouts.parquet" if model else None
    if rollouts is not None and rollouts.is_file():  # recipe grpo: the samples the model was trained on
        log_artifact("rollouts", "dataset", rollouts, {"model": hashes.get("train.model"),
                                                       "prompts": hashes.get("train.prompts")})
    # iteration 0's model is the first champion; later, the challenger is when promote says so
    champion = ("champion",) if (entry.get("promote") or {}).get("promoted") or i == 0 else ()
    if model and cfg.tracking.log_models != "none":
        inputs = {"curated": f"curated-{group}:iteration-{i}" if curated else None,
                  "curated_md5": hashes.get("curate.output", {}).get("md5")}
        reference = None
        if cfg.tracking.log_models == "reference":
            stored = (entry.get("manifest") or {}).get("stored") or {}
            pointer = (stored.get("artifacts") or {}).get("model")
            reference = dvc_object_uri(stored["remote"], pointer["md5"]) if pointer else None
            if reference is None:
                print(f"record: tracking.log_models: reference, but iteration {i}'s model is in no DVC remote "
                      f"({stored.get('skipped', 'not stored by this run')}): not logged to W&B (its hash is in the "
                      "lineage metadata; tracking.log_models: upload logs the files)", file=sys.stderr, flush=True)
        if reference or cfg.tracking.log_models == "upload":
            try:
                log_artifact("model", "model", model, inputs, champion, reference)
            except (wandb.Error, ValueError) as err:  # a remote wandb cannot reference (no boto3 for s3://, ...)
                print(f"record: the model's reference {reference} cannot be logged to W&B ({err}); its hash is in "
                      "the lineage metadata", file=sys.stderr, flush=True)
    if results:
        log_artifact("eval-results", "evaluation", results, {"model": f"model-{group}:iteration-{i}",
                                                             "model_md5": hashes.get("evaluate.model", {}).get("md5")})
    if mode == "online" and i > 1:
        # the input edge from the previous iteration's model, where W&B can record it
        with contextlib.suppress(wandb.errors.CommError):  # not logged (log_models: none, not stored)
            run.use_artifact(f"model-{group}:iteration-{i - 1}")
    out = {"mode": mode, "run_id": run.id, "group": group, "dir": run.dir, "artifacts": logged}
    run.finish()
    return out
