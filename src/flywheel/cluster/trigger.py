"""`flywheel trigger`: decide whether a new run is due, submit it once, and record why.

    flywheel trigger CONFIG --host URL --state /state \\
        [--data-repo REPO --data-file data/prompts.parquet.dvc --data-rev main] \\
        [--every-hours 24] [--fresh-eval eval.json --baseline-accuracy 0.93 --tolerance 0.02] [--dry-run]

Three causes, each with a key that names it exactly:
- new data: the DVC hash of the input dataset (the `md5` DVC records in the `.dvc` file, or the stage's
  out in dvc.lock, at a git revision) differs from the one the last submitted run used -> `data:<md5>`;
- a schedule: `--every-hours` have passed since the last submitted run -> `schedule:<period index>`;
- an evaluation regression: the deployed model's accuracy on fresh data (a `flywheel evaluate` metrics
  file) fell more than `--tolerance` below the baseline -> `regression:<hash of that file>`.

One run is submitted for all causes due at once. A cause is never submitted twice: its key is recorded
in STATE/state.json, and the run's name is derived from the keys, so that even with the state lost, a run
of that name found on the KFP backend counts as done. Every decision, submit or not, is appended with its
reasons to STATE/decisions.jsonl. It runs as a Kubernetes CronJob (infra/k8s/trigger-cronjob.yaml).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from flywheel.io import read_json, write_json


@dataclass
class Cause:
    key: str
    why: str


class TriggerError(ValueError):
    """Input the trigger cannot use; the message names it and the fix."""


def _git_show(repo: str, rev: str, path: str) -> str:
    def show(where: str) -> str:
        out = subprocess.run(["git", "-C", where, "show", f"{rev}:{path}"], capture_output=True, text=True)
        if out.returncode:
            raise TriggerError(f"{repo}@{rev}: cannot read {path} ({out.stderr.strip()})")
        return out.stdout

    if Path(repo).is_dir():
        return show(repo)
    with tempfile.TemporaryDirectory(prefix="flywheel-trigger-") as tmp:  # a remote: shallow, one revision
        branch = [] if rev == "HEAD" else ["--branch", rev]  # a branch or tag; HEAD: the default branch
        out = subprocess.run(["git", "clone", "--quiet", "--depth", "1", *branch, repo, tmp],
                             capture_output=True, text=True)
        if out.returncode:
            raise TriggerError(f"cannot clone {repo} at {rev}: {out.stderr.strip()}")
        return show(tmp)


def data_revision(repo: str, data_file: str, rev: str = "HEAD") -> str:
    """DVC's content hash of a tracked dataset at git revision `rev`.

    `data_file` is a `.dvc` file (written by `dvc add`) or `dvc.lock:<out path>` (an output of a stage)."""
    lock, _, out_path = data_file.partition(":")
    meta = yaml.safe_load(_git_show(repo, rev, lock)) or {}
    outs = meta.get("outs", []) if not out_path else [
        o for stage in (meta.get("stages") or {}).values() for o in stage.get("outs", []) if o.get("path") == out_path]
    hashes = [o.get("md5") for o in outs if o.get("md5")]
    if len(hashes) != 1:
        raise TriggerError(f"{repo}@{rev}:{data_file}: expected one DVC output with an md5, found {len(hashes)}; "
                           "point --data-file at a .dvc file or at dvc.lock:<output path>")
    return hashes[0]


@dataclass
class Trigger:
    state_dir: Path
    now: float | None = None

    def __post_init__(self):
        self.state_dir = Path(self.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.now = time.time() if self.now is None else self.now
        path = self.state_dir / "state.json"
        self.state = read_json(path, "trigger state") if path.is_file() else {"submitted": {}}

    def due(self, *, data_rev: str | None = None, every_hours: float | None = None,
            fresh_eval: str | None = None, baseline_accuracy: float | None = None,
            tolerance: float = 0.02) -> tuple[list[Cause], list[str]]:
        """Causes that are due (not yet submitted) and notes on those that are not."""
        causes, notes, done = [], [], self.state["submitted"]
        if data_rev is not None:
            last = self.state.get("data_rev")
            if data_rev == last:
                notes.append(f"data unchanged (DVC md5 {data_rev[:12]})")
            else:
                causes.append(Cause(f"data:{data_rev}", f"input data changed: DVC md5 {str(last)[:12]} -> {data_rev[:12]}"))
        if every_hours is not None:
            period = int(self.now // (every_hours * 3600))
            last_at = self.state.get("last_submitted_at")
            if last_at is not None and self.now - last_at < every_hours * 3600:
                notes.append(f"schedule: last run {(self.now - last_at) / 3600:.1f} h ago, every {every_hours:g} h")
            else:
                causes.append(Cause(f"schedule:{every_hours:g}h:{period}", f"schedule: no run in the last {every_hours:g} h"))
        if fresh_eval is not None:
            m = read_json(fresh_eval, "fresh-data evaluation metrics")
            if "accuracy" not in m:
                raise TriggerError(f"{fresh_eval}: no 'accuracy'; pass the metrics file of `flywheel evaluate`")
            baseline = self.state.get("baseline_accuracy") if baseline_accuracy is None else baseline_accuracy
            if baseline is None:
                raise TriggerError("--fresh-eval needs --baseline-accuracy the first time (then it is remembered)")
            self.state["baseline_accuracy"] = baseline
            acc = float(m["accuracy"])
            if acc < baseline - tolerance:
                digest = hashlib.sha256(Path(fresh_eval).read_bytes()).hexdigest()[:16]
                causes.append(Cause(f"regression:{digest}", f"accuracy on fresh data {acc:.3f} < baseline "
                                                            f"{baseline:.3f} - {tolerance:g}"))
            else:
                notes.append(f"no regression: accuracy on fresh data {acc:.3f} >= {baseline:.3f} - {tolerance:g}")
        fresh = [c for c in causes if c.key not in done]
        notes += [f"already submitted for {c.key} (run {done[c.key]['run_id']})" for c in causes if c.key in done]
        return fresh, notes

    @staticmethod
    def run_name(pipeline: str, causes: list[Cause]) -> str:
        digest = hashlib.sha256("\n".join(sorted(c.key for c in causes)).encode()).hexdigest()[:12]
        return f"{pipeline} trigger {digest}"

    def record(self, decision: dict, causes: list[Cause], run_id: str | None, data_rev: str | None) -> None:
        if run_id is not None:
            for c in causes:
                self.state["submitted"][c.key] = {"run_id": run_id, "at": decision["at"], "why": c.why}
            self.state["last_submitted_at"] = self.now
            if data_rev is not None:
                self.state["data_rev"] = data_rev
        write_json(self.state, self.state_dir / "state.json")
        with open(self.state_dir / "decisions.jsonl", "a") as f:
            f.write(json.dumps(decision, sort_keys=True) + "\n")


def run_trigger(cfg, host: str | None, state_dir: str | Path, *, submitter=None, dry_run: bool = False,
                experiment: str = "flywheel", namespace: str | None = None, data_repo: str | None = None, data_file: str | None = None,
                data_rev: str = "HEAD", now: float | None = None, **checks) -> dict:
    """Decide, submit at most one run, record; returns the decision (also appended to decisions.jsonl)."""
    t = Trigger(Path(state_dir), now)
    rev = data_revision(data_repo, data_file, data_rev) if data_repo else None
    causes, notes = t.due(data_rev=rev, **checks)
    decision = {"at": datetime.fromtimestamp(t.now, timezone.utc).isoformat(timespec="seconds"),
                "causes": [asdict(c) for c in causes], "notes": notes, "submitted": False, "run_id": None}
    run_id = None
    if causes:
        name = t.run_name(cfg.pipeline.name, causes)
        decision["run_name"] = name
        if dry_run:
            notes.append("dry run: nothing submitted")
        else:
            if submitter is None:
                from flywheel.cluster.submit import Submitter
                submitter = Submitter(cfg, host, namespace or cfg.cluster.namespace)
            existing = submitter.find_run(name, experiment)
            if existing:  # the state was lost or a previous trigger died after submitting
                run_id = existing
                notes.append(f"run {name!r} already exists on the backend ({existing}); not submitted again")
            else:
                run_id, url = submitter.submit(experiment=experiment, run_name=name)
                decision.update(submitted=True, url=url)
        decision["run_id"] = run_id
    t.record(decision, causes, run_id, rev)
    return decision
