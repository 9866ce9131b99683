"""DVC drives the same steps through the CLI: dvc.yaml is generated from the config (and kept in sync),
`dvc repro` runs the loop, `dvc status` is clean afterwards, every hash is in dvc.lock, data goes to the
remote and comes back, and an input dataset named by DVC coordinates is read with dvc.api."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flywheel.versions import dvc_yaml

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def test_dvc_yaml_is_generated_from_the_demo_config(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert (ROOT / "dvc.yaml").read_text() == dvc_yaml("examples/arithmetic.yaml"), \
        "dvc.yaml is stale: run `flywheel dvc-yaml examples/arithmetic.yaml -o dvc.yaml`"
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert [k for k in stages if k.startswith("train_")] == ["train_1", "train_2", "train_3"]
    # one source of parameters: every stage's params are keys of the run config
    assert all(list(p) == ["examples/arithmetic.yaml"] for s in stages.values() for p in s.get("params", []))
    assert (ROOT / ".dvc" / "config").read_text().count("url = ../dvc-storage") == 1


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.mark.slow
def test_dvc_repro_runs_the_loop_and_every_iteration_can_be_fetched_back(tmp_path):
    dvc, git = [sys.executable, "-m", "dvc"], ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(["git", "init", "-q"], repo)
    _run([*dvc, "init", "-q"], repo)
    _run([*dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], repo)
    config = {**TINY, "iterations": 1, "gates": {"enabled": False}, "tracking": {"wandb": "disabled"}}
    (repo / "examples").mkdir()
    (repo / "examples" / "tiny.yaml").write_text(yaml.safe_dump(config))
    _run([sys.executable, "-m", "flywheel", "dvc-yaml", "examples/tiny.yaml", "-o", "dvc.yaml"], repo)
    shown = _run([sys.executable, "-m", "flywheel", "repro"], repo)  # dvc repro, with `flywheel run`'s console
    lines = shown.splitlines()
    assert [ln.split()[:4] for ln in lines if ln.startswith("iter 1  train")] == [["iter", "1", "train", "ok"]]
    assert "Running stage" not in shown and len(lines) < 30 and lines[-1].split()[0] == "1"  # the table, last
    assert "Running stage 'train_1'" in (repo / "runs" / "dvc" / "logs" / "iter-1-train.log").read_text()
    assert "up to date" in _run([*dvc, "status"], repo)

    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    curated = next(o for o in lock["curate_1"]["outs"] if o["path"] == "data/iter_1/curate")
    assert curated["md5"].endswith(".dir") and curated["nfiles"] >= 2
    assert lock["train_1"]["deps"][1]["path"] == "data/iter_1/curate/curated.parquet"
    assert lock["train_1"]["params"]["examples/tiny.yaml"]["train"]["max_steps"] == TINY["train"]["max_steps"]
    metrics = json.loads(_run([*dvc, "metrics", "show", "--json"], repo))
    shown = json.dumps(metrics)
    assert "metrics/iter_0/evaluate.json" in shown and "metrics/iter_1/evaluate.json" in shown
    # only evaluate's files are DVC metrics: `dvc metrics show` is the accuracy per iteration
    assert "metrics/iter_1/train.json" not in shown and '"accuracy"' in shown
    summary = json.loads((repo / "data" / "iter_1" / "record" / "summary.json").read_text())
    assert [it["iteration"] for it in summary["iterations"]] == [0, 1]
    assert summary["iterations"][1]["manifest"]["hashes"]["curate.output"]["md5"] == \
        next(d for d in lock["train_1"]["deps"] if d["path"].endswith("curated.parquet"))["md5"]

    # store, forget, fetch back: iteration 1's training data, byte for byte
    _run([*git, "add", "-A"], repo)
    _run([*git, "commit", "-qm", "run"], repo)
    _run([*dvc, "push", "-q"], repo)
    want = (repo / "data" / "iter_1" / "curate" / "curated.parquet").read_bytes()
    fetched = tmp_path / "curated.parquet"
    _run([*dvc, "get", str(repo), "data/iter_1/curate/curated.parquet", "-o", str(fetched)], tmp_path)
    assert fetched.read_bytes() == want

    # an input dataset named by DVC coordinates: read with dvc.api, commit and content hash recorded
    from flywheel.steps.data import make_datasets
    from conftest import tiny_config

    cfg = tiny_config(data={"seed_set": {"repo": str(repo), "path": "data/prepare/seed.parquet", "rev": "HEAD"}})
    m = make_datasets(cfg, tmp_path / "seed.parquet", tmp_path / "eval.parquet")
    head = _run(["git", "rev-parse", "HEAD"], repo).strip()
    seed_md5 = next(o for o in lock["prepare"]["outs"] if o["path"] == "data/prepare/seed.parquet")["md5"]
    assert m["inputs"]["seed_set"]["commit"] == head and m["inputs"]["seed_set"]["md5"] == seed_md5
    assert (tmp_path / "seed.parquet").read_bytes() == (repo / "data" / "prepare" / "seed.parquet").read_bytes()


def test_store_without_a_remote_is_skipped_and_says_so(tmp_path, capsys):
    """data.store with no data.remote and an output folder in no DVC repository: nothing is pushed, the
    step goes on, the reason is printed and recorded; with a folder remote the file goes in and comes back."""
    from flywheel.versions import fetch_stored, store_artifacts

    from conftest import tiny_config

    (tmp_path / "curated").write_bytes(b"rows of iteration 1")
    out = store_artifacts(tiny_config(), 1, {"curated": tmp_path / "curated"}, near=tmp_path)
    assert "no DVC remote" in out["skipped"] and "in no DVC repository" in out["skipped"]
    assert "record: data.store: no DVC remote" in capsys.readouterr().err
    assert store_artifacts(tiny_config(data={"store": False}), 1, {"curated": tmp_path / "curated"},
                           near=tmp_path) == {"skipped": "data.store is false"}

    stored = store_artifacts(tiny_config(data={"remote": str(tmp_path / "remote")}), 1,
                             {"curated": tmp_path / "curated"}, near=tmp_path)
    pointer = stored["artifacts"]["curated"]
    assert pointer["path"] == "curated.parquet" and pointer["size"] == len(b"rows of iteration 1")
    got = fetch_stored(pointer, tmp_path / "back", stored["remote"])
    assert got.read_bytes() == b"rows of iteration 1"
